"""Each stage on tiny hand-made inputs with known answers: no training anywhere in this file."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import stage_layout as S
from scipy import stats
from scipy.stats import spearmanr
from stage_layout import CFG, DESIGN, EARLY_STEPS, LOG_STEPS, SENS_ARM

from gravrev.config.fields import ConfigError
from gravrev.config.load import resolve
from gravrev.organism.shape import shape_checks
from gravrev.report import headline as headline_words
from gravrev.report.claim_words import value_text
from gravrev.runtime import seeds
from gravrev.stages.artifacts import load_v_rev
from gravrev.stages.blocking import calibration as block_calib
from gravrev.stages.blocking import metrics as block_metrics
from gravrev.stages.blocking import ordering as block_ordering
from gravrev.stages.blocking import report as block_report
from gravrev.stages.blocking import runs as block_runs
from gravrev.stages.blocking import summaries as block_summaries
from gravrev.stages.blocking.shock import metrics as block_shock
from gravrev.stages.claims import compute as claims
from gravrev.stages.claims import report as claims_report
from gravrev.stages.finetune import arms as fine_arms
from gravrev.stages.finetune import grid as fine_grid
from gravrev.stages.finetune import metrics as fine_metrics
from gravrev.stages.finetune import regime as fine_regime
from gravrev.stages.finetune import report as fine_report
from gravrev.stages.finetune import runs as fine_runs
from gravrev.stages.history import metrics as history_metrics
from gravrev.stages.history import report as history_report
from gravrev.stages.nulls import compute as nulls
from gravrev.stages.nulls import report as nulls_report
from gravrev.stages.vrev import compute as vrev
from gravrev.stages.vrev import report as vrev_report
from gravrev.stats.nulls import isotropic_quantile
from gravrev.store.atomic import read_json, write_csv, write_json, write_npz
from gravrev.store.paths import Paths

# ============================================================================ the layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """Stages 01-02's outputs, hand-made; then the real vrev and nulls stages on them."""
    lay = S.build(tmp_path_factory.mktemp("repo"))
    vrev.run(lay.cfg, lay.paths)
    nulls.run(lay.cfg, lay.paths)
    return lay


@pytest.fixture(scope="module")
def vrev_result(layout):
    return vrev.load(layout.cfg, layout.paths)


@pytest.fixture(scope="module")
def nulls_result(layout):
    return nulls.load(layout.cfg, layout.paths)


# ============================================================================ 03 vrev


def test_v_rev_is_the_direction_built_in_by_both_methods(layout):
    for h in CFG.histories:
        for method in vrev.METHODS:
            for pos in vrev.POSITIONS:
                v = load_v_rev(CFG, layout.paths, h, method, pos)
                np.testing.assert_allclose(v, layout.v[h], atol=1e-5)


def test_probe_set_decides_which_probes_define_v_rev(layout):
    """theta_H differs from theta_S along u on the benign probes only."""
    benign = resolve({"preset": "smoke", "history": {"seeds": [0, 1]},
                      "analysis": {"probe_set": "benign"}})
    dirs = vrev.directions(benign, layout.paths, "h0")
    np.testing.assert_allclose(dirs[("checkpoint_diff", "last")], layout.u, atol=1e-5)


def test_alignment_of_every_run_is_its_designed_cosine(vrev_result):
    table = vrev_result.table
    assert set(table["method"]) == set(vrev.METHODS)
    assert set(table["position"]) == set(vrev.POSITIONS)
    assert set(table["layer"]) == set(range(S.L))
    for (h, arm, seed), cosines in DESIGN.items():
        run = table[(table["history"] == h) & (table["arm"] == arm) & (table["seed"] == seed)]
        steps = LOG_STEPS if arm in ("unblocked", "mixed") else EARLY_STEPS
        assert len(run) == len(steps) * S.L * len(vrev.POSITIONS) * len(vrev.METHODS)
        for step, c in zip(steps, cosines, strict=True):
            got = run[run["step"] == step]["alignment"].to_numpy()
            np.testing.assert_allclose(got, c, atol=1e-5, err_msg=f"{h} {arm} {seed} {step}")


def test_vrev_splits_runs_by_arm_and_joins_behaviour(vrev_result):
    r = vrev_result
    assert set(r.main["arm"]) == {"unblocked"} and len(r.main) == 4 * len(LOG_STEPS)
    assert set(r.early["arm"]) == {"early", "large_batch"}
    assert set(r.sensitivity["arm"]) == {SENS_ARM}
    row = r.main[(r.main["history"] == "h0") & (r.main["seed"] == 1) & (r.main["step"] == 20)]
    assert row["refusal_rate"].item() == S.REFUSAL["unblocked"][-1]
    assert row["non_refusal"].item() == 100 - S.REFUSAL["unblocked"][-1]


def test_vrev_pools_over_histories(vrev_result):
    finals = S.final_cosines()
    at_t = vrev_result.by_step.set_index(["history", "step"])["mean"]
    assert at_t[("all", 20)] == pytest.approx(np.mean(list(finals.values())), abs=1e-5)
    assert at_t[("h0", 20)] == pytest.approx(np.mean([finals["h0", 1], finals["h0", 2]]),
                                             abs=1e-5)
    early = vrev_result.early_by_step.set_index(["history", "step"])
    assert early.loc[("all", 1), "n"] == 6
    assert early.loc[("all", 1), "mean"] == pytest.approx(0.42, abs=1e-5)
    assert early.loc[("all", 20), "mean"] == pytest.approx(0.90, abs=1e-5)


def test_vrev_metrics_hold_the_runs_the_claims_read(vrev_result):
    m = vrev_result.metrics
    assert m["steps"] == LOG_STEPS and m["early_steps"] == EARLY_STEPS
    assert m["layer"] == CFG.layer == 1
    assert m["isotropic_p99"] == pytest.approx(isotropic_quantile(S.D, 0.99), abs=1e-6)
    for (h, arm, seed), cosines in DESIGN.items():
        key = f"{h}/{seed}"
        if arm == "unblocked":
            np.testing.assert_allclose(m["per_run"][key], cosines, atol=1e-5)
        elif arm == "early":
            np.testing.assert_allclose(m["early_per_run"][key], cosines, atol=1e-5)
    assert len(m["per_run"]) == 4 and len(m["early_per_run"]) == 6


def test_alignment_harm_is_per_history_and_round_trips(vrev_result):
    ah = vrev_result.alignment_harm
    assert set(ah.per_history) == set(CFG.histories)
    j = vrev_result.metrics["alignment_harm"]
    back = vrev.AlignmentHarm.from_json(j)
    for h, x in ah.per_history.items():
        assert x.n_steps == len(LOG_STEPS)
        y = back.per_history[h]
        for f in ("rho_non_refusal", "rho_harmful_compliance"):
            a, b = getattr(x, f), getattr(y, f)
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-6)
        assert set(j["per_history"][h]) == {"rho_non_refusal", "rho_harmful_compliance",
                                            "at_bound_non_refusal",
                                            "at_bound_harmful_compliance", "n_steps",
                                            "p_non_refusal", "p_harmful_compliance"}
        for f in ("p_non_refusal", "p_harmful_compliance"):
            a, b = getattr(x, f), getattr(y, f)
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-6)
    means = vrev_result.main.groupby(["history", "step"])[["alignment", "non_refusal"]].mean()
    h0 = means.loc["h0"]
    want = spearmanr(h0["alignment"], h0["non_refusal"]).statistic
    if not np.isnan(ah.per_history["h0"].rho_non_refusal):
        assert ah.per_history["h0"].rho_non_refusal == pytest.approx(want)
        want_p = spearmanr(h0["alignment"], h0["non_refusal"]).pvalue
        assert ah.per_history["h0"].p_non_refusal == pytest.approx(want_p)


def test_between_histories_and_between_methods(vrev_result):
    b = vrev_result.between_histories
    same = b["history"] == b["other"]
    np.testing.assert_allclose(b[same]["cosine"], 1.0, atol=1e-6)
    np.testing.assert_allclose(b[~same]["cosine"], 0.0, atol=1e-5)  # built orthogonal
    np.testing.assert_allclose(vrev_result.methods_cos["cosine"], 1.0, atol=1e-6)
    assert len(vrev_result.methods_cos) == len(CFG.histories) * 2 * S.L


def test_vrev_findings_follow_the_numbers(vrev_result):
    text = vrev_report.findings(CFG, vrev_result)
    assert "At step 1, over 6 short runs, alignment is 0.42" in text[0]
    assert "over the 2 history means, 1 df; by history h0 " in text[0] and ", h1 " in text[0]
    assert "At step 20, over 6 short runs, alignment is 0.90" in text[1]
    assert any("aligns at h0 0.50" in t for t in text)  # the large-batch run
    assert any("reaches 0.31" in t and "at step 20" in t for t in text)
    between = [t for t in text if "cosine 0.00-0.00" in t]
    assert between and "agree closely" not in between[0]  # the v_rev are orthogonal here
    r = vrev_result
    close = r.between_histories.assign(cosine=np.where(
        r.between_histories["history"] == r.between_histories["other"], 1.0, 0.95))
    text = vrev_report.findings(CFG, vrev.VrevResult(**{**r.__dict__, "between_histories": close}))
    assert any("agree closely (cosine 0.95-0.95" in t for t in text)
    for slope, p, word in ((0.05, 0.001, "rises"), (-0.05, 0.001, "falls"),
                           (0.05, 0.5, "shows no clear trend")):
        models = {**r.models, "all": {**r.models["all"], "slope": slope, "slope_p": p}}
        text = vrev_report.findings(CFG, vrev.VrevResult(**{**r.__dict__, "models": models}))
        assert any(f"alignment {word} with log(step)" in t for t in text), word


def test_vrev_without_early_or_trajectory_runs(tmp_path, monkeypatch):
    """The hf preset: one history, no early runs, no safe trajectory."""
    monkeypatch.setattr(S, "DESIGN", {k: v for k, v in DESIGN.items()
                                      if k[0] == "h0" and k[1] == "unblocked"})
    cfg = resolve({"preset": "smoke", "history": {"seeds": [0]}, "defenses": {"n_histories": 0},
                   "finetune": {"seeds": [1, 2], "steps": 20, "warmup": 2,
                                "log_steps": LOG_STEPS}})
    lay = S.build(tmp_path, cfg)
    lay.paths.safe_trajectory("h0").unlink()
    r = vrev.run(cfg, lay.paths)
    assert r.early.empty and r.early_by_step.empty and r.methods_cos.empty
    assert set(r.table["method"]) == {"checkpoint_diff"}
    text = vrev_report.findings(cfg, r)
    assert len(text) == 1 and "reaches" in text[0]
    with pytest.raises(ValueError, match="vrev_method"):
        vrev.run(resolve({**{"preset": "smoke", "history": {"seeds": [0]},
                             "defenses": {"n_histories": 0}},
                          "analysis": {"vrev_method": "trajectory_pca"}}), lay.paths)


# ============================================================================ 04 nulls


def test_nulls_count_the_designed_exceedances(nulls_result):
    """Designed cosines >= 0.9 exceed every null's p99; <= 0.2 exceed none."""
    pairs = nulls_result.pairs
    assert len(pairs) == 4 * len(LOG_STEPS)
    p99 = isotropic_quantile(S.D, 0.99)
    assert 0.2 < p99 < 0.9  # what makes the design unambiguous
    want = {f"{h}/{s}/{t}": c > p99 for (h, a, s), cs in DESIGN.items() if a == "unblocked"
            for t, c in zip(LOG_STEPS, cs, strict=True)}
    got = {f"{r.history}/{r.seed}/{r.step}": r.exceeds_isotropic for r in pairs.itertuples()}
    assert got == want
    assert (pairs["exceeds_anisotropic"] == pairs["exceeds_isotropic"]).all()
    e = nulls_result.metrics["exceedance"]
    assert e["all"]["isotropic"] == {"k": 6, "n": 12}
    assert e["h0"]["isotropic"] == e["h1"]["isotropic"] == {"k": 3, "n": 6}
    assert e["all"]["anisotropic"] == {"k": 6, "n": 12}


def test_nulls_control_direction_is_the_other_history(nulls_result):
    assert nulls.control_history(CFG, "h0") == "h1" and nulls.control_history(CFG, "h1") == "h0"
    one = resolve({"preset": "smoke", "history": {"seeds": [3]}, "defenses": {"n_histories": 0}})
    assert nulls.control_history(one, "h3") is None
    pairs = nulls_result.pairs
    np.testing.assert_allclose(pairs["control_cosine"], 0.0, atol=1e-5)  # built orthogonal
    # Beats the control exactly when the alignment is positive: 9 of the 12 designed pairs.
    assert (pairs["beats_control"] == (pairs["alignment"] > 0)).all()
    assert nulls_result.metrics["exceedance"]["all"]["control_direction"] == {"k": 9, "n": 12}
    for h in CFG.histories:
        assert nulls_result.metrics["control_direction_cos_v_rev"][h] == pytest.approx(0, abs=1e-5)


def test_nulls_closed_form_and_monte_carlo_agree(nulls_result):
    m = nulls_result.metrics
    assert m["d"] == S.D
    assert m["isotropic_closed_form"] == pytest.approx(isotropic_quantile(S.D, 0.99), abs=1e-6)
    assert abs(m["isotropic_monte_carlo"] - m["isotropic_closed_form"]) <= 4 * max(
        m["isotropic_monte_carlo_se"], 1e-6)
    assert len(nulls_result.iso_samples) == min(CFG.analysis.null_samples, 20000)


def test_nulls_control_drift_and_findings(nulls_result):
    cd = nulls_result.metrics["control_drift_final"]
    assert cd["mixed"]["mean"] == pytest.approx(0.10, abs=1e-5)
    assert cd["unblocked"]["mean"] == pytest.approx(np.mean(list(S.final_cosines().values())),
                                                    abs=1e-5)
    text = nulls_report.findings(nulls_result)
    assert text[0].startswith("6 of 12 run-step pairs exceed the isotropic p99")
    assert "and 6 exceed the covariance-matched null" in text[0]
    assert "in 9 of 12 pairs" in text[1]
    assert "drifts at 0.10 to v_rev at T, against 0.31" in text[2]


def test_nulls_findings_without_a_control_history_or_mixed_runs(nulls_result):
    m = nulls_result.metrics
    bare = {**m, "exceedance": {"all": {k: v for k, v in m["exceedance"]["all"].items()
                                        if k != "control_direction"}},
            "control_drift_final": {"unblocked": m["control_drift_final"]["unblocked"]}}
    text = nulls_report.findings(nulls.NullsResult(nulls_result.pairs, nulls_result.iso_samples,
                                            nulls_result.control_drift, bare,
                                            nulls_result.matched_pairs, nulls_result.matched))
    assert len(text) == 1 and text[0].startswith("6 of 12")


def test_trajectory_null_counts_steps_above_each_steps_quantile():
    """Hand-made: step 0 beats its null; step 1 lies below its null's p99 (0.698)."""
    null = np.array([[0.1, 0.2, 0.3], [0.5, 0.6, 0.7]])
    t = nulls.trajectory_null(np.array([0.9, 0.65]), null, 0.99)
    assert (t.n_exceed, t.n_steps, t.all_steps_exceed) == (1, 2, False)
    t = nulls.trajectory_null(np.array([0.9, 0.8]), null, 0.99)
    assert (t.n_exceed, t.n_steps, t.all_steps_exceed) == (2, 2, True)
    with pytest.raises(ValueError, match="steps"):
        nulls.trajectory_null(np.array([0.9]), null, 0.99)


def test_matched_null_judges_every_trajectory_and_round_trips(layout, nulls_result):
    m, pairs = nulls_result.matched, nulls_result.matched_pairs
    assert m.n_directions == {"h0": 2, "h1": 2}  # the other history's 3 snapshots less theta_H
    assert set(m.per_trajectory) == {"h0/1", "h0/2", "h1/1", "h1/2"}
    for key, t in m.per_trajectory.items():
        h, seed = key.split("/")
        run = pairs[(pairs["history"] == h) & (pairs["seed"] == int(seed))]
        assert t.n_steps == len(run) == len(LOG_STEPS)
        assert t.n_exceed == int(run["exceeds_matched"].sum())
    j = nulls_result.metrics["matched_null"]
    assert nulls.MatchedNull.from_json(j) == m and m.to_json() == j
    assert j["n_trajectories"] == 4 and j["n_all_exceed"] == sum(
        t.all_steps_exceed for t in m.per_trajectory.values())
    assert nulls.matched_directions(layout.cfg, layout.paths, "h0").shape == (2, S.D)


# ============================================================================ 02 finetune


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Stages 01-02's outputs alone, hand-made: all that the finetune stage's metrics read."""
    return S.build(tmp_path_factory.mktemp("built"))


def test_finetune_tasks_are_every_run_once_where_vrev_looks(tmp_path):
    paths = Paths(tmp_path)
    every = fine_runs.tasks(CFG, paths, paths.stage("finetune"))
    search = [t for t in every if t.arm == "search"]  # the regime search: tests/test_regime.py
    assert len(search) == CFG.regime.search_histories * len(fine_grid.cells(CFG))
    assert len({t.out for t in search}) == len(search)
    todo = [t for t in every if t.arm != "search"]
    keys = [(t.history, t.arm, t.seed) for t in todo]
    assert len(keys) == len(set(keys))
    for t in todo:
        assert t.out == paths.run("finetune", t.history, t.arm, t.seed)
        assert t.checkpoints == paths.checkpoint("safe", t.history).parent
    arms = pd.Series([t.arm for t in todo]).value_counts().to_dict()
    n_h, n_s = len(CFG.histories), len(CFG.finetune.seeds)
    assert arms == {"unblocked": n_h * n_s, "mixed": n_h * n_s, "early": n_h * 3,
                    "large_batch": n_h, SENS_ARM: 1, "sens_sgd_lr0.001_bs16": 1}
    early = [t for t in todo if t.arm == "early"]
    assert {t.seed for t in early} == set(fine_arms.early_seeds(CFG)) == {1001, 1002, 1003}
    assert not set(fine_arms.early_seeds(CFG)) & set(CFG.finetune.seeds)
    assert fine_arms.early_seeds(CFG) == [seeds.early_run(i) for i in range(3)]
    assert all(t.log_steps == CFG.finetune.early_steps and t.judge == "none" for t in early)
    large = [t for t in todo if t.arm == "large_batch"]
    assert all(t.cfg.finetune.batch_size == 16 * CFG.finetune.batch_size for t in large)
    sgd = next(t for t in todo if t.arm == "sens_sgd_lr0.001_bs16")
    assert (sgd.cfg.finetune.optimizer, sgd.cfg.finetune.lr) == ("sgd", 1e-3)
    assert all(t.mix_safety == (t.arm == "mixed") for t in todo)
    no_mix = resolve({"preset": "smoke", "finetune": {"mixed_control": False, "early_runs": 0}})
    # no early runs, no early claims: no 16x-batch run either (a real model could not afford it)
    assert {t.arm for t in fine_runs.tasks(no_mix, paths, paths.stage("finetune"))} == {
        "unblocked", "sens_adamw_lr0.001_bs16", "sens_sgd_lr0.001_bs16", "search"}


def _finetune_result(built, cfg=CFG) -> fine_metrics.FinetuneResult:
    log = pd.read_csv(built.paths.stage("finetune") / "log.csv")
    runs = pd.read_csv(built.paths.stage("finetune") / "runs.csv")
    search, per_history, candidates, _ = fine_regime.search_metrics(cfg, pd.DataFrame())
    return fine_metrics.FinetuneResult(log, runs, fine_metrics.regime_table(cfg, log),
                                       fine_metrics.runs_at_T(cfg, log),
                                       fine_arms.arms_table(cfg, list(runs["arm"].unique())),
                                       fine_metrics.new_task_column(cfg, log),
                                       fine_metrics.finetune_metrics(cfg, log, search),
                                       pd.DataFrame(), per_history, candidates, pd.DataFrame())


def test_finetune_regime_metrics_and_findings(built):
    r = _finetune_result(built)
    assert len(r.regime) == 4 and r.regime["learned"].all()  # 75 >= 70 at T
    assert (r.regime["nonrefusal_at_T"] == 100 - S.REFUSAL["unblocked"][-1]).all()
    m = r.metrics
    assert m.regime.holds is (bool(r.regime["no_shock"].all()))
    h0 = m.histories["h0"]
    assert h0.safe_start["refusal_rate"] == S.REFUSAL["unblocked"][0]
    assert m.refusal_at_T("h0") == [S.REFUSAL["unblocked"][-1]] * 2
    assert h0.at_T("mixed", "refusal_rate") == [S.REFUSAL["mixed"][-1]] * 2
    assert fine_metrics.FinetuneMetrics.from_json(m.to_json()) == m
    text = fine_report.findings(CFG, r)
    assert "refusal from 90% at θ_S to 30% at step 20" in text[0]
    assert "Half of the refusal is gone, on average, by step 20." in text  # 90 -> 50 -> 30
    assert any("the new task reaches >= 70% by T in 4 of 4 runs" in t for t in text)
    assert any("pooled non-refusal at T is 70%, inside the band 10-90%" in t for t in text)
    assert any("refusal at T is 87%" in t for t in text)
    strict = dataclasses.replace(
        CFG, finetune=dataclasses.replace(CFG.finetune, min_new_task_accuracy=80.0))
    r80 = _finetune_result(built, strict)
    assert len(r80.regime) == 4 and not r80.regime["learned"].any()
    assert r80.metrics.regime.holds is False
    assert any("in 0 of 4 runs" in t and "does not meet its own rule" in t
               for t in fine_report.findings(strict, r80))
    assert fine_report.search_findings(CFG, r) == [
        "No regime was searched (no search (regime.search_histories is 0))."]


def test_finetune_without_a_new_task_says_the_rule_is_not_checked(built, tmp_path):
    """hf logs have no new-task column: every table keeps it as NaN, the rule is not checked."""
    new = f"{CFG.finetune.new_task}_accuracy"
    log = pd.read_csv(built.paths.stage("finetune") / "log.csv").drop(
        columns=[new, "prefilled_content"])
    paths = Paths(tmp_path)
    write_csv(paths.stage("finetune") / "log.csv", log)
    write_csv(paths.stage("finetune") / "runs.csv",
              pd.read_csv(built.paths.stage("finetune") / "runs.csv"))
    write_csv(paths.stage("finetune") / "search_log.csv",
              pd.read_csv(built.paths.stage("finetune") / "search_log.csv"))
    fine_metrics.measure(CFG, paths)
    m = fine_metrics.FinetuneMetrics.read(paths)
    assert m.regime.holds is None and "not checked" in m.regime.rule
    assert m.refusal_at_T("h0") == [S.REFUSAL["unblocked"][-1]] * 2
    assert new not in m.histories["h0"].safe_start
    r = fine_metrics.load(CFG, paths)
    assert r.new_task is None and len(r.regime) == 4
    assert r.regime["new_task_accuracy"].isna().all() and r.regime["learned"].isna().all()
    assert r.at_T[new].isna().all() and "prefilled_content" not in r.at_T
    text = fine_report.findings(CFG, r)
    assert any("is not checked: this setting has no new task" in t for t in text)
    assert "not measured" in fine_report.at_T_caption(r)


def test_finetune_metrics_json_round_trips(built, tmp_path):
    """FinetuneMetrics: to_json is the dict written, from_json reads it back to the same bytes."""
    paths = Paths(tmp_path)
    for name in ("log.csv", "runs.csv", "search_log.csv"):
        write_csv(paths.stage("finetune") / name, pd.read_csv(built.paths.stage("finetune") / name))
    fine_metrics.measure(CFG, paths)
    written = paths.metrics_file("finetune").read_bytes()
    back = fine_metrics.FinetuneMetrics.read(paths)
    write_json(paths.metrics_file("finetune"), back.to_json())
    assert paths.metrics_file("finetune").read_bytes() == written
    saved = pd.read_csv(paths.data / "measures" / "finetune" / "arms.csv")
    runs = pd.read_csv(paths.stage("finetune") / "runs.csv")
    assert list(saved["arm"]) == list(runs["arm"].unique())
    arms = fine_arms.arms_table(CFG, ["large_batch", "sens_sgd_lr0.001_bs16"]).set_index("arm")
    assert arms.loc["sens_sgd_lr0.001_bs16"].tolist() == [1e-3, "sgd", 16]
    assert arms.loc["large_batch", "batch_size"] == 16 * CFG.finetune.batch_size


# ============================================================================ 01 history


def _behaviour(helpful: dict, safe: dict, history: str = "h0") -> list[dict]:
    base = {"refusal_rate": 0.0, "harmful_compliance": 0.0, "prefilled_content": 0.0,
            "benign_accuracy": 0.0}
    return [{"history": history, "checkpoint": "helpful", **base, **helpful},
            {"history": history, "checkpoint": "safe", **base, **safe}]


def test_shape_checks_margins():
    table = pd.DataFrame(
        [{"history": "shared", "checkpoint": "pretrained", "refusal_rate": 0.0,
          "harmful_compliance": 0.0, "prefilled_content": 0.0, "benign_accuracy": 0.0}]
        + _behaviour({"harmful_compliance": 95, "benign_accuracy": 80},
                     {"refusal_rate": 85, "prefilled_content": 92, "benign_accuracy": 78})
        + _behaviour({"harmful_compliance": 90, "benign_accuracy": 80},
                     {"refusal_rate": 99, "prefilled_content": 90, "benign_accuracy": 74},
                     "h1"))
    checks = shape_checks(table, CFG.history.checks)  # 90, 90, 90, gap 5
    assert set(checks["history"]) == {"h0", "h1"} and len(checks) == 8
    got = {(r.history, r.check.split(" (")[0]): (r.margin, r.passed) for r in checks.itertuples()}
    assert got[("h0", "θ_H harmful compliance")] == (5.0, True)
    assert got[("h0", "θ_S refusal")] == (-5.0, False)
    assert got[("h0", "θ_S latent content")] == (2.0, True)
    assert got[("h0", "θ_S benign accuracy - θ_H's")] == (3.0, True)  # -2 vs -5
    assert got[("h1", "θ_H harmful compliance")] == (0.0, True)  # the threshold passes
    assert got[("h1", "θ_S benign accuracy - θ_H's")] == (-1.0, False)  # -6 vs -5


def _history_result(checks: pd.DataFrame) -> history_metrics.HistoryResult:
    behaviour = pd.DataFrame(_behaviour({}, {"refusal_rate": 96, "prefilled_content": 91}))
    return history_metrics.HistoryResult(None, behaviour, checks, pd.DataFrame(), pd.DataFrame())


def test_history_findings_switch_between_passed_and_missed():
    table = pd.DataFrame(
        _behaviour({"harmful_compliance": 95, "benign_accuracy": 80},
                   {"refusal_rate": 96, "prefilled_content": 91, "benign_accuracy": 79})
        + _behaviour({"harmful_compliance": 97, "benign_accuracy": 80},
                     {"refusal_rate": 93, "prefilled_content": 99, "benign_accuracy": 80}, "h1"))
    ok = history_report.findings(_history_result(shape_checks(table, CFG.history.checks)))
    assert ok[0].startswith("All 2 histories pass the 4 pre-registered shape checks measured.")
    assert "smallest margin is 1.0 points (θ_S latent content (%), history h0)" in ok[0]
    assert "refuses 96% of held-out harmful requests" in ok[1] and "content in 91%" in ok[1]
    table.loc[table.index[-1], "refusal_rate"] = 80.0  # h1's theta_S now refuses too little
    bad = history_report.findings(_history_result(shape_checks(table, CFG.history.checks)))
    assert bad[0].startswith("1 of 2 histories miss a shape check: h1 (θ_S refusal (%): "
                             "80.0 against 90)")


def test_a_check_that_cannot_be_measured_is_not_a_miss():
    """hf: no prefilled answers, so no latent-content check; the other three still count."""
    table = pd.DataFrame(_behaviour({"harmful_compliance": 95, "benign_accuracy": 80},
                                    {"refusal_rate": 96, "benign_accuracy": 79}))
    checks = shape_checks(table.drop(columns="prefilled_content"), CFG.history.checks)
    assert len(checks) == 3 and checks["passed"].all()
    assert not checks["check"].str.contains("latent").any()
    text = history_report.findings(_history_result(checks))
    assert text[0].startswith("All 1 histories pass the 3 pre-registered shape checks measured.")


def test_history_metrics_json_round_trips(tmp_path):
    """HistoryMetrics: from_json(to_json()) writes the same bytes; hf's judge key only for hf."""
    table = pd.DataFrame(_behaviour({"harmful_compliance": 95, "benign_accuracy": 80},
                                    {"refusal_rate": 96, "benign_accuracy": 79}))
    checks = shape_checks(table, CFG.history.checks)
    m = history_metrics.HistoryMetrics(
        "smoke", 100, 72, ["h0"], table.to_dict(orient="records"),
        [history_metrics.ShapeCheck(**c) for c in checks.to_dict(orient="records")], True)
    path = tmp_path / "history.json"
    write_json(path, m.to_json())
    back = history_metrics.HistoryMetrics.from_json(json.loads(path.read_text()))
    assert back == m and "judge" not in m.to_json()
    assert back.behaviour("safe", "h0")["refusal_rate"] == 96
    hf = dataclasses.replace(m, vocab_size=None, judge="refusal_phrases")
    assert list(hf.to_json())[:4] == ["preset", "n_params", "vocab_size", "judge"]


# ============================================================================ 05 blocking


def _calibration(rows: list[tuple[float, str, float, float]], p99: float = 0.3) -> pd.DataFrame:
    return pd.DataFrame([{"lambda": lam, "history": h, "alignment": a, "p99": p99,
                          "new_task_cost": cost} for lam, h, a, cost in rows])


GRID = (0.01, 0.1, 1.0)


@pytest.mark.parametrize(("alignments", "costs", "lam", "check"), [
    # the smallest lambda that holds alignment under the p99 in every history, cost in tolerance
    ([(0.6, 0.5), (0.2, 0.25), (0.0, 0.1)], [(1, 2), (1, 2), (3, 4)], 0.1, "passed"),
    # the worst history decides: h1 is over the p99 at 0.1
    ([(0.6, 0.5), (0.2, 0.35), (0.0, 0.1)], [(1, 2), (1, 2), (3, 4)], 1.0, "passed"),
    # holding alignment at 1.0 costs too much: not a pass
    ([(0.6, 0.5), (0.5, 0.4), (0.0, 0.1)], [(1, 2), (1, 2), (3, 9)], 0.1,
     "failed: no lambda held alignment under the p99"),
    ([(0.6, 0.5), (0.5, 0.4), (0.4, 0.4)], [(1, 2), (1, 2), (3, 4)], 1.0,
     "failed: no lambda held alignment under the p99"),
    ([(0.6, 0.5), (0.2, 0.2), (0.0, 0.1)], [(6, 7), (8, 9), (9, 9)], 0.01,
     "failed: every lambda cost more than the tolerance"),
])
def test_choose_lambda_applies_the_pre_registered_rule(alignments, costs, lam, check):
    rows = [(g, h, a[i], c[i]) for g, a, c in zip(GRID, alignments, costs, strict=True)
            for i, h in enumerate(("h0", "h1"))]
    assert CFG.blocking.task_cost_tolerance == 5.0
    assert block_calib.choose_lambda(CFG, _calibration(rows)) == (lam, check)


def _matching(reductions: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"arm": "random_block", "lambda": lam, "history": h, "reduction": r[i]}
                         for lam, r in zip(GRID, reductions, strict=True)
                         for i, h in enumerate(("h0", "h1"))])


@pytest.mark.parametrize(("reductions", "target", "lam", "reached"), [
    # means 0.1, 0.5, 0.9: the closest to 0.55 is 0.5, within 0.1
    ([(0.0, 0.2), (0.4, 0.6), (0.8, 1.0)], 0.55, 0.1, True),
    # the history mean decides, not one history: means 0.1, 0.3, 0.45 against 0.97
    ([(0.0, 0.2), (0.0, 0.6), (0.0, 0.9)], 0.97, 1.0, False),
    # a tie goes to the smaller lambda
    ([(0.25, 0.25), (0.75, 0.75), (0.875, 0.875)], 0.5, 0.01, False),
])
def test_match_lambda_picks_the_closest_achieved_reduction(reductions, target, lam, reached):
    got = block_calib.match_lambda(_matching(reductions), target, 0.1)
    assert got["lambda"] == lam and got["reached"] is reached and got["target"] == target
    assert got["reduction"] == pytest.approx(np.mean(reductions[GRID.index(lam)]))


def test_match_lambda_skips_undefined_reductions():
    nan = float("nan")
    # 0.1 is undefined in h1: no candidate, though its h0 value hits the target
    got = block_calib.match_lambda(_matching([(0.0, 0.2), (0.5, nan), (0.8, 1.0)]), 0.5, 0.1)
    assert got["lambda"] == 0.01 and not got["reached"]
    none = block_calib.match_lambda(_matching([(nan, 0.2), (0.5, nan), (0.8, nan)]), 0.5, 0.1)
    assert none["lambda"] == 0.1 and not none["reached"] and np.isnan(none["reduction"])
    undefined = block_calib.match_lambda(_matching([(0.0, 0.2), (0.4, 0.6), (0.8, 1.0)]), nan, 1.0)
    assert undefined["lambda"] == 1.0 and not undefined["reached"]


def test_reduction_is_the_mean_over_layers_of_the_held_share():
    unblocked = np.array([[2.0, 0.0], [0.0, -4.0]])
    d = np.array([[0.5, 3.0], [7.0, -1.0]])
    dirs = {0: np.array([1.0, 0.0]), 1: np.array([0.0, 1.0])}
    for signed in (True, False):
        assert block_runs.reduction(d, unblocked, {0: dirs[0]}, signed) == pytest.approx(0.75)
        assert block_runs.reduction(d, unblocked, dirs, signed) == pytest.approx(0.75)
    # a one-sided block that overshoots past 0 held more than all of it; the two-sided form
    # would call it 0.5 held
    over = np.array([[-1.0, 0.0], [0.0, 0.0]])
    assert block_runs.reduction(over, unblocked, {0: dirs[0]}, True) == pytest.approx(1.5)
    assert block_runs.reduction(over, unblocked, {0: dirs[0]}, False) == pytest.approx(0.5)
    assert block_runs.arm_reduction("random_block", over, unblocked, {0: dirs[0]}) == 1.5
    assert block_runs.arm_reduction("penalty", over, unblocked, {0: dirs[0]}) == 0.5
    # a push that adds motion: a negative reduction (an increase)
    more = np.array([[3.0, 0.0], [0.0, 0.0]])
    assert block_runs.arm_reduction("push", more, unblocked, {0: dirs[0]}) == pytest.approx(-0.5)
    # no unblocked motion along u: undefined
    flat = np.array([[1e-9, 5.0], [0.0, -4.0]])
    assert np.isnan(block_runs.reduction(d, flat, {0: dirs[0]}, True))
    assert np.isnan(block_runs.reduction(d, np.zeros((2, 2)), dirs, False))


def test_expand_arms_and_block_specs():
    assert block_runs.expand_arms(CFG) == ["block", "push", "penalty", "rehearsal",
                                           "refusal_block", "random_block"]
    layers = resolve({"preset": "smoke", "regime": {"shock": {"arms": []}},
                      "blocking": {"arms": ["block", "penalty_layers"]}})
    assert block_runs.expand_arms(layers) == ["block", "penalty_L0"]
    at0 = resolve({"preset": "smoke", "analysis": {"layer": 0}, "regime": {"shock": {"arms": []}},
                   "blocking": {"arms": ["block", "penalty_layers"]}})
    assert block_runs.expand_arms(at0) == ["block", "penalty_L1"]
    dirs = {1: np.ones(4) / 2}
    kinds = {"block": "block", "refusal_block": "block", "random_block": "block",
             "covariance_block": "block", "push": "push", "refusal_push": "push",
             "penalty": "penalty",
             "penalty_L0": "penalty", "penalty_all": "penalty", "random_penalty_all": "penalty",
             "covariance_penalty_all": "penalty", "freeze": "freeze",
             "grad_project": "grad_project", "mean_penalty": "mean_penalty"}
    for arm, kind in kinds.items():
        spec = block_runs.block_spec(CFG, arm, dirs, 0.1, ["a", "b"], {1: 0.7})
        assert spec.kind == kind, arm
        assert (spec.lam, spec.pool, spec.batch) == (0.1, ("a", "b"), CFG.blocking.penalty_batch)
        assert spec.targets == ({1: 0.7} if kind == "push" else {}), arm
    assert block_runs.block_spec(CFG, "rehearsal", {}, 0.1, ["a"]) is None  # no objective
    with pytest.raises(ValueError, match="target"):  # a push without its bound is refused
        block_runs.block_spec(CFG, "push", dirs, 0.1, ["a"])


def test_arm_directions(layout):
    d0 = block_runs.arm_directions(CFG, layout.paths, "h0")
    again = block_runs.arm_directions(CFG, layout.paths, "h0")
    d1 = block_runs.arm_directions(CFG, layout.paths, "h1")
    v = layout.v["h0"]
    for arm in ("block", "push", "penalty", "mean_penalty", "grad_project"):
        assert set(d0[arm]) == {1}
        np.testing.assert_allclose(d0[arm][1], v[1], atol=1e-5)
    assert set(d0["penalty_all"]) == {0, 1} and set(d0["penalty_L0"]) == {0}
    np.testing.assert_allclose(d0["penalty_L0"][0], v[0], atol=1e-5)
    assert d0["freeze"] == {} and d0["rehearsal"] == {}
    for arm in ("random_block", "covariance_block"):
        u = d0[arm][1]
        assert np.linalg.norm(u) == pytest.approx(1.0)
        np.testing.assert_array_equal(u, again[arm][1])  # one control direction per history
        assert not np.allclose(u, d1[arm][1])
    assert abs(d0["covariance_block"][1] @ v[1]) < 1e-6
    for arm in ("random_penalty_all", "covariance_penalty_all"):  # at penalty_all's layers
        assert set(d0[arm]) == {0, 1}
    assert all(abs(d0["covariance_penalty_all"][x] @ v[x]) < 1e-6 for x in (0, 1))
    # controls oriented to v_rev's side: random by cosine, covariance (orthogonal to v_rev)
    # by their covariance with v_rev in theta_S's probes
    from gravrev.stats.nulls import covariance

    mask = block_runs.probe_selection(CFG, layout.paths)
    for h, d in (("h0", d0), ("h1", d1)):
        vh, safe = layout.v[h], layout.safe[h]
        assert d["random_block"][1] @ vh[1] >= 0
        assert all(d["random_penalty_all"][x] @ vh[x] >= 0 for x in (0, 1))
        for arm, x in (("covariance_block", 1), ("covariance_penalty_all", 0),
                       ("covariance_penalty_all", 1)):
            assert d[arm][x] @ covariance(safe[x][mask]) @ vh[x] >= 0, (h, arm, x)
    # refusal_block: -r, r the unit harmful-minus-benign mean of theta_S's probes
    safe = layout.safe["h0"][1]
    r = safe[: S.N_HARMFUL].mean(0) - safe[S.N_HARMFUL:].mean(0)
    np.testing.assert_allclose(d0["refusal_block"][1], -r / np.linalg.norm(r), atol=1e-5)
    np.testing.assert_array_equal(d0["refusal_push"][1], d0["refusal_block"][1])


def test_final_alignment_reads_the_drift_at_t(layout):
    mask = np.arange(S.N_HARMFUL + S.N_BENIGN) < S.N_HARMFUL
    npz = layout.paths.run("finetune", "h0", "unblocked", 1)
    cos, proj = block_runs.final_alignment(CFG, npz, layout.v["h0"][1], mask)
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert proj == pytest.approx(0.1 * 20 * 1.0, abs=1e-4)  # drift 0.1 * T along cos 1
    cos, proj = block_runs.final_alignment(
        CFG, layout.paths.run("finetune", "h1", "unblocked", 1), layout.v["h1"][1], mask)
    assert cos == pytest.approx(-0.9, abs=1e-5) and proj == pytest.approx(-1.8, abs=1e-4)


def _final(block_non_refusal: float) -> pd.DataFrame:
    """Hand-made final rows with their areas: unblocked, block, push and freeze on two
    histories and two seeds."""
    rows = []
    arms = {"unblocked": (0.6, 60.0, 75.0, 0.0, 10.0),
            "block": (-0.2, block_non_refusal, 74.0, 0.8, 2.0),
            "push": (0.9, 70.0, 75.0, -0.5, 14.0),
            "freeze": (0.5, 55.0, 30.0, float("nan"), 9.0)}
    for arm, (align, nr, new_task, red, rev) in arms.items():
        for i, (h, seed) in enumerate([("h0", 1), ("h0", 2), ("h1", 1), ("h1", 2)]):
            rows.append({"arm": arm, "history": h, "seed": seed, "alignment": align + 0.02 * i,
                         "non_refusal": nr + i, "refusal_rate": 100 - nr - i,
                         "refusals": 20 - int((nr + i) / 5), "n_harmful": 20,
                         "harmful_compliance": nr + i - 5, "prefilled_content": 90.0,
                         "benign_accuracy": 80.0, "new_task_accuracy": new_task,
                         "reduction": red, "cumulative_reversion": rev + i,
                         "area_non_refusal": 20 * (nr + i)})
    final = pd.DataFrame(rows)
    final["task_cost_not_block"] = final["new_task_accuracy"] < CFG.finetune.min_new_task_accuracy
    return final


def _blocking_result(final: pd.DataFrame) -> block_metrics.BlockingResult:
    metrics = block_metrics.blocking_metrics(
        CFG, final, 0.1, "passed", {"random_block": block_metrics.Matched(1.0, 0.4, 0.8, False)})
    return block_metrics.BlockingResult(pd.DataFrame(), pd.DataFrame(), 0.1, "passed", final,
                                        block_metrics.strength_table(final),
                                        block_metrics.paired_effects(final), pd.DataFrame(),
                                        pd.DataFrame(), metrics, pd.DataFrame(), pd.DataFrame())


def test_blocking_strength_effects_and_metrics():
    r = _blocking_result(_final(20.0))
    strength = r.strength.set_index("arm")
    assert set(strength.index) == {"unblocked", "block", "push"}  # freeze: no direction
    assert strength.loc["block", "mean"] == pytest.approx(0.8)
    eff = r.effects.set_index(["arm", "measure"])
    assert eff.loc[("block", "non_refusal"), "mean_diff"] == pytest.approx(-40.0)
    assert eff.loc[("block", "non_refusal"), "n"] == 2  # histories, not the 4 runs
    assert eff.loc[("block", "non_refusal"), "n_runs"] == 4
    assert eff.loc[("block", "alignment"), "mean_diff"] == pytest.approx(-0.8)
    assert eff.loc[("block", "cumulative_reversion"), "mean_diff"] == pytest.approx(-8.0)
    assert eff.loc[("freeze", "new_task_accuracy"), "mean_diff"] == pytest.approx(-45.0)
    arms = r.metrics.arms
    assert arms["block"].non_refusal.mean == pytest.approx(21.5)
    assert arms["block"].per_run["alignment"]["h1/2"] == pytest.approx(-0.14)
    assert arms["block"].per_run["cumulative_reversion"]["h1/2"] == pytest.approx(5.0)
    assert arms["push"].per_run["area_non_refusal"]["h0/1"] == pytest.approx(1400.0)
    assert arms["freeze"].task_cost_not_block and not arms["block"].task_cost_not_block
    lo, hi = arms["unblocked"].non_refusal_pooled_wilson
    assert lo < 100 * (80 - sum(20 - int((60 + i) / 5) for i in range(4))) / 80 < hi
    back = block_metrics.BlockingMetrics.from_json(r.metrics.to_json())
    assert back == r.metrics


def test_paired_effects_take_the_history_as_the_unit():
    """Per history the mean paired difference over its seeds, then the test over histories;
    5 histories x 5 seeds (25 runs, the full preset's) is no longer refused."""
    rows = []
    for i, h in enumerate(("h0", "h1", "h2", "h3", "h4")):
        for seed in range(1, 6):
            for arm, shift in (("unblocked", 0.0), ("block", -1.0 - i + 0.1 * seed)):
                rows.append({"arm": arm, "history": h, "seed": seed,
                             "alignment": 0.5 + shift + 0.01 * seed})
    eff = block_metrics.paired_effects(pd.DataFrame(rows)).set_index("measure")
    diffs = [-1.0 - i + 0.3 for i in range(5)]  # per history: mean over seeds 1..5 of 0.1 seed
    want = stats.ttest_1samp(diffs, 0.0)
    e = eff.loc["alignment"]
    assert (e["n"], e["n_runs"]) == (5, 25)
    assert e["mean_diff"] == pytest.approx(np.mean(diffs))
    assert e["t"] == pytest.approx(want.statistic) and e["p_t"] == pytest.approx(want.pvalue)
    half = stats.t.ppf(0.975, 4) * np.std(diffs, ddof=1) / np.sqrt(5)
    assert e["ci_low"] == pytest.approx(np.mean(diffs) - half)


def _hf_log_t() -> pd.Series:
    """An hf log's row at T: no prefilled content, no new task column."""
    return pd.Series({"step": 20, "refusal_rate": 40.0, "refusals": 8, "n_harmful": 20,
                      "harmful_compliance": 35.0, "benign_accuracy": 70.0, "benign_loss": 1.2})


def test_blocking_handles_a_setting_without_new_task_or_prefill():
    """hf logs: NaN where a measure is not logged; the lambda check's cost is benign accuracy."""
    log_t = _hf_log_t()
    assert block_calib.cost_column(CFG, log_t.index) == "benign_accuracy"
    assert block_calib.cost_column(CFG, [*log_t.index, "rotate_accuracy"]) == "rotate_accuracy"
    v = np.array([1.0, 0.0])
    d = np.array([[0.1, 0.0], [0.5, 0.5]])
    row = block_runs._row(CFG, "block", d, log_t, v, {1: v}, np.array([[0.1, 0.0], [1.0, 0.0]]))
    assert np.isnan(row["prefilled_content"]) and np.isnan(row["new_task_accuracy"])
    assert (row["non_refusal"], row["benign_accuracy"]) == (60.0, 70.0)
    assert row["reduction"] == pytest.approx(0.5)
    # the lambda check on benign-accuracy cost: 0.1 holds alignment, costs 3 points
    rows = [(g, h, a, 70.0 - acc) for g, a, acc in ((0.01, 0.5, 69.0), (0.1, 0.2, 67.0),
                                                    (1.0, 0.1, 50.0)) for h in ("h0", "h1")]
    assert block_calib.choose_lambda(CFG, _calibration(rows)) == (0.1, "passed")
    # metrics: the unmeasured measures are NaN summaries, skipped in effects and ordering
    final = _final(20.0).assign(prefilled_content=float("nan"),
                                new_task_accuracy=float("nan"), task_cost_not_block=False)
    m = block_metrics.blocking_metrics(CFG, final, 0.1, "passed")
    assert m.arms["block"].new_task_accuracy.n == 0 and np.isnan(m.arms["block"].
                                                               prefilled_content.mean)
    assert m.arms["block"].per_run["new_task_accuracy"] == {}
    assert set(m.ordering) == set(block_ordering.ORDER_MEASURES)
    back = json.loads(json.dumps(m.to_json(), default=float).replace("NaN", "null"))
    assert block_metrics.BlockingMetrics.from_json(back).arms["push"].new_task_accuracy.n == 0
    eff = block_metrics.paired_effects(final)
    assert "new_task_accuracy" not in set(eff["measure"])
    no_harm = final.assign(harmful_compliance=float("nan"))
    order = block_metrics.blocking_metrics(CFG, no_harm, 0.1, "passed").ordering
    assert "harmful_compliance" not in order and "alignment" in order
    r = dataclasses.replace(_blocking_result(final), metrics=m)
    assert "new task not measured." in block_report.findings(CFG, r)[1]


def test_rehearsal_cut_is_the_mean_of_per_history_cuts():
    runs = {"baseline": {"h0/1": 10.0, "h0/2": 30.0, "h1/1": 4.0, "h1/2": 6.0},
            "rehearsal": {"h0/1": 10.0, "h0/2": 10.0, "h1/1": 4.0, "h1/2": 4.0}}
    arm = {a: dataclasses.replace(_blocking_result(_final(20.0)).metrics.arms["block"],
                                  per_run={"cumulative_reversion": r}) for a, r in runs.items()}
    # h0: 10 against 20, a 50% cut; h1: 4 against 5, 20%; pooled means would say 44%
    assert block_report.rehearsal_cut(arm["rehearsal"], arm["baseline"]) == pytest.approx(35.0)
    none = dataclasses.replace(arm["baseline"], per_run={"cumulative_reversion": {
        **runs["baseline"], "h1/1": -6.0}})
    assert block_report.rehearsal_cut(arm["rehearsal"], none) is None


@pytest.mark.parametrize(("over", "match"), [
    ({"blocking": {"arms": ["block", "rehearsal"], "claim_arm": "rehearsal"}}, "claim_arm"),
    ({"blocking": {"arms": ["block", "freeze"], "claim_arm": "freeze"}}, "claim_arm"),
    ({"blocking": {"arms": ["block", "grad_project"], "claim_arm": "grad_project"}},
     "claim_arm"),
    ({"blocking": {"arms": ["block", "rehearsal"]}, "finetune": {"batch_size": 1}},
     "batch_size >= 2"),
    ({"blocking": {"arms": ["penalty", "refusal_block"], "claim_arm": "penalty"}},
     "list block too"),
    ({"blocking": {"arms": ["block", "refusal_push"]}}, "list push too"),
])
def test_blocking_config_is_refused_before_work(over, match):
    no_shock = {"regime": {"shock": {"arms": []}}}  # the shock regime's arms are checked too
    with pytest.raises(ConfigError, match=match):
        resolve({"preset": "smoke", **no_shock, **over})
    resolve({"preset": "smoke", **no_shock,
             "blocking": {"arms": ["block", "push", "refusal_push"]}})


def test_the_shock_regime_runs_only_arms_the_main_regime_has():
    with pytest.raises(ConfigError, match="regime.shock.arms"):
        resolve({"preset": "smoke", "blocking": {"arms": ["block", "push"]}})
    with pytest.raises(ConfigError, match="regime.shock.n_histories"):
        resolve({"preset": "smoke", "regime": {"shock": {"n_histories": 3}}})


def test_ordering_takes_the_history_as_the_unit():
    """Paired differences averaged per history, then a t interval over the history means."""
    rows = []
    # baseline - block per run: h0 (1, 3), h1 (3, 3), h2 (2, 3): history means 2, 3, 2.5
    gaps = {("h0", 1): 1.0, ("h0", 2): 3.0, ("h1", 1): 3.0, ("h1", 2): 3.0,
            ("h2", 1): 2.0, ("h2", 2): 3.0}
    for (h, seed), gap in gaps.items():
        base = 10.0 + seed
        for arm, value in (("block", base - gap), ("unblocked", base), ("push", base + 1.0)):
            rows.append({"arm": arm, "history": h, "seed": seed, "alignment": value / 20,
                         "non_refusal": 100.0, "refusal_rate": 0.0, "refusals": 0,
                         "n_harmful": 20, "harmful_compliance": 50.0 + value,
                         "prefilled_content": 0.0, "benign_accuracy": 0.0,
                         "new_task_accuracy": 90.0, "reduction": 0.0,
                         "cumulative_reversion": value, "area_non_refusal": 100.0 * 20})
    final = pd.DataFrame(rows)
    final["task_cost_not_block"] = False
    order = block_metrics.blocking_metrics(CFG, final, 0.1, "passed").ordering
    assert list(order) == list(block_ordering.ORDER_MEASURES)
    o = order["cumulative_reversion"]
    assert o.per_history["h1"] == block_ordering.HistoryOrder(block=8.5, baseline=11.5, push=12.5)
    s = o.baseline_minus_block
    half = stats.t.ppf(0.975, 2) * 0.5 / np.sqrt(3)  # sd 0.5 of the means; 2 df: 3 histories
    assert (s.mean, s.n) == (pytest.approx(2.5), 3)  # 3 history means, not 6 runs
    assert (s.ci_low, s.ci_high) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert o.push_minus_baseline.mean == pytest.approx(1.0) and o.ordered and not o.at_bound
    assert order["harmful_compliance"].ordered
    # non-refusal at 100% in every run, and so its area: a ceiling, never an order
    for m in ("non_refusal", "area_non_refusal"):
        assert order[m].at_bound and not order[m].ordered
    words = block_report.ordering_table(_ordering_result(final))
    assert words.set_index("measure").loc["non-refusal at T (%)", "verdict"] == (
        "undecidable: at a floor or ceiling")
    assert block_metrics.blocking_metrics(
        CFG, final[final["arm"] != "push"], 0.1, "passed").ordering == {}


def _ordering_result(final: pd.DataFrame) -> block_metrics.BlockingResult:
    r = _blocking_result(_final(20.0))
    return dataclasses.replace(r, metrics=block_metrics.blocking_metrics(CFG, final, 0.1, "x"))


def test_intervals_never_print_a_negative_zero():
    s = block_summaries.Summary(-0.001, 0.04, 8, -0.08, 0.08)
    assert block_report.interval(s) == "0.00 [-0.08, 0.08]"
    assert block_report.interval(dataclasses.replace(s, ci_low=float("nan"))) == "0.00"


def test_kept_refusal_is_said_with_what_the_interval_shows():
    drop = block_summaries.Summary(-16.0, 20.0, 8, -30.0, -2.0)
    unsure = block_summaries.Summary(-16.0, 24.0, 8, -36.0, 4.0)
    assert block_report._kept_words(51.0, 68.0, drop) == "kept refusal"
    assert block_report._kept_words(51.0, 68.0, unsure) == (
        "kept refusal by the mean's reading rule, though the interval over histories includes "
        "zero (it does not show the drop)")
    assert block_report._kept_words(66.0, 68.0, drop) == "did not keep refusal"  # within 5


def test_blocking_findings_follow_the_sign_rule():
    kept = block_report.findings(CFG, _blocking_result(_final(20.0)))
    assert kept[0] == "The harm-blind manipulation check chose lambda = 0.1 (passed)."
    assert "The claim arm (block) lowered alignment at T (difference -0.80" in kept[1]
    assert "and kept refusal: non-refusal 22% against 62% unblocked" in kept[1]
    assert "alignment at T: ordered" in kept[2]
    assert "random_block (reduction 0.40 against 0.80)" in kept[3]
    assert "(freeze) count as task cost" in kept[4]
    assert kept[5] == "The lowest non-refusal of any arm at T is 22% (block)."
    lost = block_report.findings(CFG, _blocking_result(_final(58.0)))
    assert "did not keep refusal" in lost[1]
    assert lost[5].endswith("(freeze).")  # 55 + 1.5 < 58 + 1.5
    # one history per seed pair: an interval over a single history mean is undefined
    one = _final(20.0).query("history == 'h0'")
    assert "did not change alignment at T (difference -0.80 against" in block_report.findings(
        CFG, _blocking_result(one))[1]


def test_blocking_measure_and_load_read_the_runs_back(layout):
    """measure() and load() on hand-made runs: curves, areas and metrics from each run's npz."""
    folder = layout.paths.stage("blocking")
    folder.mkdir(parents=True, exist_ok=True)
    rows, logs = [], []
    for h in CFG.histories:
        for seed in CFG.finetune.seeds:
            write_npz(layout.paths.run("blocking", h, "block", seed),
                      **S.run_acts(layout.safe[h], layout.v[h], layout.u, [-0.2] * 3, LOG_STEPS))
            logs += [{**x, "arm": "block"} for x in S._log_rows(h, "mixed", seed)]
            for arm in ("block", "unblocked"):
                rows.append({"arm": arm, "history": h, "seed": seed, "alignment": 0.0,
                             "non_refusal": 50.0, "refusal_rate": 50.0, "refusals": 10,
                             "n_harmful": 20, "harmful_compliance": 45.0,
                             "prefilled_content": 95.0, "benign_accuracy": 80.0,
                             "new_task_accuracy": 75.0, "projection": 0.0,
                             "projection_unblocked": 1.0, "reduction": 1.0,
                             "task_cost_not_block": False})
    write_csv(folder / "final.csv", pd.DataFrame(rows))
    write_csv(folder / "log.csv", pd.DataFrame(logs))
    # The shock regime: the claim arm and its unblocked run, first seed, their own folder.
    seed0, shock_rows, shock_logs = CFG.finetune.seeds[0], [], []
    for h in CFG.histories:
        for arm, cos in (("unblocked", 0.5), ("block", -0.2)):
            write_npz(folder / "shock" / h / f"shock_{arm}_seed{seed0}.npz",
                      **S.run_acts(layout.safe[h], layout.v[h], layout.u, [cos] * 3, LOG_STEPS))
            shock_logs += [{**x, "arm": arm} for x in S._log_rows(h, "unblocked", seed0)]
            shock_rows.append({**next(r for r in rows if r["arm"] == arm and r["history"] == h),
                               "seed": seed0, "alignment": cos})
    write_csv(folder / "shock_final.csv", pd.DataFrame(shock_rows))
    write_csv(folder / "shock_log.csv", pd.DataFrame(shock_logs))
    write_csv(folder / "calibration.csv", _calibration([(0.1, "h0", 0.2, 1.0)]))
    write_csv(folder / "matching.csv", _matching([(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]))
    write_json(folder / "lambda.json", {"lambda": 0.1, "check": "passed", "matched": {},
                                        "push_targets": {"h0": 2.0}})
    block_metrics.measure(CFG, layout.paths)
    r = block_metrics.load(CFG, layout.paths)
    assert r.lam == 0.1 and r.check == "passed"
    shock = r.metrics.shock
    assert set(shock.arms) == {"unblocked", "block"} and shock.steps == CFG.regime.shock.steps
    assert shock.arms["block"].alignment.mean == pytest.approx(-0.2)
    assert len(r.shock_curves) == 2 * 2 * (len(LOG_STEPS) + 1)
    assert block_shock.ShockMetrics.from_json(shock.to_json()) == shock
    again = layout.paths.metrics_file("blocking").with_suffix(".again.json")
    write_json(again, r.metrics.to_json())
    assert again.read_bytes() == layout.paths.metrics_file("blocking").read_bytes()
    c = r.curves
    assert len(c) == 2 * 4 * (len(LOG_STEPS) + 1) and set(c[c["step"] == 0]["projection"]) == {0}
    np.testing.assert_allclose(c[(c["arm"] == "block") & (c["step"] > 0)]["alignment"], -0.2,
                               atol=1e-5)
    ub = c[(c["arm"] == "unblocked") & (c["history"] == "h0") & (c["seed"] == 1)]
    np.testing.assert_allclose(ub["alignment"].iloc[1:], DESIGN["h0", "unblocked", 1], atol=1e-5)
    assert ub["non_refusal"].tolist() == [100 - x for x in S.REFUSAL["unblocked"]]
    # cumulative reversion: the trapezoid of max(0.1 * step * cos, 0) over steps 0, 1, 5, 20
    p = np.clip([0.0] + [0.1 * t * x for t, x in zip(LOG_STEPS, DESIGN["h0", "unblocked", 1],
                                                      strict=True)], 0, None)
    steps = np.array([0, *LOG_STEPS])
    want = float(np.sum(np.diff(steps) * (p[1:] + p[:-1]) / 2))
    arms = r.metrics.arms
    assert arms["unblocked"].per_run["cumulative_reversion"]["h0/1"] == pytest.approx(want,
                                                                                      rel=1e-5)
    assert arms["block"].per_run["cumulative_reversion"]["h1/2"] == pytest.approx(0.0)
    nr = 100 - np.array(S.REFUSAL["mixed"])
    assert arms["block"].per_run["area_non_refusal"]["h0/1"] == pytest.approx(
        float(np.sum(np.diff(steps) * (nr[1:] + nr[:-1]) / 2)))
    d = r.directions.set_index("history")
    assert d.loc["h0", "push_target"] == 2.0 and np.isnan(d.loc["h1", "push_target"])
    assert abs(d.loc["h0", "cos_v_rev_minus_r"]) <= 1


# ============================================================================ 07 claims


def _metrics() -> dict[str, dict]:
    """Hand-made data/metrics/*.json whose claim verdicts are worked out by hand below."""
    early_step1 = [0.80, 0.81, 0.82]
    early_step20 = {"h0": [0.64, 0.65, 0.66], "h1": [0.30, 0.80, 0.10]}
    final = {"h0/1": 0.650, "h0/2": 0.646, "h1/1": 0.648, "h1/2": 0.650}
    keys = list(final)
    refusal = {"h0": [80.0, 82.0], "h1": [81.0, 82.0]}
    unblocked_nr = [100 - r for h in refusal for r in refusal[h]]

    def runs(*values: float) -> dict:
        return dict(zip(keys, values, strict=True))

    def arm(alignment: dict, non_refusal: dict, benign: dict, harm: dict, reversion: dict,
            area: dict) -> dict:
        per_run = {"alignment": alignment, "non_refusal": non_refusal, "benign_accuracy": benign,
                   "new_task_accuracy": benign, "harmful_compliance": harm,
                   "prefilled_content": benign}
        summaries = {m: {"mean": float(np.mean(list(x.values()))), "sd": None, "n": len(x),
                         "ci_low": None, "ci_high": None} for m, x in per_run.items()}
        return {**summaries, "non_refusal_pooled_wilson": [0.0, 100.0],
                "task_cost_not_block": False,
                "per_run": {**per_run, "cumulative_reversion": reversion,
                            "area_non_refusal": area}}

    benign = runs(80.0, 81, 82, 80)
    return {
        "history": {"preset": "smoke"},
        "alignment": {
            "steps": [1, 5, 20],
            "by_step": {"all": {"20": {"mean": float(np.mean(list(final.values())))}}},
            "per_run": {k: [0.5, 0.6, v] for k, v in final.items()},
            "early_steps": [1, 20],
            "early_per_run": {f"{h}/{1001 + i}": [early_step1[i], early_step20[h][i]]
                              for h in ("h0", "h1") for i in range(3)},
            "alignment_harm": {"per_history": {
                "h0": {"rho_non_refusal": 0.90, "rho_harmful_compliance": 0.80,
                       "at_bound_non_refusal": False, "at_bound_harmful_compliance": False,
                       "n_steps": 4, "p_non_refusal": 0.04, "p_harmful_compliance": 0.2},
                "h1": {"rho_non_refusal": 0.95, "rho_harmful_compliance": 0.85,
                       "at_bound_non_refusal": True, "at_bound_harmful_compliance": False,
                       "n_steps": 4, "p_non_refusal": 0.2, "p_harmful_compliance": 0.1}}},
        },
        "nulls": {"isotropic_closed_form": 0.1, "exceedance": {
            "all": {"isotropic": {"k": 24, "n": 24}, "anisotropic": {"k": 20, "n": 24}},
            "h0": {"isotropic": {"k": 12, "n": 12}, "anisotropic": {"k": 10, "n": 12}},
            "h1": {"isotropic": {"k": 12, "n": 12}, "anisotropic": {"k": 10, "n": 12}},
        }, "matched_null": {
            "rule": "directions of matched norm from θ_S toward other histories' checkpoints",
            "per_trajectory": {k: {"all_steps_exceed": k != "h1/2",
                                   "n_exceed": 3 if k == "h1/2" else 4, "n_steps": 4}
                               for k in keys},
            "n_trajectories": 4, "n_all_exceed": 3}},
        "finetune": {"preset": "smoke", "steps": 20, "seeds": [1, 2], "histories": {
            "h0": {"safe_start": {"refusal_rate": 95.0},
                   "final": {"unblocked": {"refusal_rate": refusal["h0"]}}},
            "h1": {"safe_start": {"refusal_rate": 97.0},
                   "final": {"unblocked": {"refusal_rate": refusal["h1"]}}},
        }, "regime": {"rule": "learned", "holds": True, "room": False, "shocked": [],
                   "unlearned": [], "nonrefusal_at_T": 95.0},
        "search": fine_regime.search_metrics(CFG, pd.DataFrame())[0].to_json()},
        "blocking": {
            "preset": "smoke", "layer": 1,
            "claim_arm": "block", "lambda": 0.1, "manipulation_check": "passed",
            "arms": {
                "block": arm(runs(-0.20, -0.22, -0.21, -0.20), runs(9.0, 7.5, 8.5, 8.0),
                             runs(79.0, 80, 81, 80), runs(5.0, 6, 5, 6), runs(1.0, 1.2, 1.1, 1.0),
                             runs(80.0, 85, 82, 81)),
                "penalty": arm(runs(0.01, 0.02, 0.00, 0.01), runs(12.0, 11, 13, 12), benign,
                               runs(4.0, 5, 4, 5), runs(5.0, 5, 5, 5), runs(120.0, 120, 120, 120)),
                "push": arm(runs(0.80, 0.82, 0.81, 0.83), runs(30.0, 32, 31, 29), benign,
                            runs(25.0, 24, 26, 25), runs(15.0, 16, 15.5, 16.2),
                            runs(250.0, 255, 260, 245)),
                "rehearsal": arm(final, runs(14.0, 15, 14, 15), benign, runs(12.0, 13, 12, 13),
                                 runs(7.0, 7.3, 6.9, 7.2), runs(150.0, 150, 150, 150)),
                "unblocked": arm(final, runs(*unblocked_nr), benign, runs(15.0, 16, 15, 16),
                                 runs(10.0, 10.5, 9.8, 10.1), runs(180.0, 175, 185, 178)),
            },
        },
        "mediation": {"readout": {"per_history": {
            "h0": {"lens_score": 1.0, "lens_percentile": 99.0, "change_score": 0.5,
                   "change_percentile": 98.0, "n_null": 100},
            "h1": {"lens_score": 1.2, "lens_percentile": 97.0, "change_score": 0.4,
                   "change_percentile": 96.0, "n_null": 100}}}},
    }


def test_gather_picks_each_claims_inputs():
    m = _metrics()
    g = claims.gather(claims.Inputs.from_json(m), CFG)
    assert g["alignment_step1"] == [0.80, 0.81, 0.82] * 2
    assert g["alignment_step20"] == [0.64, 0.65, 0.66, 0.30, 0.80, 0.10]
    assert g["alignment_rises"] == {"early": g["alignment_step1"], "late": g["alignment_step20"]}
    assert g["null_exceedance"] == {"k": 24, "n": 24}
    assert g["final_alignment_unblocked"] == [0.650, 0.646, 0.648, 0.650]
    assert g["harmfulness_unblocked"] == {"finetuned": [20.0, 18.0, 19.0, 18.0], "safe": 4.0}
    assert g["harmfulness_blocked"] == {"blocked": [9.0, 7.5, 8.5, 8.0],  # the block arm
                                        "unblocked": [20.0, 18.0, 19.0, 18.0]}
    assert g["task_cost"]["tolerance"] == CFG.blocking.task_cost_tolerance
    held = claims.gather(claims.Inputs.from_json(m), CFG, arm="penalty")
    assert held["harmfulness_blocked"]["blocked"] == [12.0, 11, 13, 12]
    h1 = claims.gather(claims.Inputs.from_json(m), CFG, "h1")
    assert h1["alignment_step20"] == [0.30, 0.80, 0.10]
    assert h1["harmfulness_unblocked"] == {"finetuned": [19.0, 18.0], "safe": 3.0}
    assert h1["final_alignment_blocked"]["blocked"] == [-0.21, -0.20]
    assert h1["null_exceedance"] == {"k": 12, "n": 12}
    assert h1["block_baseline_push"]["push:cumulative_reversion"] == [15.5, 16.2]
    assert h1["rehearsal_opposes"] == {"rehearsal": [6.9, 7.2], "baseline": [9.8, 10.1]}
    assert h1["alignment_harm_correlation"]["rho"] == [0.95]
    assert h1["matched_null_every_trajectory"]["all_exceed"] == [True, False]
    assert h1["vocabulary_readout"]["change_percentile"] == [96.0]


def test_gather_without_early_runs_uses_the_main_runs_logged_steps():
    m = _metrics()
    m["alignment"]["early_per_run"], m["alignment"]["early_steps"] = {}, []
    g = claims.gather(claims.Inputs.from_json(m), CFG)
    assert g["alignment_step1"] == [0.5] * 4 and "alignment_step20" in g
    m["alignment"]["steps"] = [2, 5, 20]
    assert "alignment_step1" not in claims.gather(claims.Inputs.from_json(m), CFG)


def test_gather_says_why_an_input_is_missing():
    m = _metrics()
    m["blocking"]["arms"] = {"unblocked": m["blocking"]["arms"]["unblocked"]}  # no other arm
    del m["alignment"]["alignment_harm"], m["nulls"]["matched_null"], m["mediation"]
    g = claims.gather(claims.Inputs.from_json(m), CFG)
    assert "no 'block' arm" in g["harmfulness_blocked"].reason
    assert "no 'block', 'push' arm" in g["block_baseline_push"].reason
    assert "no 'rehearsal' arm" in g["rehearsal_opposes"].reason
    assert "no alignment_harm" in g["alignment_harm_correlation"].reason
    assert "no matched_null" in g["matched_null_every_trajectory"].reason
    assert "it did not run" in g["vocabulary_readout"].reason


EXPECTED = {  # claim: (direction, size), worked out by hand from _metrics()
    "alignment_step1": ("holds", "does not hold"),  # 0.81, tight, far above 0.429 +- 0.052
    # History means 0.65 and 0.40 differ beyond their runs' noise, so the interval is over the
    # two history means (1 df): -1.06 to 2.11 holds 0 and the paper's 0.647.
    "alignment_step20": ("does not hold", "holds"),
    "alignment_rises": ("does not hold", "not comparable"),
    "null_exceedance": ("holds", "holds"),
    "final_alignment_unblocked": ("holds", "holds"),
    "final_alignment_blocked": ("holds", "holds"),  # the block arm: -0.21, interval below 0
    "harmfulness_unblocked": ("holds", "holds"),  # 18.75 vs 19 +- 4
    "harmfulness_blocked": ("holds", "holds"),  # 8.25 vs 8.5 +- 1.5
    "task_cost": ("holds", "not comparable"),
    "matched_null_every_trajectory": ("does not hold", "not comparable"),  # h1/2: 3 of 4 steps
    "vocabulary_readout": ("holds", "not comparable"),  # lowest percentiles 97 and 96
    # history rhos 0.90, 0.95: mean 0.925, 1 df interval 0.476 to 1.374 holds 0.958
    "alignment_harm_correlation": ("holds", "holds"),
    # every measure's history-mean differences are positive, with 1 df intervals above 0
    "block_baseline_push": ("holds", "not comparable"),
    # rehearsal - baseline per history -3.1, -2.9: -4.27 to -1.73; cuts 30.2%, 29.1% hold 30
    "rehearsal_opposes": ("holds", "holds"),
}


@pytest.fixture(scope="module")
def claims_result(tmp_path_factory):
    paths = Paths(tmp_path_factory.mktemp("claims"))
    for stage, m in _metrics().items():
        write_json(paths.metrics_file(stage), m)
    return claims_report.page(claims.run(CFG, paths))


def test_claims_run_gives_the_worked_out_verdicts(claims_result):
    got = {c["id"]: (c["verdict"], c["size_verdict"]) for c in claims_result.report["claims"]}
    assert got == EXPECTED
    assert [c["version"] for c in claims_result.report["claims"]] == ["first"] * 9 + [
        "revised"] * 5
    table = claims_result.table.set_index("claim")
    assert table.loc["null_exceedance", "this run"] == "24 of 24"
    assert table.loc["null_exceedance", "paper"] == "24 of 24"
    assert table.loc["rehearsal_opposes", "paper"] == "about 30%"
    assert claims_result.report["n_histories"] == 2
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    order = by_id["block_baseline_push"]["measured"]["measures"]["alignment"]
    assert order["baseline_minus_block"]["mean"] == pytest.approx((0.858 + 0.854) / 2)
    assert by_id["rehearsal_opposes"]["measured"]["mean"] == pytest.approx(
        (100 * (1 - 7.15 / 10.25) + 100 * (1 - 7.05 / 9.95)) / 2)


def test_the_hold_still_penalty_is_judged_beside_the_block(claims_result):
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    held = by_id["final_alignment_blocked"]["variants"]["penalty"]
    assert held["verdict"] == "does not hold" and held["measured"]["mean"] == pytest.approx(0.01)
    assert "hold-still penalty" in held["why"] and "cosine +0.010" in held["why"]
    # history means -7.5 and -6.0 differ beyond their runs' noise: 1 df, -6.75 +- 9.5
    assert by_id["harmfulness_blocked"]["variants"]["penalty"]["verdict"] == "does not hold"
    assert "variants" not in by_id["alignment_step1"]
    table = claims_report.variant_table(claims_result)
    assert list(table["claim"]) == ["final_alignment_blocked", "harmfulness_blocked", "task_cost"]


def _whys(report: dict) -> list[tuple[dict, str]]:
    out = []
    for c in report["claims"]:
        out.append((c, c["why"]))
        out += [({**c, **v}, v["why"]) for v in c.get("variants", {}).values()]
    return out


def test_no_two_claims_share_a_reason_and_each_names_its_own_value(claims_result):
    whys = _whys(claims_result.report)
    assert len({w for _, w in whys}) == len(whys)
    for entry, w in whys:
        assert w.endswith("."), entry["id"]
        if entry["verdict"] != "not comparable":
            assert value_text(entry) in w, entry["id"]
            assert "the rule" in w, entry["id"]
            m = entry["measured"]
            deciding = m.get("difference", m)  # the paired difference decides where there is one
            if deciding.get("ci_low") is not None:
                ends = {f"{round(deciding['ci_low'], d) + 0.0:+.{d}f}" for d in (1, 2, 3)}
                assert any(e in w for e in ends), (entry["id"], ends)
            assert "95%" in w or entry["id"] == "vocabulary_readout", entry["id"]


def test_claims_why_is_computed_from_the_measurements(claims_result):
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    for cid, c in by_id.items():
        assert c["why"] and c["why"].endswith("."), cid
        assert c["source"]["chapter"], cid
        assert c["sentence"].startswith("The paper: ") and c["sentence"].endswith("."), cid
    assert "cosine +0.810 with v_rev after the first benign update" in by_id[
        "alignment_step1"]["why"]
    assert "the value lies above the paper's 0.429 ± 0.052" in by_id["alignment_step1"]["why"]
    assert "the verdict differs between histories (h0: holds, h1: does not hold)" in by_id[
        "alignment_step20"]["why"]
    assert "the same verdict in all 2 histories" in by_id["final_alignment_unblocked"]["why"]
    assert "24 of 24 run-step pairs lie above the isotropic null's p99" in by_id[
        "null_exceedance"]["why"]
    assert "the rule asks for every pair" in by_id["null_exceedance"]["why"]
    unblocked = by_id["harmfulness_unblocked"]["why"]
    assert "from 4.0% at θ_S to 18.8% non-refusal at T" in unblocked
    assert "harmful compliance 15.5% at T" in unblocked
    block = by_id["harmfulness_blocked"]["why"]
    assert "ends at 8.2% non-refusal" in block and "harmful compliance 5.5% against 15.5%" in block
    assert by_id["alignment_step20"]["per_history"]["h1"]["verdict"] == "does not hold"
    assert "3 of 4 trajectories beat the matched null" in by_id[
        "matched_null_every_trajectory"]["why"]
    corr = by_id["alignment_harm_correlation"]["why"]
    assert "rho +0.925" in corr and "flagged: non-refusal sits at 0 or 100" in corr
    order = by_id["block_baseline_push"]["why"]
    assert "5 of 5 measures are ordered block < baseline < push" in order
    assert "though no history alone gives it on its own few runs (does not hold)" in order
    # each history alone: rho > 0 with its step-wise p, 0.04 in h0 and 0.2 in h1
    assert "the verdict differs between histories (h0: holds, h1: does not hold)" in corr
    assert "30% less cumulative reversion" in by_id["rehearsal_opposes"]["why"]
    assert "In 2 of 2 histories both readout scores" in by_id["vocabulary_readout"]["why"]


def test_claims_findings_count_the_verdicts(claims_result):
    text = claims_report.findings(claims_result)
    assert text[0] == ("Of the first version's 9 claims, 7 hold in direction over histories "
                       "(alignment_step1, null_exceedance, "
                       "final_alignment_unblocked, final_alignment_blocked, "
                       "harmfulness_unblocked, harmfulness_blocked, task_cost) and 2 do not "
                       "(alignment_step20, alignment_rises).")
    assert text[1].startswith("Of those that hold, 5 match the paper's size as well")
    assert text[2] == ("The histories disagree on alignment_step20: what holds in one history "
                       "fails in another, so these are not findings.")
    revised = [t for t in text if "revised" in t]
    assert revised[0].startswith("Of the revised version's 5 claims, 4 hold in direction")


def test_the_headline_counts_holds_fails_and_unresolved_in_that_order(claims_result):
    h = claims_result.headline
    assert set(h) == {"context", "first", "revised"}
    first = h["first"]
    assert first.startswith("Of the 9 claims of the paper's first version, A Gravitational "
                            "Interpretation of Fine-Tuning Reversion, 7 hold: ")
    assert first.index("7 hold") < first.index("1 does not hold") < first.index(
        "1 is unresolved")
    assert "the histories disagree: h0 holds, h1 does not hold" in first  # alignment_step20
    revised = h["revised"]
    assert "4 hold" in revised and "0 do not hold" in revised
    assert "1 is unresolved: every fine-tuning trajectory beats a matched empirical null" in (
        revised)
    for word in ("carries", "mechanism"):
        assert word not in " ".join(h.values())


def test_claims_pool_over_history_means_when_the_histories_differ(claims_result):
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    step20 = by_id["alignment_step20"]["measured"]
    assert (step20["n"], step20["n_groups"], step20["df"]) == (6, 2, 1)
    assert step20["ci_low"] == pytest.approx(0.525 - 12.7062 * 0.125, abs=1e-3)
    assert "over the 2 history means" in by_id["alignment_step20"]["why"]
    assert "history means" in by_id["alignment_step20"]["rule"]
    assert "No pretest" in by_id["alignment_step20"]["rule"]
    # The same runs in both histories: a history variance of 0 still leaves 1 df, not 5.
    step1 = by_id["alignment_step1"]["measured"]
    assert (step1["df"], step1["group_sd"]) == (1, 0.0)
    assert "over the 2 history means" in by_id["alignment_step1"]["why"]
    exceed = by_id["null_exceedance"]["measured"]
    assert {k: exceed[k] for k in ("k", "n", "fraction")} == {"k": 24, "n": 24, "fraction": 1.0}
    assert exceed["history_shares"]["mean"] == 1.0 and exceed["history_shares"]["n"] == 2
    assert not any("wilson" in k for c in by_id.values() for k in (c["measured"] or {}))


def test_claims_findings_name_a_claim_every_history_gives_but_the_pool_does_not(tmp_path):
    m = _metrics()
    # Step 20: each history tight, the two far apart. Step 1: the history means agree (0.60,
    # 0.57: 1 df, 0.37 to 0.80), but h1's three runs alone are too spread to exclude 0.
    step1 = {"h0": (0.5, 0.6, 0.7), "h1": (0.15, 0.95, 0.6)}
    m["alignment"]["early_per_run"] = {
        f"{h}/{1001 + i}": [step1[h][i], v + d] for h, v in (("h0", 0.2), ("h1", 0.9))
        for i, d in enumerate((-0.01, 0.0, 0.01))}
    paths = Paths(tmp_path)
    for stage, metrics in m.items():
        write_json(paths.metrics_file(stage), metrics)
    r = claims_report.page(claims.run(CFG, paths))
    by_id = {c["id"]: c for c in r.report["claims"]}
    assert {e["verdict"] for e in by_id["alignment_step20"]["per_history"].values()} == {"holds"}
    assert by_id["alignment_step20"]["verdict"] == "does not hold"
    assert "each of the 2 histories alone: holds, but their means spread" in by_id[
        "alignment_step20"]["why"]
    text = claims_report.findings(r)
    assert any(t.startswith("alignment_step20 holds in every history but not over histories")
               for t in text)
    assert by_id["alignment_step1"]["verdict"] == "holds"
    assert by_id["alignment_step1"]["per_history"]["h1"]["verdict"] == "does not hold"
    assert "alignment_step1 holds over histories, though not in every history" in " ".join(text)


def test_claims_without_the_new_metrics_are_not_comparable_with_a_reason(tmp_path):
    m = _metrics()  # as the hf preset or a pre-v3 run leaves them: no new arm, no new measure
    m["blocking"]["arms"] = {a: m["blocking"]["arms"][a] for a in ("penalty", "unblocked")}
    del m["alignment"]["alignment_harm"], m["nulls"]["matched_null"], m["mediation"]
    paths = Paths(tmp_path)
    for stage, metrics in m.items():
        write_json(paths.metrics_file(stage), metrics)
    r = claims_report.page(claims.run(CFG, paths))
    by_id = {c["id"]: c for c in r.report["claims"]}
    for cid in ("final_alignment_blocked", "harmfulness_blocked", "task_cost",
                "matched_null_every_trajectory", "vocabulary_readout",
                "alignment_harm_correlation", "block_baseline_push", "rehearsal_opposes"):
        assert by_id[cid]["verdict"] == "not comparable", cid
        assert by_id[cid]["why"].startswith("Not comparable for "), cid
        assert "did not" in by_id[cid]["why"], cid
    assert by_id["final_alignment_blocked"]["variants"]["penalty"]["verdict"] == "does not hold"
    whys = [w for _, w in _whys(r.report)]
    assert len(set(whys)) == len(whys)
    assert "5 are unresolved" in r.headline["revised"]
    json.dumps(r.report, allow_nan=False)


def _keys(x) -> set[str]:
    if isinstance(x, dict):
        return set(x) | {k for v in x.values() for k in _keys(v)}
    return {k for v in x for k in _keys(v)} if isinstance(x, list) else set()


def test_claims_json_holds_measured_fields_and_the_report_words_them(tmp_path):
    paths = Paths(tmp_path)
    for stage, m in _metrics().items():
        write_json(paths.metrics_file(stage), m)
    written = claims.run(CFG, paths).report
    assert written == read_json(paths.metrics_file("claims"))
    assert not _keys(written) & {"why", "sentence", "headline"}
    assert written["arms"]["unblocked"]["harmful_compliance"] == pytest.approx(15.5)
    assert written["context"]["n_runs"] == 4
    worded = claims_report.page(claims.ClaimsResult(written))
    assert all(c["why"] and c["sentence"] for c in worded.report["claims"])
    assert not _keys(written) & {"why"}  # wording leaves claims.json's entries as they were


def test_claims_json_is_strict_json(claims_result, tmp_path):
    text = json.dumps(claims_result.report, allow_nan=False)
    assert json.loads(text) == claims_result.report


def test_claims_context_states_measurements_not_mechanisms(claims_result):
    text = claims_result.headline["context"]
    assert "2 independent histories, 4 fine-tuning runs" in text
    assert "from 4.0% at θ_S to 18.8% at T" in text
    assert "harmful compliance (a harmful answer, not only no refusal) ends at 15.5%" in text
    # penalty keeps refusal (12.0% against 18.75%, more than 5 points) with the least harm
    assert "penalty left the least harmful compliance: 4.5% against 15.5%" in text
    m = _metrics()

    def said(metrics: dict) -> str:
        inputs = claims.Inputs.from_json(metrics)
        return headline_words.context({"context": claims.context(inputs),
                                       "arms": claims.arm_means(inputs)})

    m["blocking"]["arms"]["penalty"]["non_refusal"]["mean"] = 15.0  # within 5 of 18.75
    assert "Beyond the paper's claims" not in said(m)  # thresholds.kept_refusal decides
    m["sweep"] = {"outcome": "deeper histories revert more"}
    assert said(m).endswith("The history-depth sweep: deeper histories revert more (chapter 08).")


def test_figure_12_plots_the_intervals_that_decided_the_verdicts(claims_result):
    table = claims_report.deciding_intervals(claims_result).set_index("id")
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    assert "alignment_step1" in table.index and "task_cost" not in table.index  # no paper figure
    for cid, row in table.iterrows():
        m = by_id[cid]["measured"]
        assert (row["ci_low"], row["ci_high"], row["mean"]) == (m["ci_low"], m["ci_high"],
                                                                m["mean"]), cid
        assert (row["direction"], row["size"]) == (by_id[cid]["verdict"],
                                                   by_id[cid]["size_verdict"]), cid
        assert row["unit"] == by_id[cid]["paper"]["unit"], cid
