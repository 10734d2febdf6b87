"""The regime search's runs: one unblocked run per grid cell on the first histories (the
screen), then, with `regime.confirm`, the screen's eligible cells on every other history.

Each cell (lr, warmup, new-task share) runs to the longest horizon; the lr schedule does not
depend on the run's length and the batches depend on the seed only, so the state at step T of
that run is the state a run of T steps would reach, and every horizon is read off one run.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.finetune.regime import candidates, eligible, judged
from gravrev.store.paths import Paths
from gravrev.training.tasks import FinetuneOutput, FinetuneTask

# The logged steps of a search run besides its horizons: enough to see a shock early on.
EARLY_LOG = (5, 10, 20, 50)


def cells(cfg: Config) -> list[tuple[float, int, float]]:
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


def search_tasks(cfg: Config, paths: Paths, out: Path) -> list[FinetuneTask]:
    """Every search run: each cell on each searched history, at the first fine-tuning seed."""
    seed = cfg.finetune.seeds[0]
    return [FinetuneTask(cell_config(cfg, *c), h, paths.history / h, seed, "search",
                         out / "search" / h / f"{cell_name(*c)}.npz")
            for h in cfg.histories[: cfg.regime.search_histories] for c in cells(cfg)]


def confirm_tasks(cfg: Config, paths: Paths, out: Path, screen: pd.DataFrame
                  ) -> list[FinetuneTask]:
    """The screen's eligible cells on every other history (none without `regime.confirm`)."""
    rc = cfg.regime
    if not rc.confirm or screen.empty:
        return []
    picked = eligible(judged(cfg, candidates(cfg, screen)))
    keep = {(float(r.lr), int(r.warmup), float(r.share)) for r in picked.itertuples()}
    chosen = [c for c in cells(cfg) if c in keep]
    seed = cfg.finetune.seeds[0]
    return [FinetuneTask(cell_config(cfg, *c), h, paths.history / h, seed, "search",
                         out / "search" / h / f"{cell_name(*c)}.npz")
            for h in cfg.histories[rc.search_histories:] for c in chosen]


def search_log(todo: list[FinetuneTask], done: list[FinetuneOutput]) -> pd.DataFrame:
    """The search runs' logs, each row with its cell's lr, warmup and new-task share."""
    logs = [d.log.assign(lr=t.cfg.finetune.lr, warmup=t.cfg.finetune.warmup,
                         share=t.cfg.finetune.new_task_fraction)
            for t, d in zip(todo, done, strict=True) if t.arm == "search"]
    if not logs:
        return pd.DataFrame(columns=["history", "arm", "seed", "step", "lr", "warmup", "share"])
    return pd.concat(logs, ignore_index=True)
