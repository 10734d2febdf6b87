"""The numeric pins make training bitwise identical whatever ISA the shell asks torch for."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gravrev.runtime.numerics import HOST_ENV, NUMERIC_PINS, SWITCH, apply_pins

pytestmark = pytest.mark.slow  # trains in subprocesses

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

TRAIN = """
import gravrev
import torch
from gravrev.runtime.numerics import check_pins
from smoke_training import train_smoke_and_hash
torch.set_num_threads(1)
check_pins()
print(train_smoke_and_hash(seed=0, steps=30), torch.backends.cpu.get_cpu_capability())
"""

# Torch runs an operation before gravrev can pin anything.
TORCH_FIRST = """
import torch
torch.ones(3).exp()
import gravrev
from gravrev.runtime.numerics import check_pins
check_pins()
"""

# One shell asks for AVX-512 and MKL's automatic dispatch, the other for no vector ISA at all.
SHELLS = ({"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO"}, {"ATEN_CPU_CAPABILITY": "default"})


def shell_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any pin or pin record, plus `overrides`."""
    env = {
        k: v for k, v in os.environ.items() if k not in NUMERIC_PINS and k not in (SWITCH, HOST_ENV)
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    return env | overrides


def run_scripts(script: str, envs: list[dict[str, str]]) -> list[subprocess.CompletedProcess]:
    """Run `script` once per environment, all at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    return [
        subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read(), p.stderr.read())
        for p in procs
    ]


def host_has_avx512() -> bool:
    """Whether this CPU has AVX-512F. Unpinned, torch believes a shell asking for AVX-512 even
    where the CPU lacks it, and dies of an illegal instruction (SIGILL) at its first kernel."""
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@pytest.fixture(scope="module")
def trained() -> dict[str, list[tuple[str, str]]]:
    """(weights digest, capability) per shell, with the pins on and (where the CPU can run what
    the shell asks) off, each from its own process."""
    switches = ("1", "0") if host_has_avx512() else ("1",)
    envs = [shell_env(**shell, **{SWITCH: switch}) for switch in switches for shell in SHELLS]
    done = run_scripts(TRAIN, envs)
    for d in done:
        assert d.returncode == 0, f"exit {d.returncode}: {d.stderr}"
    out = [tuple(d.stdout.split()) for d in done]
    return {"on": out[: len(SHELLS)], "off": out[len(SHELLS) :]}


def test_pinned_runs_give_identical_weights_whatever_the_shell_asks(trained):
    (hash_a, cap_a), (hash_b, cap_b) = trained["on"]
    assert cap_a == cap_b == "AVX2"
    assert hash_a == hash_b


def test_unpinned_runs_differ_between_avx512_and_default(trained):
    if not trained["off"]:
        pytest.skip("this CPU has no AVX-512: unpinned, a shell asking for it cannot run at all")
    (hash_a, cap_a), (hash_b, cap_b) = trained["off"]
    if cap_a != "AVX512":
        pytest.skip(f"this host runs torch at {cap_a}, not AVX512: the two paths cannot differ")
    assert cap_b == "DEFAULT"
    assert hash_a != hash_b


def test_apply_pins_overrides_the_shell_and_switching_off_restores_it(monkeypatch):
    for key in NUMERIC_PINS:
        monkeypatch.setenv(key, "from-the-shell")
    monkeypatch.delenv(HOST_ENV, raising=False)
    monkeypatch.setenv(SWITCH, "unset")
    apply_pins(True)
    assert {k: os.environ[k] for k in NUMERIC_PINS} == NUMERIC_PINS
    assert os.environ[SWITCH] == "1"
    apply_pins(True)  # twice must still remember the shell's values, not the pins
    apply_pins(False)
    assert all(os.environ[k] == "from-the-shell" for k in NUMERIC_PINS)
    assert os.environ[SWITCH] == "0"
    assert HOST_ENV not in os.environ


def test_switching_off_removes_pins_the_shell_had_not_set(monkeypatch):
    for key in NUMERIC_PINS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(HOST_ENV, raising=False)
    monkeypatch.setenv(SWITCH, "unset")
    apply_pins(True)
    apply_pins(False)
    assert not any(k in os.environ for k in NUMERIC_PINS)


def test_check_pins_raises_when_torch_ran_before_gravrev():
    env = shell_env(ATEN_CPU_CAPABILITY="avx512", **{SWITCH: "1"})
    (done,) = run_scripts(TORCH_FIRST, [env])
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr and "Import gravrev before torch" in done.stderr
