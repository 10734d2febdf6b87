"""The regime search's runs: one unblocked run per grid cell on the first histories (the
screen), then, with `regime.confirm`, the screen's eligible cells on every other history.

Each cell (lr, warmup, new-task share) runs to the longest horizon; the lr schedule does not
depend on the run's length and the batches depend on the seed only, so the state at step T of
that run is the state a run of T steps would reach, and every horizon is read off one run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.finetune.grid import Cell, cell_config, cell_name, cells
from gravrev.stages.finetune.regime import candidates, eligible, judged
from gravrev.store.paths import Paths
from gravrev.training.tasks import FinetuneOutput, FinetuneTask


def _tasks(cfg: Config, paths: Paths, out: Path, histories: list[str], grid: list[Cell]
           ) -> list[FinetuneTask]:
    seed = cfg.finetune.seeds[0]
    return [FinetuneTask(cell_config(cfg, *c), h, paths.history / h, seed, "search",
                         out / "search" / h / f"{cell_name(*c)}.npz")
            for h in histories for c in grid]


def search_tasks(cfg: Config, paths: Paths, out: Path) -> list[FinetuneTask]:
    """Every search run: each cell on each searched history, at the first fine-tuning seed."""
    return _tasks(cfg, paths, out, cfg.histories[: cfg.regime.search_histories], cells(cfg))


def confirm_tasks(cfg: Config, paths: Paths, out: Path, screen: pd.DataFrame
                  ) -> list[FinetuneTask]:
    """The screen's eligible cells on every other history (none without `regime.confirm`)."""
    rc = cfg.regime
    if not rc.confirm or screen.empty:
        return []
    picked = eligible(judged(cfg, candidates(cfg, screen)))
    keep = {(float(r.lr), int(r.warmup), float(r.share)) for r in picked.itertuples()}
    chosen = [c for c in cells(cfg) if c in keep]
    return _tasks(cfg, paths, out, list(cfg.histories[rc.search_histories:]), chosen)


def search_log(todo: list[FinetuneTask], done: list[FinetuneOutput]) -> pd.DataFrame:
    """The search runs' logs, each row with its cell's lr, warmup and new-task share."""
    logs = [d.log.assign(lr=t.cfg.finetune.lr, warmup=t.cfg.finetune.warmup,
                         share=t.cfg.finetune.new_task_fraction)
            for t, d in zip(todo, done, strict=True) if t.arm == "search"]
    if not logs:
        return pd.DataFrame(columns=["history", "arm", "seed", "step", "lr", "warmup", "share"])
    return pd.concat(logs, ignore_index=True)
