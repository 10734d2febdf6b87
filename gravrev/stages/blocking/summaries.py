"""Stage 05's summaries with the history as the unit: one measure's (Summary) and one arm's
(ArmMetrics: every measure at T and the areas over the logged steps)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from gravrev.stats.summaries import summarize

MEASURES = ("alignment", "non_refusal", "harmful_compliance", "prefilled_content",
            "benign_accuracy", "new_task_accuracy", "cumulative_reversion", "area_non_refusal")


@dataclass(frozen=True)
class Summary:
    """summarize()'s mean, sd, n and 95% t interval of one measure (NaN: undefined); an arm's
    over the history means (n: histories) when there are two or more, else over runs."""

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float

    @classmethod
    def from_json(cls, d: dict) -> Summary:
        return cls(**{k: float("nan") if v is None else v for k, v in d.items()})

    @property
    def excludes_zero(self) -> int:
        """+1 when the 95% interval lies above 0, -1 below, 0 otherwise (the one sign rule)."""
        return 1 if self.ci_low > 0 else -1 if self.ci_high < 0 else 0


def finite(values) -> list[float]:
    """The values that were measured: None and NaN (a measure the setting lacks) dropped."""
    return [float(x) for x in values if x is not None and math.isfinite(x)]


def summary(values) -> Summary:
    """summarize() over the measured values; all NaN (n = 0) where none was measured."""
    kept = finite(values)
    if not kept:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    return Summary(**summarize(kept))


@dataclass(frozen=True)
class ArmMetrics:
    """One arm at T (and over the logged steps: the areas) over histories and seeds."""

    alignment: Summary
    non_refusal: Summary
    harmful_compliance: Summary
    prefilled_content: Summary
    benign_accuracy: Summary
    new_task_accuracy: Summary
    cumulative_reversion: Summary | None  # None in metrics written before issue 22
    area_non_refusal: Summary | None
    non_refusal_pooled_wilson: tuple[float, float]  # percent, refusals pooled over runs
    task_cost_not_block: bool  # every run failed to learn the new task
    per_run: dict[str, dict[str, float]]  # measure -> "history/seed" -> value

    def to_json(self) -> dict:
        return {**{m: asdict(getattr(self, m)) for m in MEASURES},
                "non_refusal_pooled_wilson": list(self.non_refusal_pooled_wilson),
                "task_cost_not_block": self.task_cost_not_block, "per_run": self.per_run}

    @classmethod
    def from_json(cls, d: dict) -> ArmMetrics:
        return cls(**{m: Summary.from_json(d[m]) if m in d else None for m in MEASURES},
                   non_refusal_pooled_wilson=tuple(d["non_refusal_pooled_wilson"]),
                   task_cost_not_block=d["task_cost_not_block"], per_run=d["per_run"])
