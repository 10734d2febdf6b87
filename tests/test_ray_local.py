"""A local Ray cluster listens on 127.0.0.1 only; a remote address is checked before ray.init."""

from __future__ import annotations

import os

import pytest

from gravrev.config.experiment import ExecutorConfig
from gravrev.runtime.executor import SINGLE_MACHINE, run_all

ray = pytest.importorskip("ray")

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


class Stop(Exception):
    """Raised by the stand-in ray.init once it has seen its arguments."""


@pytest.fixture
def init_seen(monkeypatch) -> dict:
    """ray.init replaced: it records its arguments and the node address Ray would bind to."""
    from ray._private import services

    seen: dict = {}

    def fake_init(**kwargs) -> None:
        ip = kwargs.get("_node_ip_address")
        seen.update(kwargs, env=os.environ.get(SINGLE_MACHINE),
                    node_ip=services.resolve_ip_for_localhost(ip) if ip else None)
        raise Stop

    monkeypatch.delenv(SINGLE_MACHINE, raising=False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    return seen


def test_a_local_cluster_is_started_on_the_loopback_address_only(init_seen):
    with pytest.raises(Stop):
        run_all(abs, [1], ExecutorConfig("ray", 2, None), "runs")
    # ray.init resolves its node address as this: the address every process of the cluster
    # binds to (outside single-machine mode, the machine's reachable address instead)
    assert init_seen["node_ip"] == "127.0.0.1"
    assert init_seen["env"] == "0"  # the cluster's processes inherit single-machine mode
    assert init_seen["include_dashboard"] is False and init_seen["num_cpus"] == 2
    assert init_seen["dashboard_host"] == "127.0.0.1"
    assert SINGLE_MACHINE not in os.environ  # the driver's environment is put back
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER is True


def test_a_remote_address_that_does_not_answer_is_refused_before_init(init_seen):
    with pytest.raises(ConnectionError, match="executor.address: nothing answers at 127.0.0.1:9"):
        run_all(abs, [1], ExecutorConfig("ray", 2, "127.0.0.1:9"), "runs")
    assert not init_seen  # ray.init was never called


def listening(driver: int) -> list[tuple[str, str]]:
    """(process name, address) of every listening TCP socket of the driver and its
    descendants (the GCS, the raylet, the workers, the agents)."""
    import psutil

    root = psutil.Process(driver)
    out = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="tcp")
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(name, c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.mark.slow  # starts a Ray cluster (about 20 s)
def test_every_process_of_a_local_cluster_listens_on_loopback_only():
    (sockets,) = run_all(listening, [os.getpid()], ExecutorConfig("ray", 1, None), "sockets")
    names = {name for name, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the check saw the cluster
    assert {ip for _, ip in sockets} <= LOOPBACK, sockets
    assert SINGLE_MACHINE not in os.environ
