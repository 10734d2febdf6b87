"""Each stage on tiny hand-made inputs with known answers: no training anywhere in this file."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import stage_layout as S
from stage_layout import CFG, DESIGN, EARLY_STEPS, LOG_STEPS, SENS_ARM

from gravrev.config.load import resolve
from gravrev.organism.shape import shape_checks
from gravrev.runtime import seeds
from gravrev.stages.artifacts import load_v_rev
from gravrev.stages.blocking import metrics as block_metrics
from gravrev.stages.blocking import report as block_report
from gravrev.stages.blocking import runs as block_runs
from gravrev.stages.claims import compute as claims
from gravrev.stages.claims import report as claims_report
from gravrev.stages.finetune import arms as fine_arms
from gravrev.stages.finetune import metrics as fine_metrics
from gravrev.stages.finetune import report as fine_report
from gravrev.stages.finetune import runs as fine_runs
from gravrev.stages.history import metrics as history_metrics
from gravrev.stages.history import report as history_report
from gravrev.stages.nulls import compute as nulls
from gravrev.stages.nulls import report as nulls_report
from gravrev.stages.vrev import compute as vrev
from gravrev.stages.vrev import report as vrev_report
from gravrev.stats.nulls import isotropic_quantile
from gravrev.store.atomic import write_csv, write_json, write_npz
from gravrev.store.paths import Paths
from gravrev.training.objectives import BlockSpec
from gravrev.training.tasks import FinetuneOutput, FinetuneTask

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
    assert "over runs; by history h0 " in text[0] and ", h1 " in text[0]
    assert "At step 20, over 6 short runs, alignment is 0.90" in text[1]
    assert any("aligns at 0.50" in t for t in text)  # the large-batch run
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
    cfg = resolve({"preset": "smoke", "history": {"seeds": [0]},
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
        vrev.run(resolve({**{"preset": "smoke", "history": {"seeds": [0]}},
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
    one = resolve({"preset": "smoke", "history": {"seeds": [3]}})
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
                                            nulls_result.control_drift, bare))
    assert len(text) == 1 and text[0].startswith("6 of 12")


# ============================================================================ 02 finetune


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Stages 01-02's outputs alone, hand-made: all that the finetune stage's metrics read."""
    return S.build(tmp_path_factory.mktemp("built"))


def test_finetune_tasks_are_every_run_once_where_vrev_looks(tmp_path):
    paths = Paths(tmp_path)
    todo = fine_runs.tasks(CFG, paths, paths.stage("finetune"))
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
        "unblocked", "sens_adamw_lr0.001_bs16", "sens_sgd_lr0.001_bs16"}


def _finetune_result(built, cfg=CFG) -> fine_metrics.FinetuneResult:
    log = pd.read_csv(built.paths.stage("finetune") / "log.csv")
    runs = pd.read_csv(built.paths.stage("finetune") / "runs.csv")
    return fine_metrics.FinetuneResult(log, runs, fine_metrics.regime_table(cfg, log),
                                       fine_metrics.runs_at_T(cfg, log),
                                       fine_arms.arms_table(cfg, list(runs["arm"].unique())),
                                       fine_metrics.new_task_column(cfg, log))


def test_finetune_regime_metrics_and_findings(built):
    r = _finetune_result(built)
    assert len(r.regime) == 4 and r.regime["learned"].all()  # 75 >= 70 at T
    assert (r.regime["refusal_at_T"] == S.REFUSAL["unblocked"][-1]).all()
    m = fine_metrics.finetune_metrics(CFG, r.log)
    assert m.regime.holds is True
    h0 = m.histories["h0"]
    assert h0.safe_start["refusal_rate"] == S.REFUSAL["unblocked"][0]
    assert m.refusal_at_T("h0") == [S.REFUSAL["unblocked"][-1]] * 2
    assert h0.at_T("mixed", "refusal_rate") == [S.REFUSAL["mixed"][-1]] * 2
    assert fine_metrics.FinetuneMetrics.from_json(m.to_json()) == m
    text = fine_report.findings(CFG, r)
    assert "refusal from 90% at theta_S to 30% at step 20" in text[0]
    assert "Half of the refusal is gone, on average, by step 20." in text  # 90 -> 50 -> 30
    assert any("holds in 4 of 4 runs; the regime is as registered" in t for t in text)
    assert any("refusal at T is 87%" in t for t in text)
    strict = dataclasses.replace(
        CFG, finetune=dataclasses.replace(CFG.finetune, min_new_task_accuracy=80.0))
    r80 = _finetune_result(built, strict)
    assert len(r80.regime) == 4 and not r80.regime["learned"].any()
    assert fine_metrics.finetune_metrics(strict, r80.log).regime.holds is False
    assert any("holds in 0 of 4 runs; the regime does not fully meet its own rule" in t
               for t in fine_report.findings(strict, r80))


def test_finetune_without_a_new_task_says_the_rule_is_not_checked(built, tmp_path):
    """hf logs have no new-task column: every table keeps it as NaN, the rule is not checked."""
    new = f"{CFG.finetune.new_task}_accuracy"
    log = pd.read_csv(built.paths.stage("finetune") / "log.csv").drop(
        columns=[new, "prefilled_content"])
    paths = Paths(tmp_path)
    write_csv(paths.stage("finetune") / "log.csv", log)
    write_csv(paths.stage("finetune") / "runs.csv",
              pd.read_csv(built.paths.stage("finetune") / "runs.csv"))
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
    for name in ("log.csv", "runs.csv"):
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
    assert got[("h0", "theta_H harmful compliance")] == (5.0, True)
    assert got[("h0", "theta_S refusal")] == (-5.0, False)
    assert got[("h0", "theta_S latent content")] == (2.0, True)
    assert got[("h0", "theta_S benign accuracy - theta_H's")] == (3.0, True)  # -2 vs -5
    assert got[("h1", "theta_H harmful compliance")] == (0.0, True)  # the threshold passes
    assert got[("h1", "theta_S benign accuracy - theta_H's")] == (-1.0, False)  # -6 vs -5


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
    assert "smallest margin is 1.0 points (theta_S latent content (%), history h0)" in ok[0]
    assert "refuses 96% of held-out harmful requests" in ok[1] and "content in 91%" in ok[1]
    table.loc[table.index[-1], "refusal_rate"] = 80.0  # h1's theta_S now refuses too little
    bad = history_report.findings(_history_result(shape_checks(table, CFG.history.checks)))
    assert bad[0].startswith("1 of 2 histories miss a shape check: h1 (theta_S refusal (%): "
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


def test_the_lambda_checks_runs_at_the_chosen_lambda_are_the_penalty_arms(tmp_path,
                                                                           monkeypatch):
    ran: list[FinetuneTask] = []

    def fake_run_all(fn, tasks, cfg, desc):
        ran.extend(tasks)
        return [FinetuneOutput(t.history, t.arm, t.seed, pd.DataFrame({"arm": [t.arm]}), "x", 1.0)
                for t in tasks]

    monkeypatch.setattr(block_runs, "run_all", fake_run_all)

    def spec(lam):
        return BlockSpec("penalty", {1: np.ones(4)}, lam, ("a",), 1)

    checked = [FinetuneTask(CFG, "h0", tmp_path, 1, f"penalty_lambda{lam:g}",
                            tmp_path / f"check{lam:g}.npz", block=spec(lam), judge="end")
               for lam in (0.1, 1.0)]
    for t in checked:
        t.out.write_bytes(f"lambda {t.block.lam}".encode())
    checked_done = fake_run_all(None, checked, None, "")
    ran.clear()
    tasks = [FinetuneTask(CFG, "h0", tmp_path, seed, arm, tmp_path / "h0" / f"{arm}_seed{seed}.npz",
                          block=spec(0.1), judge="end")
             for arm in ("penalty", "freeze") for seed in (1, 2)]
    done = block_runs.run_arms(tasks, checked, checked_done, 0.1, CFG)
    assert [(t.arm, t.seed) for t in ran] == [("penalty", 2), ("freeze", 1), ("freeze", 2)]
    assert tasks[0].out.read_bytes() == b"lambda 0.1"  # the run at the chosen lambda, copied
    assert [(d.arm, d.seed) for d in done] == [(t.arm, t.seed) for t in tasks]
    assert done[0].log["arm"].tolist() == ["penalty"]


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
    assert block_runs.choose_lambda(CFG, _calibration(rows)) == (lam, check)


def test_expand_arms_and_block_specs():
    assert block_runs.expand_arms(CFG) == ["penalty", "penalty_L0", "random_penalty", "freeze"]
    at0 = resolve({"preset": "smoke", "analysis": {"layer": 0}})
    assert block_runs.expand_arms(at0) == ["penalty", "penalty_L1", "random_penalty", "freeze"]
    dirs = {1: np.ones(4) / 2}
    kinds = {"penalty": "penalty", "penalty_L0": "penalty", "random_penalty": "penalty",
             "covariance_penalty": "penalty", "penalty_all": "penalty", "freeze": "freeze",
             "grad_project": "grad_project", "mean_penalty": "mean_penalty"}
    for arm, kind in kinds.items():
        spec = block_runs.block_spec(CFG, arm, dirs, 0.1, ["a", "b"])
        assert spec.kind == kind, arm
        assert (spec.lam, spec.pool, spec.batch) == (0.1, ("a", "b"), CFG.blocking.penalty_batch)


def test_arm_directions(layout):
    d0 = block_runs.arm_directions(CFG, layout.paths, "h0")
    again = block_runs.arm_directions(CFG, layout.paths, "h0")
    d1 = block_runs.arm_directions(CFG, layout.paths, "h1")
    v = layout.v["h0"]
    for arm in ("penalty", "mean_penalty", "grad_project"):
        assert set(d0[arm]) == {1}
        np.testing.assert_allclose(d0[arm][1], v[1], atol=1e-5)
    assert set(d0["penalty_all"]) == {0, 1} and set(d0["penalty_L0"]) == {0}
    np.testing.assert_allclose(d0["penalty_L0"][0], v[0], atol=1e-5)
    assert d0["freeze"] == {}
    for arm in ("random_penalty", "covariance_penalty"):
        u = d0[arm][1]
        assert np.linalg.norm(u) == pytest.approx(1.0)
        np.testing.assert_array_equal(u, again[arm][1])  # one control direction per history
        assert not np.allclose(u, d1[arm][1])
    assert abs(d0["covariance_penalty"][1] @ v[1]) < 1e-6


def test_final_alignment_reads_the_drift_at_t(layout):
    mask = np.arange(S.N_HARMFUL + S.N_BENIGN) < S.N_HARMFUL
    npz = layout.paths.run("finetune", "h0", "unblocked", 1)
    cos, proj = block_runs.final_alignment(CFG, npz, layout.v["h0"][1], mask)
    assert cos == pytest.approx(1.0, abs=1e-5)
    assert proj == pytest.approx(0.1 * 20 * 1.0, abs=1e-4)  # drift 0.1 * T along cos 1
    cos, proj = block_runs.final_alignment(
        CFG, layout.paths.run("finetune", "h1", "unblocked", 1), layout.v["h1"][1], mask)
    assert cos == pytest.approx(-0.9, abs=1e-5) and proj == pytest.approx(-1.8, abs=1e-4)


def _final(penalty_non_refusal: float) -> pd.DataFrame:
    """Hand-made final rows: unblocked, penalty and freeze on two histories and two seeds."""
    rows = []
    arms = {"unblocked": (0.6, 60.0, 75.0, 1.0), "penalty": (-0.2, penalty_non_refusal, 74.0, 0.2),
            "freeze": (0.5, 55.0, 30.0, float("nan"))}
    for arm, (align, nr, new_task, proj) in arms.items():
        for i, (h, seed) in enumerate([("h0", 1), ("h0", 2), ("h1", 1), ("h1", 2)]):
            rows.append({"arm": arm, "history": h, "seed": seed, "alignment": align + 0.02 * i,
                         "non_refusal": nr + i, "refusal_rate": 100 - nr - i,
                         "refusals": 20 - int((nr + i) / 5), "n_harmful": 20,
                         "harmful_compliance": nr + i - 5, "prefilled_content": 90.0,
                         "benign_accuracy": 80.0, "new_task_accuracy": new_task,
                         "projection": proj, "projection_unblocked": 1.0})
    final = pd.DataFrame(rows)
    final["task_cost_not_block"] = final["new_task_accuracy"] < CFG.finetune.min_new_task_accuracy
    return final


def _blocking_result(final: pd.DataFrame) -> block_metrics.BlockingResult:
    metrics = block_metrics.blocking_metrics(CFG, final, 0.1, "passed")
    return block_metrics.BlockingResult(pd.DataFrame(), 0.1, "passed", final,
                                        block_metrics.strength_table(final),
                                        block_metrics.paired_effects(final), pd.DataFrame(),
                                        metrics)


def test_blocking_strength_effects_and_metrics():
    r = _blocking_result(_final(20.0))
    strength = r.strength.set_index("arm")
    assert set(strength.index) == {"unblocked", "penalty"}  # freeze acts along no direction
    assert strength.loc["penalty", "mean"] == pytest.approx(0.8)
    assert strength.loc["unblocked", "mean"] == pytest.approx(0.0)
    eff = r.effects.set_index(["arm", "measure"])
    assert eff.loc[("penalty", "non_refusal"), "mean_diff"] == pytest.approx(-40.0)
    assert eff.loc[("penalty", "alignment"), "mean_diff"] == pytest.approx(-0.8)
    assert eff.loc[("freeze", "new_task_accuracy"), "mean_diff"] == pytest.approx(-45.0)
    arms = r.metrics.arms
    assert arms["penalty"].non_refusal.mean == pytest.approx(21.5)
    assert arms["penalty"].per_run["alignment"]["h1/2"] == pytest.approx(-0.14)
    assert arms["freeze"].task_cost_not_block and not arms["penalty"].task_cost_not_block
    lo, hi = arms["unblocked"].non_refusal_pooled_wilson
    assert lo < 100 * (80 - sum(20 - int((60 + i) / 5) for i in range(4))) / 80 < hi


def test_blocking_findings_say_kept_or_lost():
    kept = block_report.findings(CFG, _blocking_result(_final(20.0)))
    assert kept[0] == "The harm-blind manipulation check chose lambda = 0.1 (passed)."
    assert "held alignment at T (-0.17 against 0.63)" in kept[1]
    assert "and kept refusal: non-refusal 22% against 62% unblocked" in kept[1]
    assert "(freeze) count as task cost" in kept[2]
    assert kept[3] == "The lowest non-refusal of any arm is 22% (penalty)."
    lost = block_report.findings(CFG, _blocking_result(_final(58.0)))
    assert "did not keep refusal" in lost[1]
    assert lost[3].endswith("(freeze).")  # 55 + 1.5 < 58 + 1.5


def test_blocking_load_reads_the_runs_back(layout):
    """load() on hand-made outputs: the trajectories come from each run's own npz."""
    final = _final(20.0).query("arm != 'freeze'")
    folder = layout.paths.stage("blocking")
    folder.mkdir(parents=True, exist_ok=True)
    final.to_csv(folder / "final.csv", index=False)
    _calibration([(0.1, "h0", 0.2, 1.0)]).to_csv(folder / "calibration.csv", index=False)
    written = block_metrics.blocking_metrics(CFG, final, 0.1, "passed").to_json()
    write_json(layout.paths.metrics_file("blocking"), written)
    for h in CFG.histories:
        for seed in CFG.finetune.seeds:
            write_npz(layout.paths.run("blocking", h, "penalty", seed),
                      **S.run_acts(layout.safe[h], layout.v[h], layout.u, [-0.2] * 3, LOG_STEPS))
    r = block_metrics.load(CFG, layout.paths)
    assert r.lam == 0.1 and r.check == "passed"
    # the typed metrics give back what was written, to the byte
    again = layout.paths.metrics_file("blocking").with_suffix(".again.json")
    write_json(again, r.metrics.to_json())
    assert again.read_bytes() == layout.paths.metrics_file("blocking").read_bytes()
    t = r.trajectories
    assert set(t["layer"]) == {CFG.layer} and len(t) == 2 * 4 * len(LOG_STEPS)
    np.testing.assert_allclose(t[t["arm"] == "penalty"]["alignment"], -0.2, atol=1e-5)
    ub = t[(t["arm"] == "unblocked") & (t["history"] == "h0") & (t["seed"] == 1)]
    np.testing.assert_allclose(ub["alignment"], DESIGN["h0", "unblocked", 1], atol=1e-5)


# ============================================================================ 07 claims


def _metrics() -> dict[str, dict]:
    """Hand-made data/metrics/*.json whose claim verdicts are worked out by hand below."""
    early_step1 = [0.80, 0.81, 0.82]
    early_step20 = {"h0": [0.64, 0.65, 0.66], "h1": [0.30, 0.80, 0.10]}
    final = {"h0/1": 0.650, "h0/2": 0.646, "h1/1": 0.648, "h1/2": 0.650}
    keys = list(final)
    refusal = {"h0": [80.0, 82.0], "h1": [81.0, 82.0]}
    blocked_nr = dict(zip(keys, [9.0, 7.5, 8.5, 8.0], strict=True))
    unblocked_nr = {f"{h}/{s}": 100 - r for h in refusal for s, r in zip((1, 2), refusal[h],
                                                                            strict=True)}

    def arm(alignment: dict, non_refusal: dict, benign: dict) -> dict:
        runs = {"alignment": alignment, "non_refusal": non_refusal, "benign_accuracy": benign,
                "new_task_accuracy": benign, "harmful_compliance": benign,
                "prefilled_content": benign}
        summaries = {m: {"mean": float(np.mean(list(x.values()))), "sd": None, "n": len(x),
                         "ci_low": None, "ci_high": None} for m, x in runs.items()}
        return {**summaries, "non_refusal_pooled_wilson": [0.0, 100.0],
                "task_cost_not_block": False, "per_run": runs}

    return {
        "history": {"preset": "smoke"},
        "alignment": {
            "steps": [1, 5, 20],
            "by_step": {"all": {"20": {"mean": float(np.mean(list(final.values())))}}},
            "per_run": {k: [0.5, 0.6, v] for k, v in final.items()},
            "early_steps": [1, 20],
            "early_per_run": {f"{h}/{1001 + i}": [early_step1[i], early_step20[h][i]]
                              for h in ("h0", "h1") for i in range(3)},
        },
        "nulls": {"isotropic_closed_form": 0.1, "exceedance": {
            "all": {"isotropic": {"k": 24, "n": 24}, "anisotropic": {"k": 20, "n": 24}},
            "h0": {"isotropic": {"k": 12, "n": 12}, "anisotropic": {"k": 10, "n": 12}},
            "h1": {"isotropic": {"k": 12, "n": 12}, "anisotropic": {"k": 10, "n": 12}},
        }},
        "finetune": {"preset": "smoke", "steps": 20, "seeds": [1, 2], "histories": {
            "h0": {"safe_start": {"refusal_rate": 95.0},
                   "final": {"unblocked": {"refusal_rate": refusal["h0"]}}},
            "h1": {"safe_start": {"refusal_rate": 97.0},
                   "final": {"unblocked": {"refusal_rate": refusal["h1"]}}},
        }, "regime": {"rule": "learned", "holds": True}},
        "blocking": {
            "preset": "smoke", "layer": 1,
            "claim_arm": "penalty", "lambda": 0.1, "manipulation_check": "passed",
            "arms": {
                "penalty": arm(dict(zip(keys, [-0.20, -0.22, -0.21, -0.20], strict=True)),
                               blocked_nr, dict(zip(keys, [79.0, 80, 81, 80], strict=True))),
                "unblocked": arm(final, unblocked_nr,
                                 dict(zip(keys, [80.0, 81, 82, 80], strict=True))),
            },
        },
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
    assert g["harmfulness_blocked"] == {"blocked": [9.0, 7.5, 8.5, 8.0],
                                        "unblocked": [20.0, 18.0, 19.0, 18.0]}
    assert g["task_cost"]["tolerance"] == CFG.blocking.task_cost_tolerance
    h1 = claims.gather(claims.Inputs.from_json(m), CFG, "h1")
    assert h1["alignment_step20"] == [0.30, 0.80, 0.10]
    assert h1["harmfulness_unblocked"] == {"finetuned": [19.0, 18.0], "safe": 3.0}
    assert h1["final_alignment_blocked"]["blocked"] == [-0.21, -0.20]
    assert h1["null_exceedance"] == {"k": 12, "n": 12}


def test_gather_without_early_runs_uses_the_main_runs_logged_steps():
    m = _metrics()
    m["alignment"]["early_per_run"], m["alignment"]["early_steps"] = {}, []
    g = claims.gather(claims.Inputs.from_json(m), CFG)
    assert g["alignment_step1"] == [0.5] * 4 and "alignment_step20" in g
    m["alignment"]["steps"] = [2, 5, 20]
    assert "alignment_step1" not in claims.gather(claims.Inputs.from_json(m), CFG)
    m["blocking"]["arms"] = {"unblocked": m["blocking"]["arms"]["unblocked"]}  # no claim arm
    assert "harmfulness_blocked" not in claims.gather(claims.Inputs.from_json(m), CFG)


EXPECTED = {  # claim: (direction, size), worked out by hand from _metrics()
    "alignment_step1": ("holds", "does not hold"),  # 0.81, tight, far above 0.429 +- 0.052
    # History means 0.65 and 0.40 differ beyond their runs' noise, so the interval is over the
    # two history means (1 df): -1.06 to 2.11 holds 0 and the paper's 0.647.
    "alignment_step20": ("does not hold", "holds"),
    "alignment_rises": ("does not hold", "not comparable"),
    "null_exceedance": ("holds", "holds"),
    "final_alignment_unblocked": ("holds", "holds"),
    "final_alignment_blocked": ("holds", "holds"),
    "harmfulness_unblocked": ("holds", "holds"),  # 18.75 vs 19 +- 4
    "harmfulness_blocked": ("holds", "holds"),  # 8.25 vs 8.5 +- 1.5
    "task_cost": ("holds", "not comparable"),
}


@pytest.fixture(scope="module")
def claims_result(tmp_path_factory):
    paths = Paths(tmp_path_factory.mktemp("claims"))
    for stage, m in _metrics().items():
        write_json(paths.metrics_file(stage), m)
    return claims.run(CFG, paths)


def test_claims_run_gives_the_worked_out_verdicts(claims_result):
    got = {c["id"]: (c["verdict"], c["size_verdict"]) for c in claims_result.report["claims"]}
    assert got == EXPECTED
    table = claims_result.table.set_index("claim")
    assert table.loc["null_exceedance", "this run"] == "24 of 24"
    assert table.loc["null_exceedance", "paper"] == "24 of 24"
    assert claims_result.report["n_histories"] == 2


def test_claims_why_is_computed_from_the_measurements(claims_result):
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    for cid, c in by_id.items():
        assert c["why"] and c["why"].endswith("."), cid
        assert c["source"]["chapter"], cid
    assert "above the paper's 0.429 ± 0.052" in by_id["alignment_step1"]["why"]
    assert "the verdict differs between histories (h0: holds, h1: does not hold)" in by_id[
        "alignment_step20"]["why"]
    assert "the same verdict in all 2 histories" in by_id["final_alignment_unblocked"]["why"]
    assert "24 of 24 run-step pairs exceed the isotropic p99, 20 of 24" in by_id[
        "null_exceedance"]["why"]
    assert "from 4% at theta_S to 19% at T" in by_id["harmfulness_unblocked"]["why"]
    block = by_id["harmfulness_blocked"]["why"]
    assert "lambda 0.1, check passed" in block and "kept refusal (non-refusal 8% vs 19%)" in block
    assert by_id["alignment_step20"]["per_history"]["h1"]["verdict"] == "does not hold"


def test_claims_findings_count_the_verdicts(claims_result):
    text = claims_report.findings(claims_result)
    assert text[0] == ("Of 9 claims, 7 hold in direction over histories (alignment_step1, "
                       "null_exceedance, "
                       "final_alignment_unblocked, final_alignment_blocked, "
                       "harmfulness_unblocked, harmfulness_blocked, task_cost) and 2 do not "
                       "(alignment_step20, alignment_rises).")
    assert text[1].startswith("Of those that hold, 5 match the paper's size as well")
    assert text[2] == ("The histories disagree on alignment_step20: what holds in one history "
                       "fails in another, so these are not findings.")
    assert len(text) == 3


def test_claims_pool_over_history_means_when_the_histories_differ(claims_result):
    by_id = {c["id"]: c for c in claims_result.report["claims"]}
    step20 = by_id["alignment_step20"]["measured"]
    assert (step20["n"], step20["n_groups"], step20["df"]) == (6, 2, 1)
    assert step20["ci_low"] == pytest.approx(0.525 - 12.7062 * 0.125, abs=1e-3)
    assert "over the 2 history means" in by_id["alignment_step20"]["why"]
    assert "random intercept" in by_id["alignment_step20"]["rule"]
    step1 = by_id["alignment_step1"]["measured"]  # the same runs in both histories
    assert (step1["df"], step1["group_sd"]) == (5, 0.0)
    assert "over runs; the histories agree" in by_id["alignment_step1"]["why"]
    assert by_id["null_exceedance"]["measured"] == {"k": 24, "n": 24, "fraction": 1.0,
                                                    "wilson_low": pytest.approx(0.862, abs=1e-3),
                                                    "wilson_high": 1.0}


def test_claims_findings_name_a_claim_every_history_gives_but_the_pool_does_not(tmp_path):
    m = _metrics()
    # Step 20: each history tight, the two far apart. Step 1: the histories agree, but h1's
    # three runs alone are too spread to exclude 0.
    step1 = {"h0": (0.5, 0.6, 0.7), "h1": (0.1, 0.9, 0.5)}
    m["alignment"]["early_per_run"] = {
        f"{h}/{1001 + i}": [step1[h][i], v + d] for h, v in (("h0", 0.2), ("h1", 0.9))
        for i, d in enumerate((-0.01, 0.0, 0.01))}
    paths = Paths(tmp_path)
    for stage, metrics in m.items():
        write_json(paths.metrics_file(stage), metrics)
    r = claims.run(CFG, paths)
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


def test_claims_json_is_strict_json(claims_result, tmp_path):
    text = json.dumps(claims_result.report, allow_nan=False)
    assert json.loads(text) == claims_result.report


def test_claims_conclusion_follows_the_measurements(claims_result):
    assert claims_result.conclusion == claims_result.report["conclusion"]
    text = claims_result.conclusion
    assert "2 independent histories, 4 fine-tuning runs" in text
    assert "partly undoes safety alignment: refusal falls from 96% at theta_S to 81% at T" in text
    assert "The drift aligns with v_rev (0.65 at T; 24 of 24" in text
    assert "as the paper reports" in text
    assert "held alignment (-0.21 against 0.65) and kept refusal (non-refusal 8% against 19%)" \
        in text
    assert text.endswith("does not reproduce the paper's mechanism as a whole.")  # 96 -> 81
    m = _metrics()

    def said(metrics: dict) -> str:
        return claims.conclusion(claims.Inputs.from_json(metrics))

    for h, r in (("h0", [30.0, 32.0]), ("h1", [31.0, 30.0])):
        m["finetune"]["histories"][h]["final"]["unblocked"]["refusal_rate"] = r
    assert said(m).endswith("reproduced here, blocking included.")
    m["blocking"]["arms"]["penalty"]["non_refusal"]["mean"] = 12.0  # 6.75 below: more than 5
    assert "and kept refusal" in said(m)  # the threshold of thresholds.kept_refusal, as why's
    m["blocking"]["arms"]["penalty"]["non_refusal"]["mean"] = 15.0  # within 5 of 18.75
    assert "did not keep refusal" in said(m)
    assert "reproduced in part" in said(m)
    m["mediation"] = {"histories": {"h0": {"refusal_safe": 90.0, "ablated_at_layer": 20.0}}}
    m["sweep"] = {"outcome": "deeper histories revert more"}
    text = said(m)
    assert "v_rev carries refusal: projecting" in text and "and v_rev carries refusal," in text
    assert text.endswith("the history-depth sweep: deeper histories revert more (chapter 08).")
    m["blocking"]["arms"]["penalty"]["task_cost_not_block"] = True
    assert "stopped the new task being learned" in said(m)
