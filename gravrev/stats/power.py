"""Power of a pooled verdict by simulation: history means drawn, a t interval over them.

A pooled verdict takes the history as the unit, so its power depends on the number of
histories and the between-history sd of the history means, never on runs per history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_SIMS = 20000  # simulated studies per number of histories
NS = tuple(range(3, 17))  # numbers of histories the analysis covers
TARGET = 0.8  # the power a budget should reach, in the words that use it


@dataclass(frozen=True)
class PowerPoint:
    """Probabilities, at one number of histories, of the pooled 95% t interval (n - 1 df)."""

    n: int
    p_excludes_zero: float  # the interval lies wholly on the mean's side of 0
    p_precise: float  # its half-width is below half the absolute value of its own mean


@dataclass(frozen=True)
class PowerCurve:
    """One claim's power over numbers of histories, from a history-level mean and sd."""

    claim: str
    mean: float  # of the history means
    sd: float  # between the history means
    n_sims: int
    points: tuple[PowerPoint, ...]

    def at(self, n: int) -> PowerPoint:
        """The point at n histories."""
        for p in self.points:
            if p.n == n:
                return p
        raise KeyError(f"{self.claim}: no point at n = {n} (have {[p.n for p in self.points]})")

    def smallest_n(self, which: str, target: float = TARGET) -> int | None:
        """The fewest histories whose probability `which` reaches target; None within the grid."""
        for p in self.points:
            if getattr(p, which) >= target:
                return p.n
        return None


def power_curve(claim: str, mean: float, sd: float, seed: Sequence[int],
                ns: Sequence[int] = NS, n_sims: int = N_SIMS) -> PowerCurve:
    """Simulate n_sims studies of n normal history means (mean, sd) per n in ns."""
    if not (np.isfinite(mean) and mean != 0):
        raise ValueError(f"{claim}: mean must be finite and non-zero, got {mean!r}")
    if not (np.isfinite(sd) and sd > 0):
        raise ValueError(f"{claim}: sd must be finite and > 0, got {sd!r}")
    if min(ns) < 2 or n_sims < 1:
        raise ValueError(f"{claim}: need n >= 2 histories and n_sims >= 1, got {min(ns)}, "
                         f"{n_sims}")
    sign = np.sign(mean)
    points = []
    for n in ns:
        rng = np.random.default_rng([*seed, n])
        draws = rng.normal(mean, sd, size=(n_sims, n))
        m = draws.mean(axis=1)
        half = stats.t.ppf(0.975, n - 1) * draws.std(axis=1, ddof=1) / np.sqrt(n)
        excludes = sign * m - half > 0
        precise = half < np.abs(m) / 2
        points.append(PowerPoint(int(n), float(excludes.mean()), float(precise.mean())))
    return PowerCurve(claim, float(mean), float(sd), int(n_sims), tuple(points))


@dataclass(frozen=True)
class HistoryLevel:
    """The mean and sd of the history means of one measure (the inputs of power_curve)."""

    mean: float
    sd: float  # ddof = 1; NaN for one history
    n_histories: int
    n_runs: int


def history_level(means: Sequence[float], n_runs: int) -> HistoryLevel | None:
    """The mean and sd of history means (e.g. each history's claim value); None if none."""
    m = np.asarray([x for x in means if x is not None], dtype=np.float64)
    if m.size == 0:
        return None
    if not np.all(np.isfinite(m)):
        raise ValueError("history means have non-finite entries")
    sd = float(m.std(ddof=1)) if m.size > 1 else float("nan")
    return HistoryLevel(float(m.mean()), sd, int(m.size), int(n_runs))


def histories_needed(curve: PowerCurve, which: str, seed: Sequence[int],
                     target: float = TARGET, limit: int = 100) -> int | None:
    """The fewest histories reaching target, searched past the curve's grid up to `limit`;
    None if even `limit` does not."""
    found = curve.smallest_n(which, target)
    if found is not None:
        return found
    start = max(p.n for p in curve.points) + 1
    for lo in range(start, limit + 1, 10):
        more = power_curve(curve.claim, curve.mean, curve.sd, seed,
                           range(lo, min(lo + 10, limit + 1)), curve.n_sims)
        found = more.smallest_n(which, target)
        if found is not None:
            return found
    return None
