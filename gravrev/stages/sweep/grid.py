"""The depth sweep's grid: its units (H depth, S depth, seed) and the runs that build them."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

from gravrev.config.load import Config
from gravrev.config.organism import PhaseConfig
from gravrev.store.paths import Paths
from gravrev.training.tasks import HelpfulTask, HistoryTask

ABLATION = "ablation.csv"  # in data/sweep: each unit's theta_S judged with its v_rev ablated


@dataclass(frozen=True)
class Unit:
    """One history of the grid: H and S depths (steps) and the history seed."""

    helpful_steps: int
    safe_steps: int
    seed: int

    @property
    def cell(self) -> str:
        return f"H{self.helpful_steps}_S{self.safe_steps}"

    @property
    def name(self) -> str:
        return f"{self.cell}_s{self.seed}"


def grid(cfg: Config) -> list[Unit]:
    """Every (cell, seed) of cfg.sweep, in a fixed order."""
    sw = cfg.sweep
    return [Unit(h, s, seed) for h, s, seed in
            itertools.product(sw.helpful_steps, sw.safe_steps, sw.seeds)]


def main_helpful(cfg: Config, unit: Unit) -> bool:
    """The unit's H depth and seed are stage history's own: its theta_H is stage history's."""
    return unit.helpful_steps == cfg.history.helpful.steps and unit.seed in cfg.history.seeds


def is_main(cfg: Config, unit: Unit) -> bool:
    """The unit is one of stage history's own histories (whose outputs it reuses)."""
    return main_helpful(cfg, unit) and unit.safe_steps == cfg.history.safe.steps


def _helpful(cfg: Config, unit: Unit) -> PhaseConfig:
    return dataclasses.replace(cfg.history.helpful, steps=unit.helpful_steps)


def witnesses(cfg: Config, paths: Paths, units: list[Unit], out: Path
              ) -> tuple[list[HelpfulTask], dict[Unit, Path]]:
    """theta_H of each (H depth, seed) the units need, trained once and shared by its S depths;
    stage history's own theta_H where the depth and seed are its (the same bytes, not retrained)."""
    todo: dict[tuple[int, int], HelpfulTask] = {}
    where: dict[Unit, Path] = {}
    for u in units:
        if main_helpful(cfg, u):
            name = cfg.histories[cfg.history.seeds.index(u.seed)]
            where[u] = paths.checkpoint("helpful", name)
            continue
        key = (u.helpful_steps, u.seed)
        if key not in todo:
            folder = out / "witness" / f"H{u.helpful_steps}_s{u.seed}"
            todo[key] = HelpfulTask(cfg, u.seed, _helpful(cfg, u), paths.pretrained, folder)
        where[u] = todo[key].out
    return list(todo.values()), where


def history_task(cfg: Config, paths: Paths, unit: Unit, out: Path,
                 witness: Path | None = None) -> HistoryTask:
    """H then S from the shared theta_P at the unit's depths (lr and batch as configured); with a
    `witness` (the unit's theta_H, already trained), S alone."""
    safe = dataclasses.replace(cfg.history.safe, steps=unit.safe_steps)
    return HistoryTask(cfg, unit.name, unit.seed, _helpful(cfg, unit), safe, paths.pretrained,
                       out, witness)


def unit_folder(cfg: Config, paths: Paths, unit: Unit) -> Path:
    """A unit's history folder (acts, theta_H, theta_S): stage history's own for a main unit."""
    if is_main(cfg, unit):
        return paths.history / f"h{unit.seed}"
    return paths.stage("sweep") / unit.name


def unit_run(cfg: Config, paths: Paths, unit: Unit) -> Path:
    """A unit's benign fine-tuning run (npz): stage finetune's own for a main unit."""
    seed = cfg.finetune.seeds[0]
    if is_main(cfg, unit):
        return paths.run("finetune", f"h{unit.seed}", "unblocked", seed)
    return paths.run("sweep", unit.name, "unblocked", seed)
