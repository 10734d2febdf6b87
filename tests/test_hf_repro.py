"""The `hf` preset end to end through `dvc repro`, on an exported smoke organism (a few minutes).

A briefly trained smoke organism is exported as hf inputs (gravrev.settings.hf.setting.
export_organism: two checkpoints, train and probe JSONL; the exact judge, no download), and a
copy of the repository runs every stage and the book on it with preset hf. The stages that do
not apply to given checkpoints (mediation, sweep) say so in their outputs, the claims and the
book instead of failing; the tables of a setting without a new task say what stands in for it.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from smoke_pipeline import copy_as_smoke_repo, dvc, ran, tail

from gravrev.cli import NOTEBOOKS, STAGES
from gravrev.config.load import resolve
from gravrev.organism.model import build_model, build_tokenizer, save_checkpoint
from gravrev.organism.world import World
from gravrev.settings.hf.setting import export_organism
from gravrev.stages.skipped import NOT_FOR_HF
from gravrev.store.paths import Paths
from gravrev.training.phases import train_phase
from gravrev.training.tasks import HistoryTask, history_run

pytestmark = pytest.mark.pipeline

WORLD = {"n_probes": 16, "n_eval": 16}  # the organism's and the hf run's (the same world)
# What the hf run overrides: few, short runs, all in the stage's own process (no pool start-up).
FAST = {
    "executor": {"workers": 1},
    "world": WORLD,
    "finetune": {"seeds": [1, 2], "steps": 6, "warmup": 2, "log_steps": [1, 3, 6]},
    "analysis": {"null_samples": 1000},
    "blocking": {"lambda_grid": [0.1, 1.0]},
    "hf": {"max_new_tokens": 16},
}


def _export_organism(root: Path) -> dict[str, Path]:
    """A smoke organism's θ_H and θ_S (briefly trained) and its data, as hf inputs."""
    cfg = resolve({"preset": "smoke", "world": WORLD,
                   "history": {"seeds": [0], "helpful": {"steps": 30, "batch_size": 16},
                               "safe": {"steps": 8, "batch_size": 16}, "safe_snapshots": 2},
                   "defenses": {"n_histories": 0}})
    paths, tok = Paths(root / "organism"), build_tokenizer(cfg.world)
    model = build_model(cfg.model, tok, 0)
    train_phase(model, World(cfg.world), tok, "pretrain",
                dataclasses.replace(cfg.history.pretrain, steps=30), 0, "cpu")
    save_checkpoint(model.eval(), tok, paths.pretrained)
    h = cfg.histories[0]
    folder = paths.checkpoint("safe", h).parent
    history_run(HistoryTask(cfg, h, 0, cfg.history.helpful, cfg.history.safe, paths.pretrained,
                            folder))
    return export_organism(folder, root / "export", cfg, n_train=200)


def _params(repo: Path, files: dict[str, Path]) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["preset"] = "hf"
    for section, values in FAST.items():
        params[section].update(values)
    params["hf"].update({k: str(v) for k, v in files.items()})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def hf_repo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("hf_repro")
    files = _export_organism(root)
    repo = copy_as_smoke_repo(root / "repo")
    _params(repo, files)
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, f"dvc repro of preset hf failed:\n{tail(proc)}"
    return repo, proc


def _metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "data" / "metrics" / f"{name}.json").read_text())


def test_every_stage_and_the_book_run(hf_repo):
    repo, proc = hf_repo
    renders = {f"render_{s}" for s in STAGES} | {"render_budget"}
    metrics_steps = {f"{s}_metrics" for s in ("history", "finetune", "blocking", "mediation",
                                             "sweep")}
    assert ran(proc) >= {"config", *STAGES, *metrics_steps, *renders, "book"}, tail(proc)
    html = repo / "book" / "_build" / "html"
    for page in ("claims", "own_model", "scale", *(f"executed/{c}" for c in NOTEBOOKS)):
        assert (html / f"{page}.html").is_file(), page
    assert json.loads((repo / "data" / "config.json").read_text())["preset"] == "hf"


def test_a_setting_without_a_new_task_says_what_stands_in(hf_repo):
    repo, _ = hf_repo
    log = pd.read_csv(repo / "data" / "finetune" / "log.csv")
    assert "rotate_accuracy" not in log and log["benign_accuracy"].notna().all()
    regime = _metrics(repo, "finetune")["regime"]
    assert regime["holds"] is None and "not checked" in regime["rule"], regime
    assert "this setting has no new task" in _page(repo, "executed/02_finetune")
    # claims.json holds measured fields only; the reasons are worded on the claims pages
    assert "this setting has no new task" in _text(repo, "executed/07_claims")
    assert "nan" not in json.dumps(_metrics(repo, "claims")).lower()


@pytest.mark.parametrize("stage", sorted(NOT_FOR_HF))
def test_a_stage_that_does_not_apply_says_why_everywhere(hf_repo, stage):
    repo, _ = hf_repo
    reason = _metrics(repo, stage)["skipped"]
    assert reason.startswith("preset hf: ") and reason == json.loads(
        (repo / "data" / stage / "skipped.json").read_text())["skipped"]
    assert "did not run" in _page(repo, f"executed/{STAGES[stage]}")


def test_the_claims_read_a_skipped_stage_as_not_run(hf_repo):
    repo, _ = hf_repo
    report = _metrics(repo, "claims")
    assert report["preset"] == "hf" and report["n_histories"] == 1
    readout = next(c for c in report["claims"] if c["id"] == "vocabulary_readout")
    assert readout["verdict"] == "not comparable", readout
    page = _text(repo, "executed/07_claims")
    assert "did not run" in page and "In the given checkpoints" in page
    assert "history-depth sweep" not in page


def test_a_second_repro_runs_nothing(hf_repo):
    repo, _ = hf_repo
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, tail(proc)
    assert not ran(proc), tail(proc)


def _page(repo: Path, page: str) -> str:
    return (repo / "book" / "_build" / "html" / f"{page}.html").read_text()


def _text(repo: Path, page: str) -> str:
    """A page's visible words: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", _page(repo, page)))
