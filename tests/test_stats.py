import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from gravrev.stats import summaries as stats


def test_summarize_known_numbers():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == pytest.approx(2.5)
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3))
    assert s["n"] == 4
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t_{0.975, 3} * sd / sqrt(4)
    assert s["ci_low"] == pytest.approx(2.5 - half)
    assert s["ci_high"] == pytest.approx(2.5 + half)


def test_summarize_single_value_and_empty():
    s = stats.summarize([0.3])
    assert s["mean"] == 0.3 and s["n"] == 1
    assert all(math.isnan(s[k]) for k in ("sd", "ci_low", "ci_high"))
    with pytest.raises(ValueError, match="empty"):
        stats.summarize([])


def test_wilson_interval():
    low, high = stats.wilson_interval(0, 24)
    assert low == 0.0 and 0 < high < 0.2
    low, high = stats.wilson_interval(24, 24)
    assert 0.8 < low < 1.0 and high == 1.0
    low, high = stats.wilson_interval(12, 24)
    assert low < 0.5 < high
    with pytest.raises(ValueError, match="k"):
        stats.wilson_interval(5, 4)


@pytest.mark.parametrize("shift", [0.7, -0.7])
def test_paired_constant_shift(shift):
    control = np.array([1.0, 2.0, 0.5, 3.0, 1.5])
    r = stats.paired_test(control + shift, control)
    assert r["p_perm"] == pytest.approx(2 / 2**5)
    assert r["mean_diff"] == pytest.approx(shift)
    assert r["n"] == 5
    assert r["sd_diff"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(r["cohen_dz"])


def test_paired_test_noisy_difference():
    rng = np.random.default_rng(0)
    control = rng.normal(size=8)
    treated = control + 1.0 + rng.normal(scale=0.3, size=8)
    r = stats.paired_test(treated, control)
    assert r["t"] > 0 and r["p_t"] < 0.001 and r["cohen_dz"] > 1
    assert r["p_perm"] == pytest.approx(2 / 2**8)
    null = stats.paired_test(control + rng.normal(scale=0.3, size=8), control)
    assert null["p_perm"] > 0.01


def test_paired_test_errors():
    with pytest.raises(ValueError, match="length"):
        stats.paired_test([1.0, 2.0], [1.0])
    r = stats.paired_test([1.0], [0.0])
    assert math.isnan(r["t"]) and math.isnan(r["p_t"]) and r["p_perm"] == 1.0


def test_welch_test():
    a = np.array([5.0, 6.0, 7.0, 6.5])
    b = np.array([1.0, 2.0, 1.5, 2.5, 1.0])
    r = stats.welch_test(a, b)
    assert r["mean_diff"] == pytest.approx(a.mean() - b.mean())
    assert r["t"] > 0 and r["p"] < 0.001 and r["hedges_g"] > 3


def test_spearman():
    r = stats.spearman([1, 2, 3, 4, 5], [2, 4, 6, 8, 100])
    assert r["rho"] == pytest.approx(1.0) and r["n"] == 5
    assert stats.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])["rho"] == pytest.approx(-1.0)


def _trajectory(run_sd: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    steps = [1, 2, 5, 10, 20, 50, 75, 100]
    rows = []
    for run in range(5):
        offset = rng.normal(scale=run_sd)
        for step in steps:
            a = 0.1 + 0.05 * np.log(step) + offset + rng.normal(scale=0.01)
            rows.append({"run": f"seed{run}", "step": step, "alignment": a})
    return pd.DataFrame(rows)


def test_trajectory_model_recovers_slope():
    r = stats.trajectory_model(_trajectory(run_sd=0.05))
    assert r["method"] == "mixedlm" and r["converged"] is True
    assert abs(r["slope"] - 0.05) <= 3 * r["slope_se"]
    assert r["slope_se"] < 0.01 and r["slope_p"] < 1e-6


def test_trajectory_model_falls_back_without_run_variance(recwarn):
    # Every run gets the same noise values in a different order: run means are identical,
    # so the random-intercept variance is exactly 0 and the mixed model is singular.
    rng = np.random.default_rng(1)
    steps = np.array([1, 2, 5, 10, 20, 50, 75, 100])
    noise = rng.normal(scale=0.01, size=steps.size)
    df = pd.DataFrame(
        [
            {"run": run, "step": s, "alignment": 0.1 + 0.05 * np.log(s) + e}
            for run in range(5)
            for s, e in zip(steps, rng.permutation(noise), strict=True)
        ]
    )
    r = stats.trajectory_model(df)
    assert r["method"] == "ols_cluster"
    assert abs(r["slope"] - 0.05) <= 3 * r["slope_se"]
    assert not [w for w in recwarn if issubclass(w.category, ConvergenceWarning)]


def test_trajectory_model_missing_column():
    df = _trajectory(0.05).drop(columns=["step"])
    with pytest.raises(ValueError, match="step"):
        stats.trajectory_model(df)


def test_trajectory_model_of_one_run_is_plain_ols():
    one = _trajectory(run_sd=0.05)
    one = one[one["run"] == "seed0"]
    r = stats.trajectory_model(one)
    assert r["method"] == "ols"
    assert abs(r["slope"] - 0.05) <= 3 * r["slope_se"] and r["slope_se"] > 0


def test_grouped_summary_is_over_group_means_when_groups_differ():
    values = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    groups = ["a"] * 3 + ["b"] * 3
    g = stats.grouped_summary(values, groups)
    over_means = stats.summarize([0.2, 0.8])
    assert (g["n"], g["n_groups"], g["df"]) == (6, 2, 1)
    assert g["ci_low"] == pytest.approx(over_means["ci_low"])
    assert g["ci_high"] == pytest.approx(over_means["ci_high"])
    assert g["sd"] == pytest.approx(np.std(values, ddof=1))  # the runs' spread, as reported
    # REML's group variance: (MS_between - MS_within) / n0 = (0.54 - 0.01) / 3
    assert g["group_sd"] == pytest.approx(math.sqrt(0.53 / 3))


def test_grouped_summary_is_over_group_means_even_when_groups_agree():
    # No pretest: a history variance estimated at 0 does not turn runs into independent values.
    values = [0.1, 0.5, 0.9, 0.12, 0.5, 0.88]
    g = stats.grouped_summary(values, ["a"] * 3 + ["b"] * 3)
    over_means = stats.summarize([0.5, 0.5])
    assert (g["n"], g["n_groups"], g["df"], g["group_sd"]) == (6, 2, 1, 0.0)
    assert (g["ci_low"], g["ci_high"]) == pytest.approx((over_means["ci_low"],
                                                         over_means["ci_high"]))


def test_grouped_summary_with_one_group_is_summarize():
    g = stats.grouped_summary([1.0, 2.0, 4.0], ["a"] * 3)
    assert {k: g[k] for k in ("mean", "ci_low", "ci_high")} == pytest.approx(
        {k: stats.summarize([1.0, 2.0, 4.0])[k] for k in ("mean", "ci_low", "ci_high")})


def test_grouped_summary_rejects_misaligned_groups():
    with pytest.raises(ValueError, match="groups has 2 labels for 3 values"):
        stats.grouped_summary([1.0, 2.0, 3.0], ["a", "b"])


def test_history_trend_is_a_t_interval_over_history_slopes():
    per = {"h0": {"slope": 0.28, "intercept": 0.1}, "h1": {"slope": 0.05, "intercept": 0.2},
           "h2": {"slope": -0.08, "intercept": 0.3}}
    m = stats.history_trend(per)
    over = stats.summarize([0.28, 0.05, -0.08])
    assert m["slope"] == pytest.approx(over["mean"]) and m["df"] == 2 and m["n_histories"] == 3
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((over["ci_low"], over["ci_high"]))
    assert m["slope_p"] > 0.05  # three histories pointing different ways decide nothing
    one = stats.history_trend({"h0": {"slope": 0.3, "intercept": 0.0}})
    assert one["slope"] == 0.3 and math.isnan(one["slope_p"]) and math.isnan(one["ci_low"])
