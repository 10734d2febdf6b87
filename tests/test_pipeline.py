"""The smoke preset end to end through `dvc repro`, in a copy of the repository (a few minutes).

One pipeline run is shared by the tests below, which run in file order: the first repro builds
everything, the second has nothing to do, then an edited notebook re-runs only what follows it.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from gravrev.claims import validate_report
from gravrev.cli import STAGES

pytestmark = pytest.mark.pipeline

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's dvc, gravrev, papermill and jupyter-book
CHAPTERS = STAGES  # every stage renders one chapter


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # The smoke models are tiny: one thread each keeps the run fast even when something
    # else (another test run, another repro) competes for the cores.
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(cwd: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run(cwd, str(BIN / "dvc"), *args)


def _tail(proc: subprocess.CompletedProcess, n: int = 6000) -> str:
    return (proc.stdout + proc.stderr)[-n:]


def lock_md5(root: Path, stage: str, out: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (entry,) = [o for o in lock["stages"][stage]["outs"] if o["path"] == out]
    return entry["md5"]


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    """The stages a `dvc repro` actually ran."""
    return set(re.findall(r"Running stage '([\w-]+)'", proc.stdout + proc.stderr))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A committed copy of the working tree (tracked and untracked-not-ignored), preset smoke."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():  # a tracked file may be deleted in the working tree
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    params = root / "params.yaml"
    text, n = re.subn(r"(?m)^preset:.*$", "preset: smoke", params.read_text())
    assert n == 1, "params.yaml has no top-level preset line"
    params.write_text(text)
    git = ["git", "-c", "user.name=gravrev tests", "-c", "user.email=tests@gravrev.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "smoke copy"]):
        proc = run(root, *git, *args)
        assert proc.returncode == 0, _tail(proc)
    return root


@pytest.fixture(scope="module")
def first_repro(repo) -> subprocess.CompletedProcess:
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, f"dvc repro failed:\n{_tail(proc)}"
    return proc


def test_first_repro_builds_the_book_and_valid_claims(repo, first_repro):
    assert ran(first_repro) >= {
        "history",
        "finetune",
        "vrev",
        "nulls",
        "blocking",
        "claims",
        "book",
    }
    html = repo / "book" / "_build" / "html"
    assert (html / "index.html").is_file()
    for page in ("claims", "reproduce", "own_model", *(f"executed/{c}" for c in CHAPTERS)):
        assert (html / f"{page}.html").is_file(), page
    report = json.loads((repo / "data" / "metrics" / "claims.json").read_text())
    validate_report(report)
    assert report["preset"] == "smoke"
    for stage in ("history", "finetune", "alignment", "nulls", "blocking"):
        assert (repo / "data" / "metrics" / f"{stage}.json").is_file(), stage


def test_second_repro_has_nothing_to_do(repo, first_repro):
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, _tail(proc)
    assert ran(proc) == set(), _tail(proc)
    status = dvc(repo, "status")
    assert status.returncode == 0, _tail(status)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def test_editing_a_notebook_reruns_that_stage_and_nothing_before(repo, first_repro):
    before = {
        out: lock_md5(repo, stage, out)
        for stage, out in [
            ("history", "data/history"),
            ("finetune", "data/finetune"),
            ("vrev", "data/vrev"),
        ]
    }
    path = repo / "notebooks" / "04_nulls.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A note added by the pipeline test."))
    nbformat.write(nb, path)

    status = dvc(repo, "status", "--json")
    assert status.returncode == 0, _tail(status)
    changed = set(json.loads(status.stdout))
    assert "nulls" in changed
    assert not changed & {"history", "finetune", "vrev", "blocking"}, changed

    proc = dvc(repo, "repro")
    assert proc.returncode == 0, _tail(proc)
    # The book shows the edited chapter; claims re-runs only if nulls.json changed.
    assert {"nulls", "book"} <= ran(proc), _tail(proc)
    assert not ran(proc) & {"history", "finetune", "vrev", "blocking"}, _tail(proc)
    for out, md5 in before.items():
        stage = out.split("/")[1]
        assert lock_md5(repo, stage, out) == md5, out
    executed = nbformat.read(repo / "book" / "executed" / "04_nulls.ipynb", as_version=4)
    assert executed.cells[-1].source == "A note added by the pipeline test."
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
