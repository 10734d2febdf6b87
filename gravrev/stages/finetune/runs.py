"""Stage 02, finetune, its runs: benign fine-tuning of every history and seed, the controls."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gravrev.config.load import Config
from gravrev.runtime.executor import run_all
from gravrev.stages.finetune.arms import (
    LOGGED_ARMS,
    early_seeds,
    large_batch,
    sensitivity_variants,
)
from gravrev.stages.finetune.search import confirm_tasks, search_log, search_tasks
from gravrev.store.atomic import atomic_dir, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.tasks import FinetuneOutput, FinetuneTask, finetune_task


def tasks(cfg: Config, paths: Paths, out: Path) -> list[FinetuneTask]:
    """Every run of this stage, in a fixed order; `out` is the stage's (temporary) folder."""
    fc = cfg.finetune
    early = fc.early_steps
    todo = []
    for h in cfg.histories:
        ckpt = paths.history / h
        for seed in fc.seeds:
            npz = out / h / f"unblocked_seed{seed}.npz"
            todo.append(FinetuneTask(cfg, h, ckpt, seed, "unblocked", npz))
        if fc.mixed_control:
            for seed in fc.seeds:
                npz = out / h / f"mixed_seed{seed}.npz"
                todo.append(FinetuneTask(cfg, h, ckpt, seed, "mixed", npz, mix_safety=True,
                                         judge="end"))
        for seed in early_seeds(cfg):
            todo.append(FinetuneTask(cfg, h, ckpt, seed, "early", out / h / f"early_seed{seed}.npz",
                                     judge="none", log_steps=early))
    # The expected direction of the first updates: one run per history at 16x the batch, for
    # the early-step claims only (none without early runs: 16x the batch of a real model is
    # rarely affordable).
    large, seed = large_batch(cfg), fc.seeds[0]
    if fc.early_runs:
        todo += [FinetuneTask(large, h, paths.history / h, seed, "large_batch",
                              out / h / f"large_batch_seed{seed}.npz", judge="none",
                              log_steps=early) for h in cfg.histories]
    h, seed = cfg.histories[0], fc.seeds[0]
    for arm, variant in sensitivity_variants(cfg):
        todo.append(FinetuneTask(variant, h, paths.history / h, seed, arm,
                                 out / h / f"{arm}_seed{seed}.npz", judge="none", log_steps=early))
    return todo + search_tasks(cfg, paths, out)


def run(cfg: Config, paths: Paths) -> None:
    """Run every fine-tuning task through the executor; write the logs, hashes and snapshots."""
    with atomic_dir(paths.stage("finetune")) as out:
        todo = tasks(cfg, paths, out)
        done: list[FinetuneOutput] = run_all(finetune_task, todo, cfg.executor,
                                             desc="fine-tuning runs")
        # The confirmation's cells follow from the screen's outcome, so they run second.
        more = confirm_tasks(cfg, paths, out, search_log(todo, done))
        if more:
            todo += more
            done += run_all(finetune_task, more, cfg.executor, desc="confirmation runs")
        logs = [d.log for d in done if d.arm in LOGGED_ARMS]
        write_csv(out / "log.csv", pd.concat(logs, ignore_index=True))
        write_csv(out / "search_log.csv", search_log(todo, done))
        write_csv(out / "runs.csv", pd.DataFrame(
            [{"history": d.history, "arm": d.arm, "seed": d.seed, "batch_hash": d.batch_hash}
             for d in done if d.arm != "search"]))
    # Keyed by the output's path: a search cell's name is unique only with its folder.
    write_json(paths.timings / "finetune_runs.json",
               {t.out.relative_to(out).with_suffix("").as_posix(): d.seconds
                for t, d in zip(todo, done, strict=True)})
