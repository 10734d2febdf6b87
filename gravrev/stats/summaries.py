"""Statistics across runs: summaries, intervals, the alignment trajectory, blocking tests."""

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

NAN = float("nan")
MAX_PERM_N = 16  # 2^16 sign patterns is the most the exact permutation test enumerates


def _values(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} has non-finite entries")
    return v


def summarize(values: Sequence[float] | np.ndarray) -> dict:
    """Mean, sd (ddof=1), n and 95% t interval of the mean; sd and interval are NaN for n == 1."""
    v = _values(values, "values")
    n = v.size
    if n == 0:
        raise ValueError("values is empty")
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "sd": NAN, "n": 1, "ci_low": NAN, "ci_high": NAN}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def grouped_summary(
    values: Sequence[float] | np.ndarray, groups: Sequence[str] | np.ndarray
) -> dict:
    """summarize() with the group (a history) as the unit: the 95% t interval is over the group
    means (G - 1 df) whenever there are two groups or more, over runs within one group.

    No pretest on the group variance picks the interval: an estimate of it at 0 narrows the
    interval exactly when a few groups agree by chance. group_sd (one-way REML, floored at 0)
    is reported beside it and decides nothing.
    """
    v = _values(values, "values")
    g = np.asarray(groups).ravel()
    if g.size != v.size:
        raise ValueError(f"groups has {g.size} labels for {v.size} values")
    runs = summarize(v)
    masks = [g == x for x in dict.fromkeys(g.tolist())]
    sizes = np.array([mask.sum() for mask in masks], dtype=np.float64)
    means = np.array([v[mask].mean() for mask in masks])
    n, k = v.size, len(masks)
    if k < 2:
        return {**runs, "n_groups": k, "group_sd": 0.0, "df": n - 1}
    ms_between = float(np.sum(sizes * (means - v.mean()) ** 2)) / (k - 1)
    if n > k:
        within = [np.sum((v[mask] - m) ** 2) for mask, m in zip(masks, means, strict=True)]
        ms_within = float(sum(within)) / (n - k)
        n0 = (n - float(np.sum(sizes**2)) / n) / (k - 1)
        group_var = (ms_between - ms_within) / n0
    else:  # one run per group: the runs are the groups
        group_var = ms_between
    over = summarize(means)
    return {**over, "sd": runs["sd"], "n": n, "n_groups": k,
            "group_sd": math.sqrt(max(group_var, 0.0)), "df": k - 1}


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n={n}], got {k}")
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(max(low, 0.0)), float(min(high, 1.0))


def _mixedlm(data: pd.DataFrame, formula: str, term: str, group: str):
    """Random-intercept fit, or None when it fails, does not converge or is singular."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm(formula, data, groups=data[group]).fit(reml=True)
        except Exception:  # any failure of the optimiser means: fall back to OLS
            return None
    # statsmodels warns "on the boundary" for nearly every fit, so that one is no signal; a
    # non-positive-definite Hessian is, and so is a group variance that vanishes beside the noise.
    hessian_bad = any("Hessian" in str(w.message) for w in caught)
    re_ratio = float(np.asarray(fit.cov_re)[0, 0]) / float(fit.scale) if fit.scale > 0 else NAN
    se = float(fit.bse[term])
    if not fit.converged or hessian_bad or not re_ratio > 1e-4 or not np.isfinite(se):
        return None
    return fit


def random_intercept_fit(data: pd.DataFrame, y: str, x: str, group: str) -> tuple:
    """(statsmodels fit, method) of y ~ x with a random intercept per group; OLS with
    group-clustered SEs when the mixed model fails or is singular; plain OLS for one group."""
    formula = f"{y} ~ {x}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data[group].nunique() < 2:  # one group: no group variance, no clusters
            return smf.ols(formula, data).fit(), "ols"
        fit = _mixedlm(data, formula, x, group)
        if fit is not None:
            return fit, "mixedlm"
        groups = pd.factorize(data[group])[0]
        return smf.ols(formula, data).fit(cov_type="cluster", cov_kwds={"groups": groups}), (
            "ols_cluster")


def trajectory_model(df: pd.DataFrame) -> dict:
    """Fit alignment ~ log(step) with a random intercept per run; OLS with run-clustered SEs
    when the mixed model fails, does not converge or has a singular random-effect variance."""
    missing = [c for c in ("run", "step", "alignment") if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing column(s): {', '.join(missing)}")
    data = df[["run", "step", "alignment"]].copy()
    if (data["step"] <= 0).any():
        raise ValueError("step must be positive (its log is taken)")
    data["log_step"] = np.log(data["step"].astype(np.float64))
    data["alignment"] = data["alignment"].astype(np.float64)
    fit, method = random_intercept_fit(data, "alignment", "log_step", "run")
    return {
        "slope": float(fit.params["log_step"]),
        "slope_se": float(fit.bse["log_step"]),
        "slope_p": float(fit.pvalues["log_step"]),
        "intercept": float(fit.params["Intercept"]),
        "method": method,
        "converged": True,
    }


def history_trend(per_history: dict[str, dict]) -> dict:
    """The log-step slope with the history as the unit: a 95% t interval and p over the
    histories' slopes (histories - 1 df); NaN where fewer than two histories or no spread."""
    if not per_history:
        raise ValueError("per_history is empty")
    slopes = _values([m["slope"] for m in per_history.values()], "slopes")
    s, k = summarize(slopes), slopes.size
    se = s["sd"] / math.sqrt(k) if k >= 2 else NAN
    p = float(2.0 * stats.t.sf(abs(s["mean"]) / se, k - 1)) if se > 0 else NAN
    return {
        "slope": s["mean"],
        "slope_se": se,
        "slope_p": p,
        "intercept": float(np.mean([m["intercept"] for m in per_history.values()])),
        "method": "t over history slopes",
        "converged": True,
        "ci_low": s["ci_low"],
        "ci_high": s["ci_high"],
        "n_histories": int(k),
        "df": int(k - 1),
    }


def _sign_flip_p(diff: np.ndarray) -> float:
    """Exact two-sided p of |mean| over all 2^n sign patterns of the paired differences."""
    n = diff.size
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    null = np.abs(signs @ diff) / n
    observed = abs(diff.mean())
    # Tolerance so that patterns tying the observed statistic are not lost to round-off.
    return float(np.mean(null >= observed - 1e-12 * max(1.0, observed)))


def paired_test(
    treated: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray
) -> dict:
    """Paired t and exact sign-flip permutation test of treated - control, with Cohen's d_z."""
    t_arr, c_arr = _values(treated, "treated"), _values(control, "control")
    if t_arr.size != c_arr.size:
        raise ValueError(f"treated and control differ in length: {t_arr.size} vs {c_arr.size}")
    n = t_arr.size
    if n == 0:
        raise ValueError("treated and control are empty")
    if n > MAX_PERM_N:
        raise ValueError(f"exact permutation test supports n <= {MAX_PERM_N}, got n={n}")
    diff = t_arr - c_arr
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n >= 2 else NAN
    # A constant shift leaves sd at round-off, not 0; treat that as no spread.
    if n >= 2 and sd > 1e-12 * float(np.abs(diff).max()):
        t = mean / (sd / math.sqrt(n))
        p_t = float(2.0 * stats.t.sf(abs(t), n - 1))
        dz = mean / sd
    else:
        t = p_t = dz = NAN
    return {
        "mean_diff": mean,
        "sd_diff": sd,
        "t": float(t),
        "p_t": p_t,
        "p_perm": _sign_flip_p(diff),
        "cohen_dz": float(dz),
        "n": n,
    }


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict:
    """Welch's unequal-variance t test of a - b, with Hedges' g (pooled sd, small-sample J)."""
    x, y = _values(a, "a"), _values(b, "b")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"a and b need at least 2 values each, got {x.size} and {y.size}")
    res = stats.ttest_ind(x, y, equal_var=False)
    nx, ny = x.size, y.size
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    diff = float(x.mean() - y.mean())
    g = diff / pooled * (1.0 - 3.0 / (4.0 * (nx + ny) - 9.0)) if pooled > 0 else NAN
    return {"mean_diff": diff, "t": float(res.statistic), "p": float(res.pvalue), "hedges_g": g}


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict:
    """Spearman rank correlation with its two-sided p-value."""
    a, b = _values(x, "x"), _values(y, "y")
    if a.size != b.size:
        raise ValueError(f"x and y differ in length: {a.size} vs {b.size}")
    if a.size < 3:
        raise ValueError(f"spearman needs at least 3 pairs, got {a.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # undefined, not an error: say so with NaN
        return {"rho": float("nan"), "p": float("nan"), "n": int(a.size)}
    res = stats.spearmanr(a, b)
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": int(a.size)}
