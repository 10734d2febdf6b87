"""The smoke preset end to end through `dvc repro`, in a copy of the repository (a few minutes).

One pipeline run (the `smoke_repo` fixture of tests/conftest.py, shared with the browser test)
serves the tests below, which run in file order: the first repro builds everything, the second
has nothing to do, an edited chapter or figure re-runs no training, a bad value
changes no file, and stage history trains the same bytes whatever CPU path the shell asks for.
"""

import json
from pathlib import Path

import nbformat
import pandas as pd
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
    assert all(c["per_history"] and "why" not in c for c in report["claims"])
    for name in ("history", "finetune", "alignment", "nulls", "blocking", "mediation", "sweep"):
        metrics = (repo / "data" / "metrics" / f"{name}.json").read_text()
        assert "seconds" not in metrics, f"{name}.json holds wall-clock figures"


def test_second_repro_runs_nothing(repo, smoke_repro):
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, tail(proc)
    assert not ran(proc), tail(proc)  # nothing changed: nothing runs, validation included


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


def _edited(files: list[Path], addition: str):
    """Append `addition` to each file; return a function that restores them."""
    originals = {f: f.read_text() for f in files}
    for f in files:
        f.write_text(originals[f] + addition)
    return lambda: [f.write_text(text) for f, text in originals.items()]


def _steps(prefix: str) -> set[str]:
    """The dvc.yaml steps whose command starts with `prefix`."""
    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())
    return {n for n, s in stages["stages"].items() if s["cmd"].startswith(prefix)}


def test_editing_every_words_and_figures_module_reruns_no_training(repo, smoke_repro):
    """Every findings/wording function and every figure lives where no computation reads it."""
    words = sorted((repo / "gravrev" / "report").glob("*.py"))
    words += sorted((repo / "gravrev" / "stages").glob("*/report.py"))
    words += sorted((repo / "gravrev" / "stages").glob("*/figures.py"))
    assert len(words) >= 9, words
    restore = _edited(words, "\n\ndef _an_edited_sentence() -> str:\n    return 'edited'\n")
    try:
        proc = dvc(repo, "repro", "--dry")
        assert proc.returncode == 0, tail(proc)
        computed = ran(proc) & (_steps("gravrev run ") | _steps("gravrev metrics "))
        assert not computed, f"editing words or figures re-runs {sorted(computed)}"
        assert ran(proc) & _steps("gravrev notebook "), tail(proc)
    finally:
        restore()


def test_a_new_measurement_reruns_only_metrics_claims_and_rendering(repo, smoke_repro):
    """A measure added to a training stage's metrics module retrains nothing."""
    metrics = repo / "gravrev" / "stages" / "finetune" / "metrics.py"
    restore = _edited([metrics], "\n\ndef new_measure(x: float) -> float:\n    return 2 * x\n")
    try:
        proc = dvc(repo, "repro", "--dry")
        assert proc.returncode == 0, tail(proc)
        assert "finetune_metrics" in ran(proc), tail(proc)
        trained = ran(proc) & _steps("gravrev run ") & TRAINING
        assert not trained, f"a new measurement re-runs training steps {sorted(trained)}"
        others = ran(proc) - _steps("gravrev metrics ") - _steps("gravrev notebook ") - {
            "claims", "vrev", "nulls", "book"}
        assert not others, f"a new measurement re-runs {sorted(others)}"
    finally:
        restore()


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


def test_a_chapter_runs_top_to_bottom_from_the_notebooks_folder(repo, smoke_repro, tmp_path):
    """As a researcher opens it in Jupyter: cwd notebooks/, no papermill parameters, no render."""
    from smoke_pipeline import BIN

    out = tmp_path / "04_nulls.ipynb"
    proc = run(repo / "notebooks", str(BIN / "papermill"), "04_nulls.ipynb", str(out),
               "--cwd", str(repo / "notebooks"), "-k", "python3", env={"GRAVREV_RENDERING": ""})
    assert proc.returncode == 0, tail(proc)
    nb = nbformat.read(out, as_version=4)
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "image/png" in o.get("data", {})]
    assert shown, "figures display when the chapter is opened interactively"


def probe(repo: Path, out: Path, *options: str):
    """tools/history_probe.py on the smoke run, in the venv."""
    from smoke_pipeline import BIN

    tool = Path(__file__).resolve().parents[1] / "tools" / "history_probe.py"
    return run(repo, str(BIN / "python"), str(tool), "--run", str(repo), "--out", str(out),
               *options)


def test_the_history_probe_judges_a_safety_variant_and_leaves_the_run_alone(repo, smoke_repro,
                                                                            tmp_path):
    """tools/history_probe.py: S from each searched θ_H, fine-tuned, judged by the rule."""
    before = digest_tree(repo / "data")
    proc = probe(repo, tmp_path, "--steps", "10,20", "--lrs", "1e-3", "--ft-lrs", "5e-4")
    assert proc.returncode == 0, tail(proc)
    assert digest_tree(repo / "data") == before
    shapes = pd.read_csv(tmp_path / "shapes.csv")
    table = pd.read_csv(tmp_path / "candidates.csv")
    assert set(shapes["variant"]) == set(table["variant"]) == {
        "S10_lr0.001_replay0.5", "S20_lr0.001_replay0.5"}
    assert len(shapes) == 2 * 4  # one searched history x the four shape checks
    assert sorted(table["T"].unique()) == [5, 10]  # the smoke regime's horizons
    assert {"meets_rule", "no_shock", "learned", "room"} <= set(table.columns)
    assert "Candidates meeting the regime rule" in proc.stdout
    # the run's own safety phase (smoke: 20 steps at 1e-3), retrained from θ_H, is θ_S itself
    own = tmp_path / "S20_lr0.001_replay0.5" / "h0" / "safe" / "model.safetensors"
    assert own.read_bytes() == (repo / "data/history/h0/safe/model.safetensors").read_bytes()


def test_the_history_probe_refuses_a_bad_variant_before_any_work(repo, smoke_repro, tmp_path):
    proc = probe(repo, tmp_path / "probe", "--replays", "1.5")
    assert proc.returncode != 0
    assert "--replays" in proc.stderr and "safe_replay" in proc.stderr, tail(proc)
    assert not (tmp_path / "probe").exists()
