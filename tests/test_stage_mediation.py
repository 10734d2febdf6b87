"""Stage mediation: findings worded from hand-made tables with known answers; the smoke run."""

import dataclasses
import importlib
import json

import numpy as np
import pandas as pd
import pytest
import torch

from gravrev.claims.thresholds import change_tolerance
from gravrev.cli import has_metrics_step, step_module
from gravrev.config.load import resolve
from gravrev.interp.activations import probe_activations
from gravrev.interp.labels import EVERY_LAYER, NONE
from gravrev.settings.protocol import make_setting
from gravrev.stages.mediation import metrics as med_metrics
from gravrev.stages.mediation import runs as med_runs
from gravrev.stages.mediation import verdicts as med_verdicts
from gravrev.stages.mediation.metrics import MediationStageResult, decision_block, summaries
from gravrev.stages.mediation.report import change_phrase, findings
from gravrev.stages.mediation.report import control_findings as report_controls
from gravrev.store.atomic import write_json
from gravrev.store.paths import Paths
from gravrev.training.finetune import finetune_run

N = 100  # prompts per hand-made table: the tolerance is then MIN_CHANGE_PTS
LAYERS = 4
GROUPS = ["embeddings", *(f"block{i}.{s}" for i in range(LAYERS) for s in ("attn", "mlp")),
          "final_norm"]


def _history(h: str, *, safe=90.0, helpful=0.0, ablated=None, ablated_all=None, plus=None,
             minus_h=None, tuned=None, restore=("block2.mlp", None), lower=("block2.mlp", None),
             margins_s=(-1.0, 1.0, 2.0, 3.0)) -> dict[str, pd.DataFrame]:
    """One history's four tables; unspecified effects are none (the unmodified rate)."""
    tuned = safe if tuned is None else tuned
    baseline = pd.DataFrame([{"checkpoint": c, "refusal_rate": r, "harmful_compliance": 0.0,
                              "n": N} for c, r in (("θ_H", helpful), ("θ_S", safe))])
    sweeps = [{"checkpoint": "θ_S", "mode": "ablate", "layer": layer, "scale": np.nan,
               "refusal_rate": safe} for layer in range(LAYERS)]
    sweeps[1]["refusal_rate"] = safe if ablated is None else ablated  # the analysed layer
    sweeps.append({"checkpoint": "θ_S", "mode": "ablate", "layer": EVERY_LAYER,
                   "scale": np.nan, "refusal_rate": safe if ablated_all is None else ablated_all})
    for ckpt, start in (("θ_H", helpful), ("θ_S", safe)):
        for layer in range(LAYERS):
            for scale in (-1.0, 0.0, 1.0):
                rate = start
                if layer == 1 and ckpt == "θ_S" and scale == 1.0 and plus is not None:
                    rate = plus
                if layer == 1 and ckpt == "θ_H" and scale == -1.0 and minus_h is not None:
                    rate = minus_h
                sweeps.append({"checkpoint": ckpt, "mode": "add", "layer": layer,
                               "scale": scale, "refusal_rate": rate})
    patching = []
    for patch, unpatched, (group, rate) in (("T->S", safe, lower), ("S->T", tuned, restore)):
        patching.append({"patch": patch, "group": NONE, "refusal_rate": unpatched})
        for g in GROUPS:
            patching.append({"patch": patch, "group": g,
                             "refusal_rate": rate if g == group and rate is not None
                             else unpatched})
    lens = []
    for ckpt, margins in (("θ_S", margins_s), ("θ_H", (-3.0,) * LAYERS),
                          ("θ_T", (-2.0,) * LAYERS)):
        for layer, m in enumerate(margins):
            lens.append({"checkpoint": ckpt, "layer": layer, "logp_refuse": m / 2,
                         "logp_comply": -m / 2, "margin": m})
    tables = {"baseline": baseline, "sweeps": pd.DataFrame(sweeps),
              "patching": pd.DataFrame(patching), "lens": pd.DataFrame(lens)}
    for name, df in tables.items():
        df["history"] = h
        if name != "lens":
            df["harmful_compliance"], df["n"] = 0.0, N
    return tables


def _result(*histories: dict[str, pd.DataFrame]) -> MediationStageResult:
    cat = {k: pd.concat([h[k] for h in histories], ignore_index=True) for k in histories[0]}
    return MediationStageResult(1, cat["baseline"], cat["sweeps"], cat["patching"], cat["lens"],
                                pd.DataFrame(), None)


UNDO, ALONE = "The best single component group to undo", "The best single group to change"


def _line(lines: list[str], start: str) -> str:
    (line,) = [x for x in lines if x.startswith(start)]
    return line


def test_decision_block_is_the_start_of_the_last_positive_run():
    assert decision_block(np.array([-1.0, 2.0, -0.5, 1.0, 3.0])) == 3
    assert decision_block(np.array([1.0, 2.0])) == 0
    assert decision_block(np.array([1.0, -1.0])) is None
    assert decision_block(np.array([0.0])) is None


def test_change_phrase_says_what_the_numbers_say():
    assert change_tolerance(100) == 5.0 and change_tolerance(24) == pytest.approx(200 / 24)
    assert change_phrase([90, 100], [10, 20], 5).startswith(
        "lowers refusal from 95.0% to 15.0% in every history")
    assert "change -80.0 to -80.0 points" in change_phrase([90, 100], [10, 20], 5)
    assert change_phrase([10], [60], 5).startswith("raises refusal from 10.0% to 60.0% (")
    assert change_phrase([90, 80], [88, 83], 5).startswith("leaves refusal near 85.0% (85.5%")
    assert change_phrase([90, 80, 70], [10, 80, 20], 5).startswith(
        "lowers refusal from 80.0% to 36.7% in 2 of 3 histories")
    assert "lower in 1, higher in 1 of 2" in change_phrase([50, 50], [10, 90], 5)


def test_summaries_read_the_analysed_layer_and_the_extreme_groups():
    r = _result(_history("h0", ablated=30.0, ablated_all=5.0, plus=40.0, tuned=20.0,
                         restore=("block3.attn", 70.0), lower=("embeddings", 50.0)))
    s = summaries(r)["h0"]
    assert (s.refusal_safe, s.ablated_at_layer, s.ablated_all_layers) == (90.0, 30.0, 5.0)
    assert s.add_safe == {-1.0: 90.0, 0.0: 90.0, 1.0: 40.0}
    assert s.refusal_finetuned == s.s_to_t.unpatched == 20.0
    assert (s.s_to_t.top_group, s.s_to_t.top_refusal) == ("block3.attn", 70.0)
    assert (s.t_to_s.bottom_group, s.t_to_s.bottom_refusal) == ("embeddings", 50.0)
    assert s.decision_block == {"θ_S": 1, "θ_H": None, "θ_T": None}


def test_findings_when_v_rev_carries_refusal_and_one_group_its_loss():
    r = _result(
        _history("h0", safe=90.0, ablated=10.0, ablated_all=0.0, plus=20.0, minus_h=80.0,
                 tuned=30.0, restore=("block2.mlp", 85.0), lower=("block2.mlp", 35.0)),
        _history("h1", safe=100.0, ablated=20.0, ablated_all=0.0, plus=10.0, minus_h=60.0,
                 tuned=10.0, restore=("block2.mlp", 95.0), lower=("block2.mlp", 15.0)),
    )
    lines = findings(r)
    assert not any(x.startswith("θ_S refuses") for x in lines)  # there is refusal to remove
    assert "lowers refusal from 95.0% to 15.0% in every history" in _line(lines, "Ablating v_rev")
    assert "lowers refusal from 95.0% to 0.0%" in _line(lines, "Ablating each block")
    added_s = _line(lines, "Adding v_rev to θ_S")
    assert "at +1 x it lowers refusal from 95.0% to 15.0%" in added_s
    assert "at -1 x it leaves refusal near 95.0%" in added_s
    assert "at -1 x it raises refusal from 0.0% to 70.0%" in _line(lines, "Adding v_rev to θ_H")
    assert "lowers refusal from 95.0% to 20.0%" in _line(lines, "Unblocked fine-tuning")
    # Shares of the loss: h0 (85-30)/60 and (90-35)/60, h1 (95-10)/90 and (100-15)/90.
    undo = _line(lines, UNDO)
    assert "restores 93% of the lost refusal on average" in undo
    assert "h0: block2.mlp 92%, h1: block2.mlp 94%" in undo
    assert "removes 93% of it on average" in _line(lines, ALONE)
    assert _line(lines, "block2.mlp carries most of the loss of refusal")
    assert "decided early" in _line(lines, "The logit lens")
    assert "h0: block 1, h1: block 1" in _line(lines, "The logit lens")
    assert all(x.endswith(".") for x in lines)


def test_findings_when_nothing_moves():
    r = _result(_history("h0", safe=90.0, ablated=88.0, ablated_all=92.0),
                _history("h1", safe=80.0, ablated=80.0, ablated_all=80.0))
    lines = findings(r)
    assert "leaves refusal near 85.0% (84.0% after" in _line(lines, "Ablating v_rev")
    assert "leaves refusal near 85.0%" in _line(lines, "Ablating each block")
    assert _line(lines, "Unblocked fine-tuning").endswith(
        "so there is no loss of refusal for patching to locate.")
    assert not any(x.startswith(("Putting", "Giving", "Both")) for x in lines)


def test_findings_when_the_groups_disagree_and_the_lens_decides_late():
    late = (-1.0, -1.0, -1.0, 2.0)
    r = _result(
        _history("h0", tuned=10.0, restore=("block0.attn", 60.0), lower=("block3.mlp", 20.0),
                 margins_s=late),
        _history("h1", tuned=10.0, restore=("block0.attn", 60.0), lower=("block3.mlp", 20.0),
                 margins_s=late),
    )
    lines = findings(r)
    assert "h0: block0.attn 62%, h1: block0.attn 62%" in _line(lines, UNDO)
    assert "h0: block3.mlp 88%, h1: block3.mlp 88%" in _line(lines, ALONE)
    assert _line(lines, "The two patching directions do not single out one group")
    assert "decided late" in _line(lines, "The logit lens")


def test_findings_when_one_group_is_necessary_but_not_sufficient():
    r = _result(*(_history(h, tuned=10.0, restore=("block1.mlp", 80.0),
                           lower=("block1.mlp", 80.0)) for h in ("h0", "h1", "h2")))
    lines = findings(r)
    assert "restores 88% of the lost refusal" in _line(lines, UNDO)
    assert "removes 12% of it" in _line(lines, ALONE)
    assert _line(lines, "No single group's change removes most of the refusal on its own, but "
                        "undoing block1.mlp's restores most of it")


def test_findings_when_no_group_matters_and_theta_s_never_refuses_in_the_lens():
    never = (-1.0, -2.0, -1.0, -0.5)
    r = _result(_history("h0", tuned=10.0, margins_s=never),
                _history("h1", tuned=10.0, margins_s=never))
    lines = findings(r)
    assert "no group above 5.0 points, h1: no group above 5.0 points" in _line(lines, UNDO)
    assert "restores 0% of the lost refusal" in _line(lines, UNDO)
    assert _line(lines, "Neither undoing nor making one group's change moves most of the loss")
    assert "never shows θ_S favouring" in _line(lines, "The logit lens")


def test_findings_report_each_row_of_v_rev_ablated():
    lines = findings(_result(_history("h0", safe=90.0, ablated=10.0),
                             _history("h1", safe=80.0, ablated=30.0)))
    assert _line(lines, "With one row of v_rev removed at a time").startswith(
        "With one row of v_rev removed at a time, θ_S refuses 85.0% (layer 0), 20.0% "
        "(layer 1), 85.0% (layer 2), 85.0% (layer 3)")


def test_findings_warn_when_theta_s_barely_refuses():
    lines = findings(_result(_history("h0", safe=2.0), _history("h1", safe=0.0)))
    assert lines[0].startswith("θ_S refuses 1.0% of held-out harmful requests")


# --- the stage on the smoke preset, end to end ------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = resolve({"preset": "smoke"})
    paths = Paths(tmp_path_factory.mktemp("mediation"))
    for stage in ("history", "finetune", "vrev", "mediation"):  # as `gravrev run` and `metrics`
        importlib.import_module(step_module(stage, "run")).run(cfg, paths)
        if has_metrics_step(stage):
            importlib.import_module(step_module(stage, "metrics")).measure(cfg, paths)
    return cfg, paths, med_metrics.load(cfg, paths)


@pytest.mark.pipeline
def test_run_writes_tables_that_agree_with_each_other(smoke_run):
    cfg, paths, r = smoke_run
    n_layer, n_scales, n_hist = cfg.model.n_layer, len(cfg.mediation.scales), len(cfg.histories)
    assert len(r.sweeps) == n_hist * (n_layer + 1 + 2 * n_layer * n_scales)
    assert len(r.patching) == n_hist * 2 * (2 * n_layer + 3)  # none, embeddings, 2L, final_norm
    assert len(r.lens) == n_hist * 3 * n_layer
    assert list(r.baseline["history"].unique()) == list(cfg.histories)
    # Adding 0 x v_rev is the unmodified model; T->S unpatched is theta_S.
    base = r.baseline.set_index(["history", "checkpoint"])["refusal_rate"]
    zero = r.sweeps[(r.sweeps["mode"] == "add") & (r.sweeps["scale"] == 0)]
    for row in zero.itertuples():
        assert row.refusal_rate == base[(row.history, row.checkpoint)]
    none = r.patching[(r.patching["patch"] == "T->S") & (r.patching["group"] == NONE)]
    safe = base.xs("θ_S", level=1).to_dict()
    assert none.set_index("history")["refusal_rate"].to_dict() == safe
    for h in cfg.histories:
        for name in med_runs.TABLES:
            assert (paths.stage("mediation") / h / f"{name}.csv").is_file()


@pytest.mark.pipeline
def test_the_rerun_is_stage_02s_run(smoke_run):
    cfg, paths, r = smoke_run
    assert r.runs["same_batches"].all() and (r.runs["seed"] == cfg.finetune.seeds[0]).all()
    assert (r.runs["acts_max_abs_diff"] == 0).all()
    assert (r.runs["refusal_at_T"] == r.runs["stage02_refusal_at_T"]).all()


@pytest.mark.pipeline
def test_metrics_load_and_findings(smoke_run):
    cfg, paths, r = smoke_run
    text = paths.metrics_file("mediation").read_text()
    m = json.loads(text)
    assert "second" not in text
    assert m["layer"] == cfg.layer and list(m["histories"]) == list(cfg.histories)
    assert all(v["same_batches"] and v["identical_activations"]
               for v in m["finetune_rerun"].values())
    again = med_metrics.load(cfg, paths)
    pd.testing.assert_frame_equal(again.sweeps, r.sweeps)
    assert again.metrics.histories[cfg.histories[0]].n == r.baseline["n"].iloc[0]
    written = paths.metrics_file("mediation").with_suffix(".again.json")
    write_json(written, again.metrics.to_json())  # the typed metrics give back the same bytes
    assert written.read_text() == text
    lines = findings(again)
    assert lines and all(isinstance(x, str) and x.endswith(".") for x in lines)
    assert (paths.timings / "mediation_runs.json").is_file()  # seconds per history


@pytest.mark.pipeline
def test_a_history_alone_gives_the_same_tables(smoke_run, tmp_path):
    cfg, paths, _ = smoke_run
    h = cfg.histories[-1]
    med_runs.mediation_task(med_runs.MediationTask(cfg, h, paths, tmp_path))
    for name in med_runs.TABLES:
        solo = (tmp_path / f"{name}.csv").read_bytes()
        assert solo == (paths.stage("mediation") / h / f"{name}.csv").read_bytes(), name


@pytest.mark.pipeline
def test_keep_model_returns_the_trained_model(smoke_run):
    cfg, paths, _ = smoke_run
    h, seed = cfg.histories[0], cfg.finetune.seeds[0]
    setting = make_setting(cfg, paths.history / h)
    kept = finetune_run(cfg.finetune, setting, seed, "cpu", judge="none", keep_model=True)
    plain = finetune_run(cfg.finetune, setting, seed, "cpu", judge="none")
    assert plain.model is None and kept.batch_hash == plain.batch_hash
    acts = probe_activations(kept.model, setting.load("safe", "cpu")[1], setting.probe_prompts,
                             "cpu")
    np.testing.assert_array_equal(acts["last"], kept.acts["last"][-1])
    np.testing.assert_array_equal(plain.acts["last"], kept.acts["last"])


# ----------------------------------------------------------------------------- controls, readout


def test_specificity_rank_on_a_hand_made_case():
    r = med_verdicts.specificity_rank(50.0, [10.0, 50.0, 70.0, 0.0])
    assert (r.rank, r.n_ties, r.n_controls, r.specific) == (2, 1, 4, False)
    top = med_verdicts.specificity_rank(80.0, [10.0, 50.0, 70.0])
    assert (top.rank, top.n_ties, top.specific) == (1, 0, True)
    tied = med_verdicts.specificity_rank(0.0, [0.0, 0.0])
    assert (tied.rank, tied.n_ties, tied.specific) == (1, 2, False)
    with pytest.raises(ValueError):
        med_verdicts.specificity_rank(1.0, [])


def test_ablation_outcome_and_cos_labels():
    out = med_verdicts.ablation_outcome
    assert out(90, 0, 10, 60, 5) == "harmful"
    assert out(90, 0, 10, 2, 5) == "refusal_lost_not_harmful"
    assert out(90, 0, 88, 0, 5) == "no_effect"
    assert out(2, 0, 0, 0, 5) == "at_floor"
    assert [med_verdicts.cos_label(c) for c in (-0.95, 0.6, 0.1)] == ["same", "overlapping",
                                                                     "distinct"]
    assert med_verdicts.majority(["a", "a", "b"]) == "a"
    assert med_verdicts.majority(["a", "b"]) == "mixed"


def _controls(h: str, ablated: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """A control table of one history: each direction's (refusal, harm) when ablated; the
    other cells unmodified (theta_S 90/0, theta_H 0/100)."""
    rows = []
    for d, (refusal, harm) in ablated.items():
        for ckpt, mode, layer, scale in med_runs.control_cells((-1.0, 0.0, 1.0), 1):
            rates = ((refusal, harm) if (mode, layer) == ("ablate", 1) else
                     (90.0, 0.0) if ckpt == "θ_S" else (0.0, 100.0))
            rows.append({"direction": d, "kind": med_runs.kind_of(d), "checkpoint": ckpt,
                         "mode": mode, "layer": layer, "scale": scale,
                         "refusal_rate": rates[0], "harmful_compliance": rates[1], "n": N,
                         "history": h})
    return pd.DataFrame(rows)


def test_controls_metrics_rank_v_rev_and_round_trip():
    hs = [_history("h0", ablated=10.0), _history("h1", ablated=10.0)]
    for h in hs:
        h["baseline"].loc[h["baseline"]["checkpoint"] == "θ_H", "harmful_compliance"] = 100.0
    ablated = {"v_rev": (10.0, 2.0), "refusal": (20.0, 70.0), "random_0": (90.0, 0.0),
               "covariance_0": (50.0, 0.0), "pc_0": (10.0, 0.0)}
    base = _result(*hs)
    result = dataclasses.replace(
        base, controls=pd.concat([_controls(h, ablated) for h in ("h0", "h1")],
                                 ignore_index=True),
        directions=pd.DataFrame([{"direction": "v_rev", "history": h, "cos_r": c}
                                 for h, c in (("h0", -0.2), ("h1", -0.95))]),
        readout=pd.DataFrame([{"history": h, "lens_score": 1.0, "lens_percentile": 99.0,
                               "change_score": 2.0, "change_percentile": 40.0, "n_null": 20}
                              for h in ("h0", "h1")]))
    c = med_metrics.controls_metrics(result)
    x = c.per_history["h0"]
    rank = x.specificity["ablate_layer"]["refusal_rate"]
    assert (rank.effect, rank.rank, rank.n_ties, rank.n_controls) == (80.0, 1, 1, 4)  # pc_0 ties
    harm = x.specificity["ablate_layer"]["harmful_compliance"]
    assert (harm.effect, harm.rank) == (2.0, 2)  # r's ablation raises harm more
    assert x.ablation == {"v_rev": "refusal_lost_not_harmful", "refusal": "harmful",
                          "random_0": "no_effect", "covariance_0": "refusal_lost_not_harmful",
                          "pc_0": "refusal_lost_not_harmful"}
    assert (c.v_rev_ablation, c.refusal_ablation) == ("refusal_lost_not_harmful", "harmful")
    assert c.distinct_from_r == "mixed"  # h0 distinct, h1 the same
    assert med_verdicts.Controls.from_json(json.loads(json.dumps(c.to_json()))) == c
    m = med_metrics.MediationMetrics(
        "smoke", 1, LAYERS, "last", "checkpoint_diff", [-1.0, 0.0, 1.0], summaries(result), {},
        med_metrics.readouts(result.readout), med_metrics.cos_v_rev_r(result.directions), c)
    j = json.loads(json.dumps(m.to_json()))
    assert set(j["readout"]["per_history"]["h0"]) == {"lens_score", "lens_percentile",
                                                      "change_score", "change_percentile",
                                                      "n_null"}
    assert j["refusal_direction"] == {"cos_v_rev_r": {"h0": -0.2, "h1": -0.95}}
    assert med_metrics.MediationMetrics.from_json(j).to_json() == m.to_json()
    lines = report_controls(m)
    assert any("the outcome shared by most histories" in x for x in lines)
