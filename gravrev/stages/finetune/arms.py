"""The finetune stage's arms and seeds, from the config alone: what runs train, metrics name."""

from __future__ import annotations

import dataclasses

import pandas as pd

from gravrev.config.load import Config
from gravrev.runtime import seeds

LARGE_BATCH_FACTOR = 16  # the large-batch runs' batch, in units of finetune.batch_size
LOGGED_ARMS = ("unblocked", "mixed")  # the arms judged at logged steps: log.csv


def early_seeds(cfg: Config) -> list[int]:
    """The early runs' seeds of each history (1001, 1002, ...): never a main run's seed."""
    return [seeds.early_run(i) for i in range(cfg.finetune.early_runs)]


def large_batch(cfg: Config) -> Config:
    """The config of the large-batch runs: the expected direction of the first updates."""
    fc = cfg.finetune
    return dataclasses.replace(
        cfg, finetune=dataclasses.replace(fc, batch_size=LARGE_BATCH_FACTOR * fc.batch_size))


def sensitivity_variants(cfg: Config) -> list[tuple[str, Config]]:
    """The early-step sweep: each lr with adamw and sgd, each batch size at the configured lr."""
    fc = cfg.finetune
    grid = [(lr, opt, fc.batch_size) for lr in fc.sensitivity_lrs for opt in ("adamw", "sgd")]
    grid += [(fc.lr, fc.optimizer, b) for b in fc.sensitivity_batch_sizes]
    out = {}
    for lr, opt, bs in grid:
        arm = f"sens_{opt}_lr{lr:g}_bs{bs}"
        variant = dataclasses.replace(fc, lr=lr, optimizer=opt, batch_size=bs)
        out[arm] = dataclasses.replace(cfg, finetune=variant)
    return list(out.items())


def arm_configs(cfg: Config) -> dict[str, Config]:
    """Every arm this stage may run and the config it runs with."""
    out = {arm: cfg for arm in ("unblocked", "mixed", "early")}
    out["large_batch"] = large_batch(cfg)
    return out | dict(sensitivity_variants(cfg))


def arms_table(cfg: Config, arms: list[str]) -> pd.DataFrame:
    """The learning rate, optimizer and batch size of each arm (chapters read these, not names)."""
    configs = arm_configs(cfg)
    return pd.DataFrame([{"arm": a, "lr": configs[a].finetune.lr,
                          "optimizer": configs[a].finetune.optimizer,
                          "batch_size": configs[a].finetune.batch_size} for a in arms])
