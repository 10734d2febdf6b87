"""Config of the fine-tuning regime: its pre-registered rule, its search, the shock regime."""

from __future__ import annotations

from dataclasses import dataclass

from gravrev.config.experiment import distinct
from gravrev.config.fields import check
from gravrev.config.organism import MAX_STEPS


@dataclass(frozen=True)
class ShockConfig:
    """The earlier, shock-like regime, kept to show how the conclusions depend on the regime."""

    lr: float
    warmup: int
    new_task_fraction: float
    steps: int
    log_steps: tuple[int, ...]
    arms: tuple[str, ...]  # the claim arms run in it, beside the unblocked baseline
    n_histories: int  # the first n histories (0: all), at the first fine-tuning seed

    def validate(self, name: str) -> None:
        check(0 < self.lr < 1, f"{name}.lr", "must be in (0, 1)")
        check(0 <= self.new_task_fraction <= 1, f"{name}.new_task_fraction",
              "must be in [0, 1]")
        check(1 <= self.steps <= MAX_STEPS, f"{name}.steps", f"must be in [1, {MAX_STEPS}]")
        check(0 <= self.warmup < self.steps, f"{name}.warmup", "must be in [0, steps)")
        check(list(self.log_steps) == sorted(set(self.log_steps)) and len(self.log_steps) >= 1
              and self.log_steps[0] >= 1 and self.log_steps[-1] == self.steps,
              f"{name}.log_steps", "must be strictly increasing steps >= 1 ending at steps")
        distinct(self.arms, f"{name}.arms", "arms")
        check(self.n_histories >= 0, f"{name}.n_histories", "must be >= 0 (0: every history)")


@dataclass(frozen=True)
class RegimeConfig:
    """The regime's pre-registered rule, its search on the unblocked arm, the shock regime."""

    search_histories: int  # the first n histories, one unblocked run per grid cell (the screen)
    confirm: bool  # the screen's eligible cells also run on every other history; chosen over all
    lrs: tuple[float, ...]
    warmups: tuple[int, ...]
    new_task_fractions: tuple[float, ...]
    horizons: tuple[int, ...]  # candidate T, read off one run: the lr is constant after warmup
    max_benign_drop: float  # points below theta_S's benign accuracy, at every logged step
    nonrefusal_band: tuple[float, ...]  # (low, high): pooled non-refusal at T strictly inside
    shock: ShockConfig

    def validate(self, name: str) -> None:
        check(self.search_histories >= 0, f"{name}.search_histories", "must be >= 0 (0: no search)")
        for key in ("lrs", "warmups", "new_task_fractions", "horizons"):
            values = getattr(self, key)
            check(len(values) >= 1 or self.search_histories == 0, f"{name}.{key}",
                  "needs at least one value when search_histories > 0")
            distinct(values, f"{name}.{key}", key)
        check(all(0 < lr < 1 for lr in self.lrs), f"{name}.lrs", "every lr must be in (0, 1)")
        check(all(0 <= f <= 1 for f in self.new_task_fractions), f"{name}.new_task_fractions",
              "every share must be in [0, 1]")
        check(list(self.horizons) == sorted(self.horizons)
              and all(1 <= h <= MAX_STEPS for h in self.horizons), f"{name}.horizons",
              f"must be increasing step counts in [1, {MAX_STEPS}]")
        check(all(0 <= w <= min(self.horizons, default=MAX_STEPS) for w in self.warmups),
              f"{name}.warmups", "every warmup must be at most the shortest horizon")
        check(0 <= self.max_benign_drop <= 100, f"{name}.max_benign_drop",
              "must be in [0, 100] (percentage points)")
        band = self.nonrefusal_band
        check(len(band) == 2 and 0 <= band[0] < band[1] <= 100, f"{name}.nonrefusal_band",
              "must be [low, high] with 0 <= low < high <= 100 (percent)")
