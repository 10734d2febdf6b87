"""Statistics of the history-depth sweep: an outcome against log(H steps / S steps).

The history seed is the unit of inference: units of one seed share its draws (and their theta_H
across S depths), so every interval and p is over per-seed estimates (seeds - 1 df); with one
seed there is none, and a slope or rank correlation is descriptive.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from gravrev.stats.summaries import spearman, summarize

NAN = float("nan")
CI_LEVEL = 0.95  # of every interval below


def log_ratio(helpful_steps: pd.Series, safe_steps: pd.Series) -> pd.Series:
    """log(H steps / S steps), the natural log: how much deeper H is than S."""
    return np.log(helpful_steps.astype(np.float64) / safe_steps.astype(np.float64))


@dataclass(frozen=True)
class DepthFit:
    """outcome ~ log_ratio: OLS within each history seed, a t interval over the seeds' slopes."""

    outcome: str
    slope: float  # per unit of log(H/S); times ln 2 is the change per doubling of H/S
    ci_low: float  # CI_LEVEL
    ci_high: float
    p: float
    intercept: float
    method: str  # t over seed slopes | one seed (descriptive, no interval) | constant | none
    n_units: int
    n_seeds: int
    n_ratios: int


def depth_fit(units: pd.DataFrame, outcome: str) -> DepthFit:
    """Fit units[outcome] ~ log(H/S) over the units where the outcome is defined."""
    data = units.assign(y=units[outcome].astype(np.float64))[["seed", "log_ratio", "y"]]
    data = data[np.isfinite(data["y"])].reset_index(drop=True)
    counts = dict(n_units=len(data), n_seeds=int(data["seed"].nunique()),
                  n_ratios=int(data["log_ratio"].nunique()))
    if counts["n_ratios"] < 2 or len(data) < 3:
        return DepthFit(outcome, NAN, NAN, NAN, NAN, NAN, "none", **counts)
    if np.ptp(data["y"]) == 0:  # e.g. at a ceiling: no slope to estimate, and none claimed
        return DepthFit(outcome, 0.0, NAN, NAN, NAN, float(data["y"].iloc[0]), "constant",
                        **counts)
    slopes, intercepts = [], []
    for _, g in data.groupby("seed", sort=True):
        if g["log_ratio"].nunique() >= 2:
            fit = smf.ols("y ~ log_ratio", g).fit()
            slopes.append(float(fit.params["log_ratio"]))
            intercepts.append(float(fit.params["Intercept"]))
    if not slopes:
        return DepthFit(outcome, NAN, NAN, NAN, NAN, NAN, "none", **counts)
    low, high, p = over_seeds(slopes)
    method = "t over seed slopes" if len(slopes) >= 2 else "one seed"
    return DepthFit(outcome, float(np.mean(slopes)), low, high, p, float(np.mean(intercepts)),
                    method, **counts)


def over_seeds(estimates: list[float]) -> tuple[float, float, float]:
    """CI_LEVEL t interval and two-sided p (against 0) over per-seed estimates, seeds - 1 df;
    all NaN for fewer than two seeds; seeds that agree exactly give a point and no p."""
    v = np.asarray(estimates, dtype=np.float64)
    if v.size < 2:
        return NAN, NAN, NAN
    if np.ptp(v) == 0:  # exact agreement: the mean's rounding would fake a tiny width and a p
        return float(v[0]), float(v[0]), NAN
    sm = summarize(v)
    se = sm["sd"] / math.sqrt(v.size)
    p = float(2.0 * stats.t.sf(abs(sm["mean"]) / se, v.size - 1)) if se > 0 else NAN
    return sm["ci_low"], sm["ci_high"], p


@dataclass(frozen=True)
class DepthEffect:
    """How big the depth effect is on one outcome, in the outcome's own units and in ranks."""

    outcome: str
    per_doubling: float  # fitted change per doubling of H/S (slope x ln 2)
    across_grid: float  # fitted change from the grid's smallest to its largest H/S
    observed_range: float  # mean at the largest H/S minus mean at the smallest, over seeds
    spearman_rho: float  # rank correlation of log(H/S) with the outcome, over units (descriptive)
    spearman_p: float  # always NaN: kept for the file's shape; rank_effect has the seed-level p


def depth_effect(units: pd.DataFrame, fit: DepthFit, outcome: str | None = None) -> DepthEffect:
    """Effect sizes of one outcome; `outcome` defaults to the fit's own column."""
    col = outcome or fit.outcome
    data = units[np.isfinite(units[col].astype(np.float64))]
    if data["log_ratio"].nunique() < 2:
        return DepthEffect(col, NAN, NAN, NAN, NAN, NAN)
    lo, hi = data["log_ratio"].min(), data["log_ratio"].max()
    means = data.groupby("log_ratio")[col].mean()
    rho = spearman(data["log_ratio"], data[col])["rho"] if len(data) >= 3 else NAN
    # No p over units: units of one seed share its draws, so they are not independent.
    return DepthEffect(col, fit.slope * math.log(2), float(fit.slope * (hi - lo)),
                       float(means.loc[hi] - means.loc[lo]), rho, NAN)


def speed_effect(units: pd.DataFrame, never: float) -> DepthEffect:
    """Rank effect of log(H/S) on steps to half-reversion; units that never get there count
    as slower than every unit that does (`never`: any value beyond the last logged step).
    A unit whose theta_S never refused has nothing to revert and is left out, not ranked."""
    units = units[units["refusal_S"].astype(np.float64) > 0]
    data = units.assign(steps_to_half=units["steps_to_half"].astype(np.float64).fillna(never))
    fit = DepthFit("steps_to_half", NAN, NAN, NAN, NAN, NAN, "none", len(data),
                   int(data["seed"].nunique()), int(data["log_ratio"].nunique()))
    return depth_effect(data, fit)


@dataclass(frozen=True)
class ComponentFit:
    """outcome ~ log H + log S: OLS within each seed, t intervals over the seeds' coefficients."""

    outcome: str
    helpful_slope: float  # per unit of log(H steps)
    helpful_ci: tuple[float, float]
    safe_slope: float  # per unit of log(S steps)
    safe_ci: tuple[float, float]
    method: str


def component_fit(units: pd.DataFrame, outcome: str) -> ComponentFit:
    """Do depth of H and depth of S act with opposite signs, as the ratio assumes?"""
    data = pd.DataFrame({"y": units[outcome].astype(np.float64), "seed": units["seed"],
                         "log_h": np.log(units["helpful_steps"].astype(np.float64)),
                         "log_s": np.log(units["safe_steps"].astype(np.float64))})
    data = data[np.isfinite(data["y"])]
    if data["log_h"].nunique() < 2 or data["log_s"].nunique() < 2 or len(data) < 4:
        return ComponentFit(outcome, NAN, (NAN, NAN), NAN, (NAN, NAN), "none")
    if np.ptp(data["y"]) == 0:
        return ComponentFit(outcome, 0.0, (NAN, NAN), 0.0, (NAN, NAN), "constant")
    per = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, g in data.groupby("seed", sort=True):
            if g["log_h"].nunique() >= 2 and g["log_s"].nunique() >= 2 and len(g) >= 4:
                fit = smf.ols("y ~ log_h + log_s", g).fit()
                per.append((float(fit.params["log_h"]), float(fit.params["log_s"])))
    if not per:
        return ComponentFit(outcome, NAN, (NAN, NAN), NAN, (NAN, NAN), "none")
    hs, ss = [x[0] for x in per], [x[1] for x in per]
    method = "t over seed fits" if len(per) >= 2 else "one seed"
    return ComponentFit(outcome, float(np.mean(hs)), over_seeds(hs)[:2], float(np.mean(ss)),
                        over_seeds(ss)[:2], method)


@dataclass(frozen=True)
class RankEffect:
    """Spearman's rho of an outcome with one depth, per history seed, and their mean with a
    CI_LEVEL t interval over the seeds (seeds - 1 df; NaN for fewer than two seeds)."""

    outcome: str
    depth: str  # helpful_steps | safe_steps
    rho: float  # mean of the seeds' rhos
    ci_low: float
    ci_high: float
    p: float
    rho_units: float  # over every unit at once: descriptive, decides nothing
    per_seed: dict[str, float]  # seed -> rho (NaN: too few units, or a constant)
    n_units: int
    n_seeds: int  # seeds with a defined rho


def rank_effect(units: pd.DataFrame, outcome: str, depth: str) -> RankEffect:
    """Spearman of units[outcome] with units[depth] within each seed, then over the seeds."""
    data = units[np.isfinite(units[outcome].astype(np.float64))]
    per = {}
    for seed, g in data.groupby("seed", sort=True):
        per[str(seed)] = spearman(g[depth], g[outcome])["rho"] if len(g) >= 3 else NAN
    defined = [v for v in per.values() if np.isfinite(v)]
    low, high, p = over_seeds(defined)
    every = spearman(data[depth], data[outcome])["rho"] if len(data) >= 3 else NAN
    return RankEffect(outcome, depth, float(np.mean(defined)) if defined else NAN, low, high, p,
                      every, per, len(data), len(defined))
