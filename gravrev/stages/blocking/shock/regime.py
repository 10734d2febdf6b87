"""The shock regime: the claim arms again under the earlier, shock-like fine-tuning regime.

The same histories, the first fine-tuning seed, the main regime's harm-blind lambda (fixed
once, in the main regime) and each arm's own direction: only the regime differs, so a
conclusion that changes between the two depends on the regime.
"""

from __future__ import annotations

import dataclasses

from gravrev.config.load import Config

SHOCK = "shock"  # the prefix of a shock run's arm name: shock_unblocked, shock_block, ...


def shock_config(cfg: Config) -> Config:
    """The config of the shock runs: the main config with the shock regime's schedule."""
    sc = cfg.regime.shock
    fc = dataclasses.replace(cfg.finetune, lr=sc.lr, warmup=sc.warmup, steps=sc.steps,
                             new_task_fraction=sc.new_task_fraction, log_steps=sc.log_steps)
    return dataclasses.replace(cfg, finetune=fc)


def shock_runs(cfg: Config) -> list[tuple[str, str]]:
    """The shock runs' (history, arm), first fine-tuning seed: the first regime.shock.n_histories
    histories, unblocked and each of regime.shock.arms."""
    return [(h, a) for h in cfg.first_histories(cfg.regime.shock.n_histories)
            for a in ("unblocked", *cfg.regime.shock.arms)]


def shock_arm(arm: str) -> str:
    return f"{SHOCK}_{arm}"


def main_arm(name: str) -> str:
    """The arm of a shock run's name (shock_block -> block)."""
    return name.removeprefix(f"{SHOCK}_")
