"""Stage sweep: the smoke grid end to end, the reuse of main cells, flags, and the verdict."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gravrev.config.load import resolve
from gravrev.stages.finetune import runs as finetune_runs
from gravrev.stages.history import runs as history_runs
from gravrev.stages.sweep import metrics, report, runs
from gravrev.stages.sweep.grid import Unit, grid, history_task, witnesses
from gravrev.stages.sweep.metrics import SweepMetrics, measures_folder
from gravrev.stages.sweep.units import half_reversion_step, half_time, non_refusal_auc
from gravrev.stats.depth import depth_fit
from gravrev.store.atomic import read_json, read_npz, write_json
from gravrev.store.paths import Paths
from gravrev.training.tasks import history_run

# ----------------------------------------------------------------------------- hand-made tables

HELPFUL, SAFE, SEEDS = (250, 500, 1000, 2000), (50, 150, 450), (0, 1, 2)


def hand_units(rev_slope: float, align_slope: float, noise: float = 0.0) -> pd.DataFrame:
    """A full grid whose outcomes are linear in log(H/S) with known slopes, seed offsets, noise."""
    rng = np.random.default_rng(7)
    rows = []
    for h in HELPFUL:
        for s in SAFE:
            for seed in SEEDS:
                x = math.log(h / s)
                rows.append({
                    "unit": f"H{h}_S{s}_s{seed}", "cell": f"H{h}_S{s}", "helpful_steps": h,
                    "safe_steps": s, "seed": seed, "reused": False, "log_ratio": x,
                    "shape_ok": not (h == 250 and s == 450), "failed_checks": "",
                    "non_refusal_T": 30 + rev_slope * x + 4 * seed + noise * rng.normal(),
                    "alignment_T": 0.2 + align_slope * x + 0.03 * seed
                    + noise / 100 * rng.normal(),
                    "steps_to_half": 10.0 if x > 1 else float("nan"),
                    "refusal_S": 95.0, "ablation_refusal_drop": 60.0,
                    # the verdict's outcome, off any ceiling; and the censored half time
                    "non_refusal_auc": 40 + rev_slope * x + 2 * seed + noise * rng.normal(),
                    "half_time": 10.0 if x > 1 else 100.0,
                })
    return pd.DataFrame(rows)


def hand_result(units: pd.DataFrame) -> metrics.SweepResult:
    empty = pd.DataFrame()
    return metrics.summarise(units, empty, empty, empty, final_step=100)


def test_depth_fit_recovers_a_known_slope():
    fit = depth_fit(hand_units(8.0, 0.05, noise=1.0), "non_refusal_T")
    assert fit.ci_low < 8.0 < fit.ci_high
    assert abs(fit.slope - 8.0) < 1.0
    assert fit.n_units == len(HELPFUL) * len(SAFE) * len(SEEDS) and fit.n_seeds == len(SEEDS)


def test_verdict_supported_when_the_outcome_ranks_as_claimed():
    r = hand_result(hand_units(8.0, 0.05, noise=1.0))
    assert r.ranks["non_refusal_auc ~ safe_steps"].ci_high < 0
    assert r.ranks["non_refusal_auc ~ helpful_steps"].ci_low > 0
    assert metrics.outcome(r) == metrics.SUPPORTED
    assert report.verdict(r).startswith("Supported")


def test_verdict_contradicted_when_the_ranks_go_the_other_way():
    r = hand_result(hand_units(-8.0, 0.05, noise=1.0))
    assert metrics.outcome(r) == metrics.CONTRADICTED
    assert report.verdict(r).startswith("Contradicted")


def test_verdict_not_resolved_without_an_effect():
    r = hand_result(hand_units(0.0, 0.05, noise=5.0))
    assert metrics.outcome(r) == metrics.NOT_RESOLVED
    assert report.verdict(r).startswith("Not resolved")


def test_verdict_not_resolved_with_one_seed_and_says_why():
    units = hand_units(8.0, 0.05, noise=1.0)
    r = hand_result(units[units["seed"] == 0])
    rank = r.ranks["non_refusal_auc ~ safe_steps"]
    assert rank.rho < 0 and math.isnan(rank.ci_low) and rank.n_seeds == 1
    assert r.fits["non_refusal_T"].method == "one seed" and math.isnan(r.fits["non_refusal_T"].p)
    assert metrics.outcome(r) == metrics.NOT_RESOLVED
    assert "one history seed" in report.verdict(r)


def test_verdict_not_resolved_when_the_outcome_is_constant():
    units = hand_units(8.0, 0.05, noise=1.0).assign(non_refusal_T=100.0, non_refusal_auc=100.0)
    r = hand_result(units)
    assert r.fits["non_refusal_T"].method == "constant"
    assert math.isnan(r.ranks["non_refusal_auc ~ safe_steps"].rho)
    assert metrics.outcome(r) == metrics.NOT_RESOLVED


def test_a_degenerate_interval_is_called_so():
    # A strong effect: every seed ranks the units alike, so the seeds' rhos tie exactly.
    r = hand_result(hand_units(-8.0, 0.05, noise=1.0))
    rank = r.ranks["non_refusal_auc ~ safe_steps"]
    assert rank.ci_low == rank.ci_high and report.degenerate(rank)
    assert "interval over 3 seeds is degenerate" in report.verdict(r)
    assert metrics.outcome(r) == metrics.CONTRADICTED  # the verdict's rule is unchanged
    noisy = hand_result(hand_units(0.0, 0.05, noise=5.0)).ranks["non_refusal_auc ~ safe_steps"]
    assert not report.degenerate(noisy)


def test_seeds_that_agree_exactly_give_a_point_and_no_p():
    from gravrev.stats.depth import over_seeds

    for value in (0.7, -0.8, 0.1):  # each would round to a tiny width and p through the mean
        low, high, p = over_seeds([value] * 3)
        assert low == high == value and math.isnan(p)


def test_depth_inference_takes_the_seed_as_the_unit():
    units = hand_units(8.0, 0.05, noise=1.0)
    fit = depth_fit(units, "non_refusal_T")
    slopes = [np.polyfit(g["log_ratio"], g["non_refusal_T"], 1)[0]
              for _, g in units.groupby("seed")]
    assert fit.method == "t over seed slopes" and fit.slope == pytest.approx(np.mean(slopes))
    half = stats.t.ppf(0.975, 2) * np.std(slopes, ddof=1) / math.sqrt(3)
    assert (fit.ci_low, fit.ci_high) == pytest.approx((np.mean(slopes) - half,
                                                       np.mean(slopes) + half))


def test_a_never_refusing_unit_is_not_ranked_slowest():
    units = hand_units(8.0, 0.05, noise=1.0)
    never = units["unit"] == units["unit"].iloc[0]
    units.loc[never, ["refusal_S", "non_refusal_auc", "half_time", "steps_to_half"]] = [
        0.0, 100.0, float("nan"), float("nan")]
    r = hand_result(units)
    assert r.n_verdict == int(units["shape_ok"].sum()) - int((never & units["shape_ok"]).sum())
    assert r.ranks["half_time ~ safe_steps"].n_units == r.n_verdict
    assert r.effects["steps_to_half"].outcome == "steps_to_half"
    assert "never refused (1)" in report.verdict(r)


def test_half_time_is_censored_at_t_and_undefined_without_refusal():
    assert half_time(5.0, 80.0, 100) == {"half_time": 5.0, "half_censored": False}
    assert half_time(float("nan"), 80.0, 100) == {"half_time": 100.0,
                                                          "half_censored": True}
    assert math.isnan(half_time(float("nan"), 0.0, 100)["half_time"])


def test_non_refusal_auc_is_the_mean_level_over_the_logged_steps():
    log = pd.DataFrame({"step": [0, 10, 100], "refusal_rate": [100.0, 0.0, 0.0]})
    # trapezoids: 10 * (0 + 100) / 2 + 90 * 100 = 9500 over a span of 100
    assert non_refusal_auc(log) == pytest.approx(95.0)


def test_flagged_units_stay_in_the_fit_and_are_counted():
    units = hand_units(8.0, 0.05, noise=1.0)
    r = hand_result(units)
    assert r.fits["non_refusal_T"].n_units == len(units)
    assert r.fits_passing["non_refusal_T"].n_units == int(units["shape_ok"].sum())
    text = report.findings(r)
    assert len(text) == 6
    assert f"shape check: {int((~units['shape_ok']).sum())} " in text[0]


def test_half_reversion_step_known_answers():
    log = pd.DataFrame({"step": [0, 1, 5, 10], "refusal_rate": [80.0, 60.0, 40.0, 10.0]})
    assert half_reversion_step(log) == 5.0
    assert math.isnan(half_reversion_step(log.assign(refusal_rate=[80.0, 70, 60, 50])))
    assert math.isnan(half_reversion_step(log.assign(refusal_rate=0.0)))  # nothing to revert


# ----------------------------------------------------------------------------- the smoke grid


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg = resolve({"preset": "smoke"})
    paths = Paths(tmp_path_factory.mktemp("sweep"))
    history_runs.run(cfg, paths)
    finetune_runs.run(cfg, paths)
    runs.run(cfg, paths)
    metrics.measure(cfg, paths)
    return cfg, paths, metrics.load(cfg, paths)


MAIN = "H100_S20_s0"  # smoke: history H = 100, S = 20 steps, seeds 0 and 1; sweep seeds (0,)


@pytest.mark.pipeline
def test_unit_table_has_one_row_per_cell_and_seed(smoke):
    cfg, _, r = smoke
    sw = cfg.sweep
    assert len(r.units) == len(sw.helpful_steps) * len(sw.safe_steps) * len(sw.seeds) == 4
    assert list(r.units["unit"]) == [u.name for u in grid(cfg)]
    assert r.units[["helpful_steps", "safe_steps", "seed"]].duplicated().sum() == 0
    assert set(r.alignment["unit"]) == set(r.units["unit"])
    assert (r.units["log_ratio"] == np.log(r.units["helpful_steps"] / r.units["safe_steps"])).all()
    assert (r.units["non_refusal_T"] == 100 - r.units["refusal_T"]).all()
    assert r.units["alignment_20"].isna().all()  # smoke logs steps 1, 2, 5, 10 only
    measured = ["alignment_1", "alignment_T", "v_rev_norm", "weight_distance"]
    assert r.units[measured].notna().all().all()


@pytest.mark.pipeline
def test_main_cell_reuses_stage_history_and_finetune(smoke):
    cfg, paths, r = smoke
    assert set(r.units.loc[r.units["reused"], "unit"]) == {MAIN}
    assert not (paths.stage("sweep") / MAIN).exists()  # nothing retrained for it
    for unit in set(r.units["unit"]) - {MAIN}:
        assert paths.run("sweep", unit, "unblocked", cfg.finetune.seeds[0]).is_file()
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    main = log[(log["history"] == "h0") & (log["arm"] == "unblocked")
               & (log["seed"] == cfg.finetune.seeds[0])]
    row = r.units.set_index("unit").loc[MAIN]
    assert row["refusal_T"] == main.sort_values("step")["refusal_rate"].iloc[-1]
    assert (r.log[r.log["unit"] == MAIN]["step"].tolist() == main["step"].tolist())


@pytest.mark.pipeline
def test_retraining_the_main_cell_gives_the_reused_bytes(smoke, tmp_path):
    cfg, paths, _ = smoke
    unit = Unit(cfg.history.helpful.steps, cfg.history.safe.steps, cfg.history.seeds[0])
    history_run(history_task(cfg, paths, unit, tmp_path))
    for name in ("helpful", "safe"):
        again = read_npz(tmp_path / f"acts_{name}.npz")
        saved = read_npz(paths.acts(name, cfg.histories[0]))
        assert all(np.array_equal(again[k], saved[k]) for k in saved)


@pytest.mark.pipeline
def test_failed_shape_checks_are_flagged_not_dropped(smoke):
    _, _, r = smoke
    per_unit = r.checks.groupby("unit")["passed"].all()
    assert set(per_unit.index) == set(r.units["unit"])
    flags = r.units.set_index("unit")["shape_ok"]
    assert (flags == per_unit.reindex(flags.index)).all()
    assert ((r.units["failed_checks"] != "") == ~r.units["shape_ok"]).all()
    assert r.fits["alignment_T"].n_units == len(r.units)


@pytest.mark.pipeline
def test_metrics_and_load_agree_with_run(smoke):
    cfg, paths, r = smoke
    again = metrics.load(cfg, paths)
    pd.testing.assert_frame_equal(again.units, r.units)
    saved = json.loads(paths.metrics_file("sweep").read_text())
    assert "second" not in json.dumps(saved)
    assert saved["outcome"] == metrics.outcome(r)
    fit = r.fits["alignment_T"]
    assert saved["fits"]["alignment_T"]["slope"] == pytest.approx(fit.slope, abs=1e-6)
    assert saved["fits"]["alignment_T"]["method"] == fit.method
    assert [u["unit"] for u in saved["units"]] == list(r.units["unit"])
    assert len(report.findings(r)) == 6


@pytest.mark.pipeline
def test_runs_write_no_measures_and_the_metrics_round_trip(smoke, tmp_path):
    cfg, paths, _ = smoke
    assert not (paths.stage("sweep") / "units.csv").exists()  # the metrics step's, not the runs'
    assert (measures_folder(paths) / "units.csv").is_file()
    typed = SweepMetrics.from_json(read_json(paths.metrics_file("sweep")))
    assert typed.outcome == metrics.outcome(metrics.load(cfg, paths))
    assert [u.unit for u in typed.units] == [u.name for u in grid(cfg)]
    again = Paths(tmp_path)
    write_json(again.metrics_file("sweep"), typed.to_json())
    assert again.metrics_file("sweep").read_bytes() == paths.metrics_file("sweep").read_bytes()


@pytest.mark.pipeline
def test_the_unit_table_does_not_depend_on_the_workers(smoke, tmp_path):
    cfg, paths, _ = smoke
    other = Paths(tmp_path)
    for stage in ("history", "finetune"):
        shutil.copytree(paths.stage(stage), other.stage(stage))
    one = dataclasses.replace(cfg, executor=dataclasses.replace(cfg.executor, workers=1))
    runs.run(one, other)
    metrics.measure(one, other)
    for name in ("units.csv", "alignment.csv"):
        assert (measures_folder(other) / name).read_bytes() == (
            measures_folder(paths) / name).read_bytes()
    for name in ("log.csv", "ablation.csv"):
        assert (other.stage("sweep") / name).read_bytes() == (
            paths.stage("sweep") / name).read_bytes()


@pytest.mark.pipeline
def test_s_depths_share_one_theta_h_per_depth_and_seed(smoke):
    cfg, paths, r = smoke
    out = paths.stage("sweep")
    # H 50 is no depth of stage history's: trained once, under witness/, for both S depths;
    # H 100 is stage history's own depth: its theta_H is stage history's, not retrained.
    assert sorted(p.name for p in (out / "witness").iterdir()) == ["H50_s0"]
    a, b = (read_npz(out / f"H50_S{s}_s0" / "acts_helpful.npz") for s in (10, 20))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    main = read_npz(paths.acts("helpful", "h0"))
    again = read_npz(out / "H100_S10_s0" / "acts_helpful.npz")
    assert all(np.array_equal(main[k], again[k]) for k in main)


@pytest.mark.pipeline
def test_s_from_a_shared_theta_h_gives_the_bytes_of_training_h_again(smoke, tmp_path):
    cfg, paths, _ = smoke
    unit = Unit(50, 10, 0)
    history_run(history_task(cfg, paths, unit, tmp_path))  # H trained, no witness
    shared = paths.stage("sweep") / unit.name
    for name in ("helpful", "safe"):
        again = read_npz(tmp_path / f"acts_{name}.npz")
        saved = read_npz(shared / f"acts_{name}.npz")
        assert all(np.array_equal(again[k], saved[k]) for k in saved), name


def test_witnesses_are_one_per_depth_and_seed_and_reuse_stage_history():
    cfg = resolve({"preset": "smoke", "sweep": {"helpful_steps": [50, 100], "safe_steps": [5, 10],
                                               "seeds": [0, 7]}})
    paths = Paths(Path("/repo"))
    units = grid(cfg)
    todo, where = witnesses(cfg, paths, units, Path("/out"))
    assert sorted((t.helpful.steps, t.seed) for t in todo) == [(50, 0), (50, 7), (100, 7)]
    assert where[Unit(100, 5, 0)] == paths.history / "h0" / "helpful"  # seed 0 is a history
    shared = Path("/out/witness/H50_s7")
    assert where[Unit(50, 5, 7)] == where[Unit(50, 10, 7)] == shared
    assert all(t.helpful.lr == cfg.history.helpful.lr for t in todo)


def test_room_sentence_names_the_units_inside_the_band_with_the_task_learned():
    units = pd.DataFrame({
        "unit": ["H500_S150_s0", "H1000_S900_s1", "H1000_S900_s0", "H500_S900_s0"],
        "helpful_steps": [500, 1000, 1000, 500], "safe_steps": [150, 900, 900, 900],
        "non_refusal_T": [100.0, 64.6, 50.0, 40.0],
        "new_task_accuracy_T": [90.0, 92.7, 51.0, 80.0],  # the third has not learned the task
        "shape_ok": [True, False, True, True]})
    text = report.room_sentence(units, (10.0, 90.0), 70.0)
    assert text.startswith("2 of 4 units leave room at T")
    assert "H1000_S900_s1 (non-refusal 64.6%, new task 92.7%, missed a shape check)" in text
    assert "H500_S900_s0" in text and "H1000_S900_s0" not in text
    assert "H 500 / S 900, H 1000 / S 900" in text
    none = report.room_sentence(units.iloc[:1], (10.0, 90.0), 70.0)
    assert none.startswith("No unit leaves room at T")
