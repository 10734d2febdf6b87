"""The smoke preset end to end through `dvc repro`, in a copy of the repository (a few minutes).

One pipeline run (the `smoke_repo` fixture of tests/conftest.py, shared with the browser test)
serves the tests below, which run in file order: the first repro builds everything, the second
has nothing to do, then an edited notebook re-runs only what follows it.
"""

import json
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml
from smoke_pipeline import dvc, ran, tail

from gravrev.claims import validate_report
from gravrev.cli import STAGES

pytestmark = pytest.mark.pipeline

CHAPTERS = STAGES  # every stage renders one chapter


def lock_md5(root: Path, stage: str, out: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (entry,) = [o for o in lock["stages"][stage]["outs"] if o["path"] == out]
    return entry["md5"]


@pytest.fixture(scope="module")
def repo(smoke_repo) -> Path:
    """The shared smoke copy (tests/conftest.py), already built by its first repro."""
    return smoke_repo


@pytest.fixture(scope="module")
def first_repro(smoke_repro) -> subprocess.CompletedProcess:
    return smoke_repro


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
    assert proc.returncode == 0, tail(proc)
    assert ran(proc) == set(), tail(proc)
    status = dvc(repo, "status")
    assert status.returncode == 0, tail(status)
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
    assert status.returncode == 0, tail(status)
    changed = set(json.loads(status.stdout))
    assert "nulls" in changed
    assert not changed & {"history", "finetune", "vrev", "blocking"}, changed

    proc = dvc(repo, "repro")
    assert proc.returncode == 0, tail(proc)
    # The book shows the edited chapter; claims re-runs only if nulls.json changed.
    assert {"nulls", "book"} <= ran(proc), tail(proc)
    assert not ran(proc) & {"history", "finetune", "vrev", "blocking"}, tail(proc)
    for out, md5 in before.items():
        stage = out.split("/")[1]
        assert lock_md5(repo, stage, out) == md5, out
    executed = nbformat.read(repo / "book" / "executed" / "04_nulls.ipynb", as_version=4)
    assert executed.cells[-1].source == "A note added by the pipeline test."
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
