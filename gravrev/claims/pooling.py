"""The claim rules' shared pooling: summaries over runs or over history means, the counted
shares, the checked input fields, and the one sign rule."""

import math
from collections.abc import Sequence

import numpy as np

from gravrev.claims.schema import FAILS, HOLDS, NOT_COMPARABLE
from gravrev.stats.summaries import grouped_summary, summarize

MIN_RUNS = 2  # a 95% t interval needs at least two runs (or two histories)

Evaluation = tuple[dict | None, str, str]  # measured, verdict, rule
Groups = Sequence[str] | None  # each run's history, aligned with the run lists; None: ungrouped


def verdict_of(ok: bool) -> str:
    """holds, or does not hold."""
    return HOLDS if ok else FAILS


def summary(values: Sequence[float] | np.ndarray, groups: Groups = None) -> dict:
    """summarize(), or grouped_summary() with groups; an empty list gives n = 0 and no numbers."""
    if len(values) == 0:
        return {"mean": None, "sd": None, "n": 0, "ci_low": None, "ci_high": None}
    return summarize(values) if groups is None else grouped_summary(values, groups)


def unit_summary(values: Sequence[float] | np.ndarray, groups: Groups = None) -> dict:
    """With groups, the t interval over the history means (n: histories); without, over runs."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if groups is None or v.size == 0:
        return summary(v)
    g = np.asarray(groups).ravel()
    labels = list(dict.fromkeys(g.tolist()))
    means = [float(v[g == h].mean()) for h in labels]
    return {**summarize(means), "n_runs": int(v.size), "n_groups": len(labels),
            "df": len(labels) - 1}


def history_means(values: np.ndarray, groups: Groups) -> np.ndarray:
    """Each history's mean of its runs (the values themselves without groups)."""
    if groups is None:
        return values
    g = np.asarray(groups).ravel()
    return np.array([values[g == h].mean() for h in dict.fromkeys(g.tolist())])


def shares(k: np.ndarray, n: np.ndarray) -> dict:
    """Descriptive: each history's share k/n, with a t interval over the histories (two or
    more with something counted); {} otherwise. Runs and steps are never the trials."""
    keep = n > 0
    if int(keep.sum()) < MIN_RUNS:
        return {}
    shares = k[keep] / n[keep]
    return {"history_shares": {**summarize(shares), "df": int(shares.size) - 1}}


def too_few(n: int, rule: str, unit: str = "run") -> tuple[str, str]:
    """Not comparable: fewer than MIN_RUNS units, and the rule that says so."""
    some = f"no {unit}s" if n == 0 else f"only {n} {unit}"
    return NOT_COMPARABLE, f"{rule} Not comparable: {some}, at least {MIN_RUNS} are needed."


def field(inputs: object, key: str, cid: str) -> object:
    """inputs[key], or a ValueError naming the claim and the missing entry."""
    if not isinstance(inputs, dict) or key not in inputs:
        raise ValueError(f"measured[{cid!r}] needs a {key!r} entry")
    return inputs[key]


def array(inputs: object, key: str, cid: str) -> np.ndarray:
    """inputs[key] as a float array (None: NaN)."""
    values = field(inputs, key, cid)
    return np.asarray([math.nan if x is None else x for x in values], dtype=np.float64).ravel()


def paired(inputs: object, first: str, second: str, cid: str) -> tuple[np.ndarray, np.ndarray]:
    """Two per-run arrays of the same length, or a ValueError naming the claim."""
    a, b = array(inputs, first, cid), array(inputs, second, cid)
    if a.size != b.size:
        raise ValueError(
            f"measured[{cid!r}]: {first!r} and {second!r} are paired per run but have "
            f"{a.size} and {b.size} values"
        )
    return a, b


def paper_sign(paper: dict) -> float:
    """+1 or -1: the side of 0 the paper's mean lies on."""
    sign = math.copysign(1.0, paper["mean"]) if paper.get("mean") else 0.0
    if sign == 0.0:
        raise ValueError(f"paper claim {paper['id']!r} has no signed mean")
    return sign


def excludes_zero(m: dict, sign: float) -> bool:
    """The one sign rule: the 95% interval lies wholly on the claimed side of 0."""
    return bool(m["ci_low"] > 0) if sign > 0 else bool(m["ci_high"] < 0)


def same_bound(*values: np.ndarray) -> bool:
    """Every compared percentage at one bound (all 0 or all 100): no difference can show."""
    v = np.concatenate([np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in values])
    return bool(v.size) and any(bool(np.all(v == b)) for b in (0.0, 100.0))
