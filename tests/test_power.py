"""The power analysis: simulated pooled t intervals over history means."""

import math

import numpy as np
import pytest
from scipy import stats

from gravrev.stats import power


def test_excludes_zero_matches_the_noncentral_t():
    # P(interval excludes 0 on the mean's side) = P(T_{n-1, delta} > t_crit), delta = mu*sqrt(n)/sd
    c = power.power_curve("x", 0.3, 0.5, [1, 2], ns=(5, 10), n_sims=40000)
    for p in c.points:
        crit = stats.t.ppf(0.975, p.n - 1)
        exact = stats.nct.sf(crit, p.n - 1, 0.3 * math.sqrt(p.n) / 0.5)
        assert p.p_excludes_zero == pytest.approx(exact, abs=0.01)


def test_power_grows_with_histories_and_is_seeded():
    a = power.power_curve("x", 0.47, 0.2, [3], n_sims=5000)
    b = power.power_curve("x", 0.47, 0.2, [3], n_sims=5000)
    assert a == b
    precise = [p.p_precise for p in a.points]
    assert precise[-1] > precise[0] and a.points[0].n == 3 and a.points[-1].n == 16
    assert power.power_curve("x", 0.47, 0.2, [4], n_sims=5000) != a


def test_a_negative_mean_is_judged_on_its_own_side():
    up = power.power_curve("x", 0.5, 0.3, [1], ns=(6,), n_sims=5000).at(6)
    down = power.power_curve("x", -0.5, 0.3, [1], ns=(6,), n_sims=5000).at(6)
    assert down.p_excludes_zero == pytest.approx(up.p_excludes_zero, abs=0.02)
    assert down.p_precise == pytest.approx(up.p_precise, abs=0.02) and up.p_excludes_zero > 0.9


def test_smallest_n_and_the_search_past_the_grid():
    c = power.power_curve("x", 0.3, 0.53, [1], n_sims=4000)
    assert c.smallest_n("p_excludes_zero") is None  # step 1's reference: not within 16
    n = power.histories_needed(c, "p_excludes_zero", [1])
    assert n is not None and 16 < n <= 100
    crit = stats.t.ppf(0.975, n - 1)
    assert stats.nct.sf(crit, n - 1, 0.3 * math.sqrt(n) / 0.53) == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize("mean,sd", [(0.0, 0.2), (0.5, 0.0), (float("nan"), 0.2), (0.5, -1)])
def test_bad_inputs_are_named(mean, sd):
    with pytest.raises(ValueError, match="x:"):
        power.power_curve("x", mean, sd, [1])


def test_history_level_is_over_history_means():
    lv = power.history_level([2.0, -1.0], n_runs=3)
    assert lv.mean == pytest.approx(0.5) and lv.n_histories == 2 and lv.n_runs == 3
    assert lv.sd == pytest.approx(np.std([2.0, -1.0], ddof=1))
    assert math.isnan(power.history_level([0.4], 2).sd)
    assert power.history_level([], 0) is None
    with pytest.raises(ValueError, match="non-finite"):
        power.history_level([0.1, float("nan")], 2)


def test_runs_sentence_compares_runs_per_history_with_the_reference():
    from gravrev.report.power import runs_sentence

    fewer = runs_sentence({"a": power.history_level([0.1, 0.2], 20), "b": None}, 20)
    assert "over 10 (a) runs per history" in fewer and "may understate" in fewer
    same = runs_sentence({"a": power.history_level([0.1, 0.2], 40)}, 20)
    assert "over 20 (a) runs per history" in same and "not understated" in same
    assert "measured none" in runs_sentence({"a": None}, 20)
