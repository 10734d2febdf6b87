"""Measures over a run's logged steps: cumulative reversion, rank correlation, the matched null.

Cumulative reversion is the area (trapezoid, in step units) under the drift's positive
projection on v_rev over the logged steps; the area under non-refusal sits beside it.
Correlations pool by history: a history's runs are averaged step by step, never counted as
independent samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gravrev.stats.nulls import exceedance, monte_carlo_quantile
from gravrev.stats.summaries import spearman

BOUNDS = (0.0, 100.0)  # a percentage's floor and ceiling
MOST = 0.5  # an input at a bound on more than this share of steps is flagged


def _steps_and(steps: Sequence[float] | np.ndarray,
               values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if s.ndim != 1 or s.shape != v.shape or s.size < 2:
        raise ValueError(f"steps and values need one shape, >= 2 long, got {s.shape}, {v.shape}")
    if not np.all(np.diff(s) > 0):
        raise ValueError("steps must be strictly increasing")
    if not np.all(np.isfinite(v)):
        raise ValueError("values has non-finite entries")
    return s, v


def area_under(steps: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """Trapezoid area under values over the logged steps, in step units."""
    s, v = _steps_and(steps, values)
    return float(np.sum(np.diff(s) * (v[1:] + v[:-1]) / 2.0))


@dataclass(frozen=True)
class CumulativeReversion:
    """One run's areas over its logged steps (include step 0, where the drift is 0)."""

    reversion: float  # area under max(projection of the drift on v_rev, 0)
    non_refusal: float  # area under non-refusal (percent x steps)
    span: float  # last logged step minus first: divide an area by it for a mean level


def cumulative_reversion(
    steps: Sequence[float] | np.ndarray,
    projection: Sequence[float] | np.ndarray,
    non_refusal: Sequence[float] | np.ndarray,
) -> CumulativeReversion:
    """Areas under the drift's positive projection on v_rev and under non-refusal.

    The positive part is taken at each logged step before the trapezoid, so motion away from
    the helpful checkpoint counts as no reversion rather than as negative reversion.
    """
    s, p = _steps_and(steps, projection)
    return CumulativeReversion(
        reversion=area_under(s, np.clip(p, 0.0, None)),
        non_refusal=area_under(s, non_refusal),
        span=float(s[-1] - s[0]),
    )


def reversion_cut(arm: float, baseline: float) -> float:
    """Percent by which an arm's cumulative reversion falls below the baseline's (> 0: less)."""
    if not baseline > 0:
        raise ValueError(f"the baseline's cumulative reversion must be > 0, got {baseline!r}")
    return 100.0 * (1.0 - arm / baseline)


@dataclass(frozen=True)
class StepCorrelation:
    """Spearman's rho between two measures over logged steps, with inputs stuck at a bound."""

    rho: float  # NaN when an input is constant
    p: float
    n: int  # steps
    at_bound: tuple[str, ...]  # names of inputs at 0 or 100 on most steps

    @property
    def flagged(self) -> bool:
        return bool(self.at_bound)


def at_bound(values: Sequence[float] | np.ndarray, bounds: tuple[float, float] = BOUNDS,
             most: float = MOST) -> bool:
    """Whether values sit exactly at the floor or at the ceiling on more than `most` of steps."""
    v = np.asarray(values, dtype=np.float64)
    return any(np.mean(v == b) > most for b in bounds)


def step_correlation(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    names: tuple[str, str] = ("alignment", "harm"),
) -> StepCorrelation:
    """Spearman's rho of x and y over one trajectory's logged steps, flagging ties at a bound."""
    r = spearman(x, y)
    flagged = tuple(n for n, v in zip(names, (x, y), strict=True) if at_bound(v))
    return StepCorrelation(rho=r["rho"], p=r["p"], n=r["n"], at_bound=flagged)


@dataclass(frozen=True)
class HistoryCorrelation:
    """One history's step correlation, from its runs' means at each logged step."""

    history: str
    n_runs: int
    correlation: StepCorrelation


def correlation_by_history(
    frame: pd.DataFrame, x: str, y: str, *, history: str = "history", run: str = "seed",
    step: str = "step",
) -> list[HistoryCorrelation]:
    """Per history, Spearman's rho of x and y over steps of the runs' step-wise means.

    Each run must log the same steps, so every mean averages the same runs.
    """
    out = []
    for name, rows in frame.groupby(history, sort=True):
        steps_per_run = rows.groupby(run)[step].apply(lambda s: tuple(sorted(s)))
        if steps_per_run.nunique() != 1:
            raise ValueError(f"history {name!r}: its runs log different steps")
        means = rows.groupby(step, sort=True)[[x, y]].mean()
        out.append(HistoryCorrelation(
            history=str(name),
            n_runs=int(rows[run].nunique()),
            correlation=step_correlation(means[x], means[y], (x, y)),
        ))
    return out


@dataclass(frozen=True)
class NullCheck:
    """Values against the q-quantile of an empirical null sample."""

    q: float
    threshold: float  # the null's empirical q-quantile
    threshold_se: float
    n_null: int
    n_exceed: int
    n: int

    @property
    def all_exceed(self) -> bool:
        return self.n > 0 and self.n_exceed == self.n


def beats_null(values: Sequence[float] | np.ndarray, null: Sequence[float] | np.ndarray,
               q: float = 0.99) -> NullCheck:
    """How many values (e.g. a trajectory's steps) strictly exceed the null's q-quantile."""
    null = np.asarray(null, dtype=np.float64)
    threshold, se = monte_carlo_quantile(null, q)
    n_exceed, n = exceedance(values, threshold)
    return NullCheck(q=q, threshold=threshold, threshold_se=se, n_null=int(null.size),
                     n_exceed=n_exceed, n=n)
