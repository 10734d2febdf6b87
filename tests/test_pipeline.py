"""The smoke preset end to end through `dvc repro`, in a copy of the repository (a few minutes).

One pipeline run (the `smoke_repo` fixture of tests/conftest.py, shared with the browser test)
serves the tests below, which run in file order: the first repro builds everything, the second
has nothing to do but validate, an edited chapter or figure re-runs no training, a bad value
changes no file, and stage history trains the same bytes whatever CPU path the shell asks for.
"""

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from smoke_pipeline import digest_tree, dvc, ran, run, tail

from gravrev.claims.schema import validate_report
from gravrev.cli import NOTEBOOKS, STAGES

pytestmark = pytest.mark.pipeline

TRAINING = {"history", "finetune", "blocking", "mediation", "sweep"}


def lock_md5(root: Path, stage: str, out: str) -> str:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (entry,) = [o for o in lock["stages"][stage]["outs"] if o["path"] == out]
    return entry["md5"]


@pytest.fixture(scope="module")
def repo(smoke_repo) -> Path:
    """The shared smoke copy (tests/conftest.py), already built by its first repro."""
    return smoke_repo


def test_first_repro_builds_the_book_and_valid_claims(repo, smoke_repro):
    assert ran(smoke_repro) >= {"config", *STAGES, *(f"render_{s}" for s in STAGES), "book"}
    html = repo / "book" / "_build" / "html"
    assert (html / "index.html").is_file()
    pages = ("claims", "reproduce", "own_model", "scale", *(f"executed/{c}" for c in NOTEBOOKS))
    for page in pages:
        assert (html / f"{page}.html").is_file(), page
    report = json.loads((repo / "data" / "metrics" / "claims.json").read_text())
    validate_report(report)
    assert report["preset"] == "smoke"
    assert all(c["why"] and c["per_history"] for c in report["claims"])
    for name in ("history", "finetune", "alignment", "nulls", "blocking", "mediation", "sweep"):
        metrics = (repo / "data" / "metrics" / f"{name}.json").read_text()
        assert "seconds" not in metrics, f"{name}.json holds wall-clock figures"


def test_second_repro_only_validates(repo, smoke_repro):
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, tail(proc)
    assert ran(proc) <= {"config"}, tail(proc)  # validation always runs; nothing else does


def test_editing_a_chapter_reruns_only_its_rendering(repo, smoke_repro):
    before = {s: lock_md5(repo, s, f"data/{s}") for s in ("history", "finetune", "vrev")}
    path = repo / "notebooks" / "04_nulls.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A note added by the pipeline test."))
    nbformat.write(nb, path)
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, tail(proc)
    assert {"render_nulls", "book"} <= ran(proc), tail(proc)
    assert not ran(proc) & {*STAGES}, tail(proc)
    for stage, md5 in before.items():
        assert lock_md5(repo, stage, f"data/{stage}") == md5, stage
    executed = nbformat.read(repo / "book" / "executed" / "04_nulls.ipynb", as_version=4)
    assert executed.cells[-1].source == "A note added by the pipeline test."


def test_editing_figure_code_reruns_no_training(repo, smoke_repro):
    plots = repo / "gravrev" / "plots.py"
    original = plots.read_text()
    plots.write_text(original + "\n# an edit to the figures\n")
    try:
        proc = dvc(repo, "repro", "--dry")
        assert proc.returncode == 0, tail(proc)
        assert not ran(proc) & {*STAGES}, tail(proc)
        assert ran(proc) & {f"render_{s}" for s in STAGES}, tail(proc)
    finally:
        plots.write_text(original)


@pytest.mark.parametrize(
    ("override", "field"),
    [("finetune:\n  steps: -5\n", "finetune.steps"), ("preset: huge\n", "preset")],
)
def test_a_bad_value_after_a_run_fails_fast_and_changes_no_file(repo, smoke_repro, override,
                                                                 field):
    params = repo / "params.yaml"
    original = params.read_text()
    data = yaml.safe_load(original)
    data.update(yaml.safe_load(override))
    params.write_text(yaml.safe_dump(data))
    before = digest_tree(repo / "data")
    try:
        proc = dvc(repo, "repro")
        assert proc.returncode != 0
        assert field in tail(proc), tail(proc)
        assert not ran(proc) - {"config"}, tail(proc)
        assert digest_tree(repo / "data") == before
    finally:
        params.write_text(original)


def test_stage_history_trains_the_same_bytes_whatever_the_shell_asks(repo, smoke_repro, tmp_path):
    """The numeric pins win over the shell: another ATEN/MKL path, the same checkpoints."""
    other = tmp_path / "repo"
    for rel in ("params.yaml",):
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        (other / rel).write_text((repo / rel).read_text())
    env = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "ALL"}
    proc = run(other, "gravrev", "run", "history", env=env)
    assert proc.returncode == 0, tail(proc)
    for name in ("pretrained", "h0/helpful", "h0/safe", "h1/safe"):
        a = (repo / "data" / "history" / name / "model.safetensors").read_bytes()
        b = (other / "data" / "history" / name / "model.safetensors").read_bytes()
        assert a == b, name
