"""Nothing lost, nothing leaked, one writer: a stage step that fails leaves data/ as it was.

A fake stage, standing in for each step, writes what the step writes (its folder through
atomic_dir, its metrics) and then fails; run_stage must put every byte of data/ back. What
another stage writes meanwhile (the lock is per stage) is never rolled back or removed. Killed
runs are undone and their leftovers removed at the next start; a second writer is refused while
the stage's lock is held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from smoke_pipeline import digest_tree

from gravrev import cli
from gravrev.config.experiment import ExecutorConfig
from gravrev.runtime.executor import run_all
from gravrev.store.atomic import atomic_dir, read_json, write_json
from gravrev.store.guard import StageBusy, stage_lock
from gravrev.store.paths import Paths

REPO = Path(__file__).resolve().parents[1]
METRICS_STEPS = [name for name in cli.STAGES if cli.has_metrics_step(name)]
STEPS = [(name, "run") for name in cli.STAGES] + [(name, "metrics") for name in METRICS_STEPS]


class Injected(RuntimeError):
    """The failure a test injects into a step."""


def fake_step(name: str, fail: str | None, step: str = "run", payload: str = "new",
              meanwhile=lambda paths: None) -> types.ModuleType:
    """A stage module whose run/measure writes its step's outs, then fails as `fail` says:
    'before' the swap of its folder, 'after' it (the blocking case), or not at all.
    `meanwhile` stands for another stage writing while this step runs."""

    def run(cfg, paths: Paths) -> None:
        folder, *files = cli.step_outs(name, paths.root, step)
        meanwhile(paths)
        with atomic_dir(folder) as out:
            (out / "final.csv").write_text(f"{payload}\n")
            (out / "model.safetensors").write_bytes(payload.encode() * 100)
            if fail == "before":
                raise Injected(f"{name} failed mid-run")
        for file in files:
            write_json(file, {"value": payload})
        if fail == "after":
            raise Injected(f"{name} failed after writing")
        if fail == "interrupt":
            raise KeyboardInterrupt

    module = types.ModuleType(f"fake_{name}")
    module.run = module.measure = run
    return module


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A working copy after a good run: every stage's folder and metrics in data/."""
    root = tmp_path / "repo"
    data = root / "data"
    root.mkdir()
    (root / "params.yaml").write_text("preset: smoke\n")
    for name in [*cli.STAGES, *(f"measures/{n}" for n in METRICS_STEPS)]:
        (data / name).mkdir(parents=True)
        (data / name / "final.csv").write_text(f"good {name}\n")
        (data / name / "sub").mkdir()
        (data / name / "sub" / "weights.bin").write_bytes(b"good" * 50)
    for name in [*cli.STAGES, "alignment"]:
        write_json(Paths(root).metrics_file(name), {"value": f"good {name}"})
    (data / "config.ok").write_text("valid\n")
    monkeypatch.chdir(root)
    return root


def inject(monkeypatch, module: types.ModuleType, step: str) -> None:
    fake = f"fake_stage_{step}"
    monkeypatch.setitem(sys.modules, fake, module)
    monkeypatch.setattr(cli, "step_module", lambda name, s: fake)


def snapshot(root: Path) -> dict[str, str]:
    """Every byte of data/ but the timings (never compared) and the stage locks (ignored)."""
    return {k: v for k, v in digest_tree(root / "data").items()
            if not k.startswith("timings/") and not k.endswith(".lock")}


@pytest.mark.parametrize("fail", ["before", "after", "interrupt"])
@pytest.mark.parametrize(("name", "step"), STEPS, ids=[f"{n}-{s}" for n, s in STEPS])
def test_a_failing_step_leaves_data_as_it_was(name, step, fail, repo, monkeypatch):
    inject(monkeypatch, fake_step(name, fail, step), step)
    before = snapshot(repo)
    with pytest.raises(KeyboardInterrupt if fail == "interrupt" else Injected):
        cli.run_stage(name, repo, repo / "params.yaml", step)
    assert snapshot(repo) == before
    assert sorted(p.name for p in (repo / "data").glob(".*")) == [f".{name}.lock"]


def test_a_step_that_succeeds_swaps_in_and_leaves_no_leftovers(repo, monkeypatch):
    inject(monkeypatch, fake_step("vrev", None), "run")
    cli.run_stage("vrev", repo, repo / "params.yaml")
    data = repo / "data"
    assert (data / "vrev" / "final.csv").read_text() == "new\n"
    assert not (data / "vrev" / "sub").exists()  # the old folder is replaced, not merged
    assert read_json(data / "metrics" / "alignment.json") == {"value": "new"}
    assert (data / "finetune" / "final.csv").read_text() == "good finetune\n"
    assert sorted(p.name for p in data.glob(".*")) == [".vrev.lock"]
    assert not list((data / "metrics").glob(".*"))


def test_each_step_declares_the_metrics_file_it_writes():
    files = {(n, s): [p.name for p in cli.step_outs(n, Path("r"), s)[1:]] for n, s in STEPS}
    assert files == {**{(n, "run"): [] for n in METRICS_STEPS},
                     **{(n, "metrics"): [f"{n}.json"] for n in METRICS_STEPS},
                     ("vrev", "run"): ["alignment.json"], ("nulls", "run"): ["nulls.json"],
                     ("claims", "run"): ["claims.json"]}


@pytest.mark.parametrize("fail", ["before", "after"])
def test_a_failing_step_keeps_what_another_stage_wrote_meanwhile(fail, repo, monkeypatch):
    """Only the step's own outs go back: the other stage's metrics and temporaries stay."""
    data = repo / "data"

    def other_stage(paths: Paths) -> None:
        write_json(paths.metrics_file("claims"), {"value": "claims meanwhile"})
        write_json(paths.metrics_file("brand_new"), {"value": "new meanwhile"})
        (paths.metrics / ".claims.q7.tmp.json").write_text("{")  # claims writing right now
        (data / "measures" / ".finetune.r8.tmp").mkdir()

    inject(monkeypatch, fake_step("history", fail, "metrics", meanwhile=other_stage), "metrics")
    before = snapshot(repo)
    with pytest.raises(Injected):
        cli.run_stage("history", repo, repo / "params.yaml", "metrics")
    after = snapshot(repo)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"metrics/claims.json", "metrics/brand_new.json",
                       "metrics/.claims.q7.tmp.json"}  # (an empty folder has no digest)
    assert read_json(data / "metrics" / "claims.json") == {"value": "claims meanwhile"}
    assert (data / "measures" / ".finetune.r8.tmp").is_dir()


def test_a_step_removes_its_own_stale_temporaries_at_start(repo, monkeypatch):
    data, metrics = repo / "data", repo / "data" / "metrics"
    (data / ".history.k2j3h4g5").mkdir()  # atomic_dir's folder of a killed run (old name)
    (data / ".history.k2j3h4g5" / "model.safetensors").write_bytes(b"half")
    (data / ".history.abcd.tmp").mkdir()
    (data / "measures" / ".history.m1.tmp").mkdir()
    (metrics / ".history.x1.tmp.json").write_text("{")
    (data / ".finetune.zz.tmp").mkdir()  # other stages' (in flight): not history's to remove
    (data / "measures" / ".finetune.m2.tmp").mkdir()
    (metrics / ".finetune.y2.tmp.json").write_text("{")
    (metrics / ".alignment.z3.tmp.json").write_text("{")
    inject(monkeypatch, fake_step("history", None, "metrics"), "metrics")
    cli.run_stage("history", repo, repo / "params.yaml", "metrics")
    assert sorted(p.name for p in data.glob(".*")) == [".finetune.zz.tmp", ".history.lock"]
    assert [p.name for p in (data / "measures").glob(".*")] == [".finetune.m2.tmp"]
    assert sorted(p.name for p in metrics.glob(".*")) == [".alignment.z3.tmp.json",
                                                         ".finetune.y2.tmp.json"]


def test_a_second_writer_is_refused_while_the_lock_is_held(repo, monkeypatch):
    inject(monkeypatch, fake_step("history", None), "run")
    before = snapshot(repo)
    with stage_lock(repo / "data", "history"):
        with pytest.raises(StageBusy, match=r"\.history\.lock: another process \(pid \d+\)"):
            cli.run_stage("history", repo, repo / "params.yaml")
        assert snapshot(repo) == before
    cli.run_stage("history", repo, repo / "params.yaml")  # free again once released


def test_a_busy_stage_is_reported_plainly(repo, monkeypatch, capsys):
    inject(monkeypatch, fake_step("history", None), "run")
    with stage_lock(repo / "data", "history"):
        assert cli.main(["run", "history"]) == 3
    err = capsys.readouterr().err
    assert "StageBusy" in err and "Traceback" not in err


KILLED = """
import sys, time, types
from pathlib import Path
from gravrev import cli
from gravrev.store.atomic import atomic_dir, write_json

def measure(cfg, paths):
    write_json(paths.metrics_file("history"), {"value": "half"})
    with atomic_dir(paths.data / "measures" / "history") as out:
        (out / "model.safetensors").write_bytes(b"x" * 1000)
        Path(sys.argv[1]).write_text("writing")
        time.sleep(120)

module = types.ModuleType("killed")
module.measure = measure
sys.modules["killed"] = module
cli.step_module = lambda name, step: "killed"
cli.run_stage("history", Path.cwd(), Path("params.yaml"), "metrics")
"""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                          text=True).stdout


def test_sigkill_of_the_stage_then_a_rerun_leaves_a_clean_git_status(repo, tmp_path,
                                                                     monkeypatch):
    """The killed run's set-aside outputs come back, its temporaries go, git sees nothing."""
    (repo / ".gitignore").write_text((REPO / ".gitignore").read_text())
    (repo / "data" / ".gitignore").write_text(
        "".join(f"/{name}\n" for name in [*cli.STAGES, "measures"]))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "good run")
    before = snapshot(repo)
    started = tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(started)], cwd=repo,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the step never started"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list((repo / "data").glob(".history.*.backup")), "nothing was set aside"
    # the re-run fails (an injected failure): the killed run's outputs are back all the same
    inject(monkeypatch, fake_step("history", "after", "metrics"), "metrics")
    with pytest.raises(Injected):
        cli.run_stage("history", repo, repo / "params.yaml", "metrics")
    assert snapshot(repo) == before
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def slow_writer(task: tuple[str, int]) -> int:
    """Writes a file into its folder every 20 ms for two seconds (recreating the folder)."""
    folder, index = Path(task[0]), task[1]
    if index == 0:
        time.sleep(0.5)
        raise Injected("the first task fails while the others write")
    for i in range(100):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"w{index}_{i}.txt").write_text("x")
        time.sleep(0.02)
    return index


@pytest.mark.slow
def test_a_failing_pool_task_leaves_no_temporary_folder(tmp_path):
    target = tmp_path / "stage"
    with pytest.raises(Injected):
        with atomic_dir(target) as out:
            run_all(slow_writer, [(str(out), i) for i in range(3)],
                    ExecutorConfig("local", 3, None), "runs")
    time.sleep(2.5)  # a worker still running would have written (and recreated) by now
    assert list(tmp_path.iterdir()) == []


def test_hugging_face_is_offline_from_import_gravrev():
    code = ("import gravrev, huggingface_hub as h, huggingface_hub.constants as c, os; "
            "print(c.HF_HUB_OFFLINE, h.is_offline_mode(), os.environ['TRANSFORMERS_OFFLINE'])")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE",
                                                           "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ["True", "True", "1"]


def test_a_bad_ray_address_is_refused_with_its_reason():
    pytest.importorskip("ray")
    with pytest.raises(ConnectionError, match=r"executor\.address: no-such-host\.invalid"):
        run_all(abs, [1], ExecutorConfig("ray", 1, "no-such-host.invalid:6379"), "runs")


def test_ci_fails_when_the_browser_test_skipped(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from ci_browser_ran import problem
    finally:
        sys.path.pop(0)
    case = '<testcase classname="tests.test_browser" name="test_every_image_loads"{}</testcase>'
    ran, skipped = tmp_path / "ran.xml", tmp_path / "skipped.xml"
    ran.write_text(f"<testsuites><testsuite>{case.format('>')}</testsuite></testsuites>")
    skipped.write_text("<testsuites><testsuite>" + case.format(
        '><skipped message="no chromium"/>') + "</testsuite></testsuites>")
    assert problem(ran) is None
    assert "skipped in CI (no chromium)" in problem(skipped)
    empty = tmp_path / "empty.xml"
    empty.write_text("<testsuites><testsuite/></testsuites>")
    assert "no case of tests/test_browser.py ran" in problem(empty)
