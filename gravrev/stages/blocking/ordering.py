"""The ordering block < baseline < push on each measure: per history, and pooled with the
history as the unit."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gravrev.stages.blocking.summaries import ArmMetrics, Summary, finite, summary
from gravrev.stats.trajectories import at_bound

# The ordering block < baseline < push is judged on these; the percentages can sit at a bound.
ORDER_MEASURES = ("alignment", "non_refusal", "harmful_compliance", "cumulative_reversion",
                  "area_non_refusal")
BASELINE = "unblocked"
ORDERED = ("block", BASELINE, "push")


@dataclass(frozen=True)
class HistoryOrder:
    """One history's means over its seeds of block, baseline and push."""

    block: float
    baseline: float
    push: float

    @property
    def ordered(self) -> bool:
        return self.block < self.baseline < self.push


@dataclass(frozen=True)
class Ordering:
    """block < baseline < push on one measure: per history, and pooled with the history as
    the unit (paired differences averaged per history, t interval over histories)."""

    per_history: dict[str, HistoryOrder]
    baseline_minus_block: Summary
    push_minus_baseline: Summary
    at_bound: bool  # the measure sits at its floor or ceiling in most runs of the three arms

    @property
    def ordered(self) -> bool:
        """Both pooled intervals exclude 0 above it."""
        return (self.baseline_minus_block.excludes_zero == 1
                and self.push_minus_baseline.excludes_zero == 1)

    def to_json(self) -> dict:
        return {"per_history": {h: asdict(o) for h, o in self.per_history.items()},
                "baseline_minus_block": asdict(self.baseline_minus_block),
                "push_minus_baseline": asdict(self.push_minus_baseline),
                "at_bound": self.at_bound, "ordered": self.ordered}

    @classmethod
    def from_json(cls, d: dict) -> Ordering:
        return cls({h: HistoryOrder(**o) for h, o in d["per_history"].items()},
                   Summary.from_json(d["baseline_minus_block"]),
                   Summary.from_json(d["push_minus_baseline"]), d["at_bound"])


def history_means(per_run: dict[str, float]) -> dict[str, float]:
    """Per-run values keyed "history/seed" -> each history's mean over its measured seeds."""
    groups: dict[str, list[float]] = {}
    for key, value in per_run.items():
        if finite([value]):
            groups.setdefault(key.rsplit("/", 1)[0], []).append(value)
    return {h: float(np.mean(v)) for h, v in groups.items()}


def paired_by_history(a: dict[str, float], b: dict[str, float]) -> Summary:
    """a - b paired by run, averaged within each history, then a 95% t interval over the
    history means (histories - 1 df): the history is the unit of replication."""
    diff = {k: a[k] - b[k] for k in sorted(a) if k in b and len(finite([a[k], b[k]])) == 2}
    return summary(history_means(diff).values())


def percent_level(measure: str, value: float, span: float) -> float | None:
    """A run's value as a percentage that can sit at 0 or 100 (an area: its mean level over
    the span of logged steps); None for a measure without a floor or ceiling."""
    if measure in ("non_refusal", "harmful_compliance"):
        return value
    return value / span if measure == "area_non_refusal" else None


def ordering(arms: dict[str, ArmMetrics], span: float) -> dict[str, Ordering]:
    """block < baseline < push per measure, per history and pooled; {} without block or push.

    `span`: the logged steps' span (T), which turns the area under non-refusal into a level.
    """
    if not all(a in arms for a in ORDERED):
        return {}
    out = {}
    for m in ORDER_MEASURES:
        runs = {a: arms[a].per_run.get(m, {}) for a in ORDERED}
        if not all(finite(r.values()) for r in runs.values()):
            continue  # not measured in this setting: no ordering to judge
        means = {a: history_means(r) for a, r in runs.items()}
        level = [percent_level(m, v, span) for r in runs.values() for v in r.values()]
        out[m] = Ordering(
            per_history={h: HistoryOrder(means["block"][h], means[BASELINE][h], means["push"][h])
                         for h in means[BASELINE]},
            baseline_minus_block=paired_by_history(runs[BASELINE], runs["block"]),
            push_minus_baseline=paired_by_history(runs["push"], runs[BASELINE]),
            at_bound=None not in level and at_bound(level),
        )
    return out
