"""The `hf` code path on the exported organism reproduces the organism path's science.

Same checkpoints, same probes: stage 01's activations and v_rev must match to float precision.
The fine-tuning data differ in order (the hf path samples JSONL rows, the organism samples its
world), so the alignment trajectories are compared within a stated tolerance,
ALIGNMENT_TOLERANCE.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from gravrev.config.load import resolve
from gravrev.config.validate import check_hf
from gravrev.organism.model import build_model, build_tokenizer, save_checkpoint
from gravrev.organism.world import World
from gravrev.settings.hf.setting import export_organism
from gravrev.stages.finetune import metrics as fine_metrics
from gravrev.stages.finetune import report as fine_report
from gravrev.stages.finetune.search import search_log
from gravrev.stages.history import metrics as history_metrics
from gravrev.stages.history import runs as history_runs
from gravrev.stages.vrev import compute as vrev
from gravrev.store.atomic import read_npz, write_csv
from gravrev.store.paths import Paths
from gravrev.training.phases import probe_set, probes_table, train_phase
from gravrev.training.tasks import FinetuneTask, HistoryTask, finetune_task, history_run

ALIGNMENT_TOLERANCE = 0.25  # |mean alignment difference| per logged step, organism vs hf
PRETRAIN_STEPS = 30

FAST = {
    "world": {"n_probes": 16, "n_eval": 16},
    "history": {"seeds": [0], "helpful": {"steps": 30, "batch_size": 16},
                "safe": {"steps": 8, "batch_size": 16}, "safe_snapshots": 2},
    "finetune": {"seeds": [1, 2], "steps": 10, "warmup": 2, "log_steps": [1, 5, 10],
                 "mixed_control": False},
    "defenses": {"n_histories": 0},  # one history
}


def _organism(cfg, paths: Paths) -> None:
    """Stage 01's layout for one history: theta_P trained briefly, then H -> S."""
    tok = build_tokenizer(cfg.world)
    model = build_model(cfg.model, tok, 0)
    train_phase(model, World(cfg.world), tok, "pretrain",
                dataclasses.replace(cfg.history.pretrain, steps=PRETRAIN_STEPS), 0, "cpu")
    save_checkpoint(model.eval(), tok, paths.pretrained)
    h = cfg.histories[0]
    history_run(HistoryTask(cfg, h, 0, cfg.history.helpful, cfg.history.safe, paths.pretrained,
                            paths.checkpoint("safe", h).parent))
    write_csv(paths.probes, probes_table(probe_set(World(cfg.world), cfg.world.n_probes)))


def _finetune(cfg, paths: Paths) -> pd.DataFrame:
    """The unblocked runs of stage 02 (what vrev reads), through the executor's unit."""
    h, rows = cfg.histories[0], []
    for seed in cfg.finetune.seeds:
        task = FinetuneTask(cfg, h, paths.checkpoint("safe", h).parent, seed, "unblocked",
                            paths.run("finetune", h, "unblocked", seed), judge="none")
        rows.append({"history": h, "arm": "unblocked", "seed": seed,
                     "batch_hash": finetune_task(task).batch_hash})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    org_cfg = resolve({"preset": "smoke", **FAST})
    org_paths = Paths(tmp_path_factory.mktemp("organism"))
    _organism(org_cfg, org_paths)
    org_runs = _finetune(org_cfg, org_paths)

    folder = org_paths.checkpoint("safe", org_cfg.histories[0]).parent
    files = export_organism(folder, tmp_path_factory.mktemp("export"), org_cfg)
    hf_cfg = check_hf(resolve({"preset": "hf", **FAST,
                               "hf": {k: str(v) for k, v in files.items()}}))
    hf_cfg = dataclasses.replace(hf_cfg, finetune=org_cfg.finetune, analysis=org_cfg.analysis)
    hf_paths = Paths(tmp_path_factory.mktemp("hf"))
    history_runs.run(hf_cfg, hf_paths)  # stage 01 of the hf preset: describe, no training
    history_metrics.measure(hf_cfg, hf_paths)
    hf_runs = _finetune(hf_cfg, hf_paths)
    return (org_cfg, org_paths, org_runs), (hf_cfg, hf_paths, hf_runs)


def test_hf_stage_01_writes_the_organisms_layout(both):
    (org_cfg, org_paths, _), (hf_cfg, hf_paths, _) = both
    assert hf_cfg.model.n_layer == org_cfg.model.n_layer  # read from the checkpoint
    for name in ("helpful", "safe"):
        org = read_npz(org_paths.acts(name, "h0"))
        hf = read_npz(hf_paths.acts(name, "h0"))
        for pos in ("last", "mean"):
            np.testing.assert_allclose(hf[pos], org[pos], atol=1e-5)
    org_probes, hf_probes = pd.read_csv(org_paths.probes), pd.read_csv(hf_paths.probes)
    assert list(hf_probes["kind"]) == list(org_probes["kind"])
    assert list(hf_probes["text"]) == list(org_probes["text"])


def test_v_rev_is_the_same_on_both_paths(both):
    (org_cfg, org_paths, _), (hf_cfg, hf_paths, _) = both
    org = vrev.directions(org_cfg, org_paths, "h0")
    hf = vrev.directions(hf_cfg, hf_paths, "h0")
    assert ("checkpoint_diff", "last") in hf
    for pos in ("last", "mean"):
        key = ("checkpoint_diff", pos)
        np.testing.assert_allclose(hf[key], org[key], atol=1e-5)


def test_alignment_trajectory_agrees_within_tolerance(both):
    means = []
    for cfg, paths, runs in both:
        dirs = {"h0": {k: v for k, v in vrev.directions(cfg, paths, "h0").items()
                       if k == ("checkpoint_diff", "last")}}
        table = vrev.alignment_table(cfg, paths, "finetune", runs, dirs)
        cell = table[table["layer"] == cfg.layer]
        means.append(cell.groupby("step")["alignment"].mean())
    org, hf = means
    assert list(org.index) == list(hf.index) == [1, 5, 10]
    assert (org > 0).all()  # the organism's drift does align with v_rev (not a vacuous match)
    assert np.all(np.abs(org.to_numpy() - hf.to_numpy()) <= ALIGNMENT_TOLERANCE), (org, hf)


def test_hf_history_metrics_name_the_judge(both):
    _, (hf_cfg, hf_paths, _) = both
    m = history_metrics.HistoryMetrics.read(hf_paths)
    assert m.vocab_size is None and m.judge == "organism_exact" and m.n_params > 0
    assert m.histories == [hf_cfg.histories[0]]
    assert {row["checkpoint"] for row in m.checkpoints} == {"helpful", "safe"}
    assert history_metrics.load(hf_cfg, hf_paths).checks["check"].nunique() == 3  # no latent


def test_finetune_metrics_step_on_hf_logs(both, tmp_path):
    """hf logs have no new-task column: the stage's metrics, tables and words still come out."""
    _, (hf_cfg, hf_paths, _) = both
    paths, h, logs, runs = Paths(tmp_path), hf_cfg.histories[0], [], []
    for seed in hf_cfg.finetune.seeds:  # judged at theta_S and at T: what the metrics read
        done = finetune_task(FinetuneTask(hf_cfg, h, hf_paths.checkpoint("safe", h).parent, seed,
                                          "unblocked", paths.run("finetune", h, "unblocked", seed),
                                          judge="ends"))
        logs.append(done.log)
        runs.append({"history": h, "arm": "unblocked", "seed": seed,
                     "batch_hash": done.batch_hash})
    log = pd.concat(logs, ignore_index=True)
    new = f"{hf_cfg.finetune.new_task}_accuracy"
    assert new not in log and "refusal_rate" in log
    write_csv(paths.stage("finetune") / "log.csv", log)
    write_csv(paths.stage("finetune") / "runs.csv", pd.DataFrame(runs))
    write_csv(paths.stage("finetune") / "search_log.csv", search_log([], []))  # hf: no search
    fine_metrics.measure(hf_cfg, paths)  # the regime table raised KeyError here (issue 19)
    m = fine_metrics.FinetuneMetrics.read(paths)
    assert m.regime.holds is None and "not checked" in m.regime.rule
    assert len(m.refusal_at_T(h)) == len(hf_cfg.finetune.seeds)
    r = fine_metrics.load(hf_cfg, paths)
    assert r.new_task is None and r.regime["new_task_accuracy"].isna().all()
    assert r.at_T[new].isna().all()
    text = fine_report.findings(hf_cfg, r)
    assert any("not checked: this setting has no new task" in t for t in text)
