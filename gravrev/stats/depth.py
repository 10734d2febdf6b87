"""Statistics of the history-depth sweep: an outcome against log(H steps / S steps)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from gravrev.stats.summaries import random_intercept_fit, spearman

NAN = float("nan")
CI_LEVEL = 0.95  # of every interval below


def log_ratio(helpful_steps: pd.Series, safe_steps: pd.Series) -> pd.Series:
    """log(H steps / S steps), the natural log: how much deeper H is than S."""
    return np.log(helpful_steps.astype(np.float64) / safe_steps.astype(np.float64))


@dataclass(frozen=True)
class DepthFit:
    """outcome ~ log_ratio, with a random intercept per history seed (or the fallback)."""

    outcome: str
    slope: float  # per unit of log(H/S); times ln 2 is the change per doubling of H/S
    ci_low: float  # CI_LEVEL
    ci_high: float
    p: float
    intercept: float
    method: str  # mixedlm | ols_cluster (seed-clustered SEs) | ols (one seed) | constant | none
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
    fit, method = random_intercept_fit(data, "y", "log_ratio", "seed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = (float(x) for x in fit.conf_int(alpha=1 - CI_LEVEL).loc["log_ratio"])
        p = float(fit.pvalues["log_ratio"])
    return DepthFit(outcome, float(fit.params["log_ratio"]), low, high, p,
                    float(fit.params["Intercept"]), method, **counts)


@dataclass(frozen=True)
class DepthEffect:
    """How big the depth effect is on one outcome, in the outcome's own units and in ranks."""

    outcome: str
    per_doubling: float  # fitted change per doubling of H/S (slope x ln 2)
    across_grid: float  # fitted change from the grid's smallest to its largest H/S
    observed_range: float  # mean at the largest H/S minus mean at the smallest, over seeds
    spearman_rho: float  # rank correlation of log(H/S) with the outcome, over units
    spearman_p: float


def depth_effect(units: pd.DataFrame, fit: DepthFit, outcome: str | None = None) -> DepthEffect:
    """Effect sizes of one outcome; `outcome` defaults to the fit's own column."""
    col = outcome or fit.outcome
    data = units[np.isfinite(units[col].astype(np.float64))]
    if data["log_ratio"].nunique() < 2:
        return DepthEffect(col, NAN, NAN, NAN, NAN, NAN)
    lo, hi = data["log_ratio"].min(), data["log_ratio"].max()
    means = data.groupby("log_ratio")[col].mean()
    rank = (spearman(data["log_ratio"], data[col]) if len(data) >= 3
            else {"rho": NAN, "p": NAN})
    return DepthEffect(col, fit.slope * math.log(2), float(fit.slope * (hi - lo)),
                       float(means.loc[hi] - means.loc[lo]), rank["rho"], rank["p"])


def speed_effect(units: pd.DataFrame, never: float) -> DepthEffect:
    """Rank effect of log(H/S) on steps to half-reversion; units that never get there count
    as slower than every unit that does (`never`: any value beyond the last logged step)."""
    data = units.assign(steps_to_half=units["steps_to_half"].astype(np.float64).fillna(never))
    fit = DepthFit("steps_to_half", NAN, NAN, NAN, NAN, NAN, "none", len(data),
                   int(data["seed"].nunique()), int(data["log_ratio"].nunique()))
    return depth_effect(data, fit)


@dataclass(frozen=True)
class ComponentFit:
    """outcome ~ log H + log S (OLS, seed-clustered when there are seeds to cluster)."""

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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data["seed"].nunique() >= 2:
            groups = pd.factorize(data["seed"])[0]
            fit = smf.ols("y ~ log_h + log_s", data).fit(cov_type="cluster",
                                                          cov_kwds={"groups": groups})
            method = "ols_cluster"
        else:
            fit, method = smf.ols("y ~ log_h + log_s", data).fit(), "ols"
        ci = fit.conf_int(alpha=1 - CI_LEVEL)
    return ComponentFit(outcome, float(fit.params["log_h"]), tuple(map(float, ci.loc["log_h"])),
                        float(fit.params["log_s"]), tuple(map(float, ci.loc["log_s"])), method)
