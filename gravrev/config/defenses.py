"""Config of the defenses stage: v_rev's block against defenses that never see theta_H."""

from __future__ import annotations

from dataclasses import dataclass

from gravrev.config.experiment import MAX_LAMBDA, distinct
from gravrev.config.fields import check

DEFENSE_ARMS = ("block", "constrained_sft", "proximal", "weight_direction",
                "refusal_direction", "rehearsal")
# Qi et al. 2024's per-token beta: 0.5 on the first answer token, 2 on the next few (their
# first 5 tokens), 0.1 after. `constrained_prefix` is how many leading tokens get the tight 0.5/2.
BETA_FIRST, BETA_PREFIX, BETA_REST = 0.5, 2.0, 0.1


@dataclass(frozen=True)
class DefensesConfig:
    """v_rev's block against defenses that never see theta_H, each over a small strength grid."""

    arms: tuple[str, ...]
    n_histories: int  # the first this many histories run (0: all)
    n_seeds: int  # the first this many fine-tuning seeds run (0: all)
    block_grid: tuple[float, ...]  # lambda of the block along v_rev
    constrained_sft_grid: tuple[float, ...]  # scale of Qi et al.'s per-token beta schedule
    constrained_prefix: int  # leading answer tokens at beta 0.5 then 2 (Qi et al.: 5)
    proximal_grid: tuple[float, ...]  # rho
    weight_direction_grid: tuple[float, ...]  # lambda
    refusal_direction_grid: tuple[float, ...]  # lambda of the block along -r
    rehearsal_grid: tuple[float, ...]  # share of each batch given to safety pairs

    def grid(self, arm: str) -> tuple[float, ...]:
        return getattr(self, f"{arm}_grid")

    def validate(self, name: str) -> None:
        for arm in self.arms:
            check(arm in DEFENSE_ARMS, f"{name}.arms",
                  f"unknown arm {arm!r}; known: {DEFENSE_ARMS}")
        distinct(self.arms, f"{name}.arms", "arms")
        check("block" in self.arms, f"{name}.arms",
              "must list block: every defense is compared with it")
        check(self.n_histories >= 0, f"{name}.n_histories", "must be >= 0 (0: all)")
        check(self.n_seeds >= 0, f"{name}.n_seeds", "must be >= 0 (0: all)")
        check(1 <= self.constrained_prefix <= 64, f"{name}.constrained_prefix",
              "must be in [1, 64] answer tokens")
        for arm in DEFENSE_ARMS:
            grid, field = self.grid(arm), f"{name}.{arm}_grid"
            check(len(grid) >= 1 and list(grid) == sorted(set(grid)), field,
                  "needs at least one strength, strictly increasing")
            check(all(0 < x <= MAX_LAMBDA for x in grid), field,
                  f"every strength must be in (0, {MAX_LAMBDA:g}]")
        check(all(x < 1 for x in self.rehearsal_grid), f"{name}.rehearsal_grid",
              "every share must be in (0, 1): some rows benign, some safety pairs")
