"""The regime search's grid: its cells (lr, warmup, new-task share) and each cell's run config.

Torch-free, so the budget page and the chapter read the grid without the training code.
"""

from __future__ import annotations

import dataclasses
import itertools

from gravrev.config.load import Config

Cell = tuple[float, int, float]

# The logged steps of a search run besides its horizons: enough to see a shock early on.
EARLY_LOG = (5, 10, 20, 50)


def cells(cfg: Config) -> list[Cell]:
    """The grid: (lr, warmup, new-task share), in a fixed order."""
    rc = cfg.regime
    return list(itertools.product(rc.lrs, rc.warmups, rc.new_task_fractions))


def cell_name(lr: float, warmup: int, share: float) -> str:
    return f"lr{lr:g}_w{warmup}_share{share:g}"


def cell_config(cfg: Config, lr: float, warmup: int, share: float) -> Config:
    """The config of one cell's run: the main regime with the cell's values, to the longest T."""
    horizons = cfg.regime.horizons
    early = {*EARLY_LOG, *cfg.finetune.log_steps}  # no shock is judged where the main runs log
    log = tuple(sorted({*(s for s in early if s < horizons[-1]), *horizons}))
    fc = dataclasses.replace(cfg.finetune, lr=lr, warmup=warmup, new_task_fraction=share,
                             steps=horizons[-1], log_steps=log)
    return dataclasses.replace(cfg, finetune=fc)
