"""One executor for independent runs: in-process, a local process pool, or a ray cluster.

Every run is a pure function of its task, and every worker runs with the numeric pins and one
torch thread, so the results are bitwise the same whichever executor and however many workers.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any, TypeVar

from tqdm import tqdm

from gravrev.config.experiment import ExecutorConfig
from gravrev.runtime.numerics import NUMERIC_PINS, SWITCH, apply_pins, check_pins, pins_enabled

T = TypeVar("T")
R = TypeVar("R")

KINDS = ("local", "ray")
LOCALHOST = "127.0.0.1"  # the node address of a local Ray cluster
# Ray's single-machine mode. Without it ray.init turns a node address of 127.0.0.1 into the
# machine's reachable one (ray/_private/services.py, resolve_ip_for_localhost), and the GCS, the
# raylet, the workers and the runtime-env agent then listen on every interface (or on that
# address). With it off, get_node_ip_address keeps the loopback address and all of them listen
# on 127.0.0.1 only. Ray reads it once, at import (ray/_private/ray_constants.py).
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 10.0  # an address that neither resolves nor answers in this time is refused
# Seconds spent inside tasks, summed over every run_all call of this process (the pipeline
# profile's "training runs" share: what is not in tasks is start-up, serial work or idle cores).
_TASK_SECONDS = [0.0]


def task_seconds() -> float:
    """Seconds this process's run_all calls spent inside their tasks, summed over workers."""
    return _TASK_SECONDS[0]


def _timed(fn: Callable[[T], R], task: T) -> tuple[R, float]:
    start = time.perf_counter()
    result = fn(task)
    return result, time.perf_counter() - start


def _keep(timed: tuple[R, float]) -> R:
    _TASK_SECONDS[0] += timed[1]
    return timed[0]


def run_all(fn: Callable[[T], R], tasks: Sequence[T], cfg: ExecutorConfig, desc: str) -> list[R]:
    """fn(task) for every task, in task order; fn must be a picklable top-level function.

    A task that raises stops the call: its exception propagates with a note naming the task.
    """
    if cfg.kind not in KINDS:
        raise ValueError(f"executor.kind: must be one of {KINDS}, got {cfg.kind!r}")
    if cfg.workers < 0:
        raise ValueError(f"executor.workers: must be >= 0, got {cfg.workers}")
    tasks = list(tasks)
    with tqdm(total=len(tasks), desc=desc) as bar:
        if cfg.kind == "ray":
            return _run_ray(fn, tasks, cfg, bar)
        if min(n_workers(cfg), len(tasks)) <= 1:
            return _run_in_process(fn, tasks, bar)
        return _run_pool(fn, tasks, min(n_workers(cfg), len(tasks)), bar)


def n_workers(cfg: ExecutorConfig) -> int:
    """The number of workers asked for, with 0 meaning one per CPU."""
    return cfg.workers if cfg.workers > 0 else os.cpu_count() or 1


def longest_first(tasks: Sequence[Any]) -> list[int]:
    """Task indices by decreasing `cost` (ties in task order): the long runs start first, so
    the last ones do not leave a worker idle; results still come back in task order."""
    return sorted(range(len(tasks)), key=lambda i: -getattr(tasks[i], "cost", 0))


def _name_task(exc: BaseException, index: int, task: Any) -> None:
    label = getattr(task, "label", None) or repr(task)[:200]
    exc.add_note(f"in task {index}: {label}")


@contextmanager
def _one_thread():
    # In-process runs must match the one-thread workers, whatever the caller had set.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_in_process(fn: Callable[[T], R], tasks: list[T], bar: tqdm) -> list[R]:
    check_pins()
    results = []
    with _one_thread():
        for i, task in enumerate(tasks):
            try:
                results.append(_keep(_timed(fn, task)))
            except Exception as exc:
                _name_task(exc, i, task)
                raise
            bar.update()
    return results


def _init_worker(pinned: bool) -> None:
    """Each pool worker: the parent's choice of pins, one torch thread."""
    apply_pins(pinned)
    import torch

    torch.set_num_threads(1)
    check_pins()


def _run_pool(fn: Callable[[T], R], tasks: list[T], workers: int, bar: tqdm) -> list[R]:
    results: list[Any] = [None] * len(tasks)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(pins_enabled(),),
    ) as pool:
        futures = {pool.submit(_timed, fn, tasks[i]): i for i in longest_first(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = _keep(future.result())
            except Exception as exc:
                _stop(pool, futures)
                _name_task(exc, i, tasks[i])
                raise
            bar.update()
    return results


def _stop(pool: ProcessPoolExecutor, futures: dict) -> None:
    """Cancel the tasks not started, end and join the workers: once this returns, no worker
    writes into the caller's temporary folder, which the caller removes next."""
    for future in futures:
        future.cancel()
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for proc in workers:
        proc.terminate()
    for proc in workers:
        proc.join()
    wait(futures)


def _resolve(host: str, port: int, timeout: float) -> str | None:
    """getaddrinfo has no timeout of its own: run it in a thread and give up after `timeout`."""
    found: list = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            found.append(e)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        return f"{host} did not resolve within {timeout:g} s"
    if isinstance(found[0], OSError):
        return f"{host} does not resolve ({found[0]})"
    return None


def address_problem(address: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a Ray address cannot be used (no host:port, no such host, no answer), or None."""
    if address in ("auto", "local"):
        return None  # Ray's own keywords: an existing cluster on this machine, or a new one
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{address!r} is not host:port (or ray://host:port, auto, local)"
    host = host.strip("[]")
    problem = _resolve(host, int(port), timeout)
    if problem:
        return problem
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as e:
        return f"nothing answers at {hostport} within {timeout:g} s ({e})"


def _ray_call(fn: Callable[[T], R], task: T) -> tuple[R, float]:
    """One task in a ray worker, under the pins that its runtime env carries; with its seconds."""
    apply_pins(os.environ.get(SWITCH, "1") != "0")
    import torch

    torch.set_num_threads(1)
    check_pins()
    return _timed(fn, task)


def _ray_env(local: bool) -> dict[str, str]:
    env = {**NUMERIC_PINS, SWITCH: "1"} if pins_enabled() else {SWITCH: "0"}
    if local:
        # Workers of a local cluster import the driver's code (a worktree, a test module).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray's single-machine mode for the block: a cluster started in it listens on 127.0.0.1
    only (its processes inherit the variable; the driver's ray may be imported already)."""
    old = os.environ.get(SINGLE_MACHINE)
    os.environ[SINGLE_MACHINE] = "0"
    from ray._private import ray_constants

    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if old is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = old


def _init_ray(cfg: ExecutorConfig) -> None:
    """Connect to cfg.address (checked first: it must answer), or start a local cluster (no
    address, or Ray's `local`) that listens on 127.0.0.1 only, without the dashboard."""
    import ray

    if cfg.address not in (None, "local"):
        if problem := address_problem(cfg.address):
            raise ConnectionError(f"executor.address: {problem}")
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False)
        return
    with _loopback_only():
        ray.init(address=cfg.address, num_cpus=n_workers(cfg), _node_ip_address=LOCALHOST,
                 dashboard_host=LOCALHOST, include_dashboard=False, log_to_driver=False)


def _run_ray(fn: Callable[[T], R], tasks: list[T], cfg: ExecutorConfig, bar: tqdm) -> list[R]:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "executor.kind: ray needs the ray package (pip install 'gravrev[ray]')"
        ) from exc
    started = not ray.is_initialized()
    if started:
        _init_ray(cfg)
    try:
        remote = ray.remote(num_cpus=1)(_ray_call).options(
            runtime_env={"env_vars": _ray_env(cfg.address in (None, "local"))}
        )
        index = {remote.remote(fn, tasks[i]): i for i in longest_first(tasks)}
        results: list[Any] = [None] * len(tasks)
        pending = list(index)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                results[i] = _keep(ray.get(done[0]))
            except Exception as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                _name_task(exc, i, tasks[i])
                raise
            bar.update()
        return results
    finally:
        if started:
            ray.shutdown()
