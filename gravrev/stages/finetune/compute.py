"""Stage 02, finetune: benign fine-tuning of every history and seed, the controls, early runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from gravrev.config.load import Config
from gravrev.runtime.executor import run_all
from gravrev.store.atomic import atomic_dir, read_json, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.tasks import FinetuneOutput, FinetuneTask, finetune_task

EARLY_SEED0 = 1000  # early runs use seeds 1001, 1002, ...: never a main run's seed


def early_seeds(cfg: Config) -> list[int]:
    return [EARLY_SEED0 + i for i in range(1, cfg.finetune.early_runs + 1)]


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


def tasks(cfg: Config, paths: Paths, out) -> list[FinetuneTask]:
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
    large_fc = dataclasses.replace(fc, batch_size=16 * fc.batch_size)
    large, seed = dataclasses.replace(cfg, finetune=large_fc), fc.seeds[0]
    if fc.early_runs:
        todo += [FinetuneTask(large, h, paths.history / h, seed, "large_batch",
                              out / h / f"large_batch_seed{seed}.npz", judge="none",
                              log_steps=early) for h in cfg.histories]
    h, seed = cfg.histories[0], fc.seeds[0]
    for arm, variant in sensitivity_variants(cfg):
        todo.append(FinetuneTask(variant, h, paths.history / h, seed, arm,
                                 out / h / f"{arm}_seed{seed}.npz", judge="none", log_steps=early))
    return todo


@dataclass
class FinetuneResult:
    """What chapter 02 shows."""

    log: pd.DataFrame  # unblocked and mixed runs: history, arm, seed, step, behaviour
    runs: pd.DataFrame  # every run: history, arm, seed, batch_hash
    regime: pd.DataFrame  # per history and seed: the new task's accuracy at T against the rule


def regime_table(cfg: Config, log: pd.DataFrame) -> pd.DataFrame:
    """The pre-registered regime's rule, per unblocked run: the new task learned by T."""
    col = f"{cfg.finetune.new_task}_accuracy"
    fin = log[(log["arm"] == "unblocked") & (log["step"] == cfg.finetune.steps)]
    out = fin[["history", "seed", col, "refusal_rate"]].rename(
        columns={col: "new_task_accuracy", "refusal_rate": "refusal_at_T"}
    )
    out["learned"] = out["new_task_accuracy"] >= cfg.finetune.min_new_task_accuracy
    return out.reset_index(drop=True)


def metrics(cfg: Config, log: pd.DataFrame) -> dict:
    """data/metrics/finetune.json: theta_S's behaviour and each arm's at T, per history and seed."""
    cols = [c for c in log.columns if c.endswith(("_rate", "_compliance", "_accuracy",
                                                   "_loss", "_content"))]
    out: dict = {"preset": cfg.preset, "steps": cfg.finetune.steps,
                 "seeds": list(cfg.finetune.seeds), "histories": {}}
    for h, g in log.groupby("history", sort=False):
        start = g[(g["arm"] == "unblocked") & (g["step"] == 0)]
        entry = {"safe_start": {c: float(start[c].iloc[0]) for c in cols}, "final": {}}
        for arm, a in g.groupby("arm", sort=False):
            fin = a[a["step"] == a["step"].max()].sort_values("seed")
            entry["final"][arm] = {c: fin[c].tolist() for c in cols}
        out["histories"][h] = entry
    regime = regime_table(cfg, log)
    out["regime"] = {"rule": f"{cfg.finetune.new_task} accuracy >= "
                             f"{cfg.finetune.min_new_task_accuracy:g}% at T in every run",
                     "holds": bool(regime["learned"].all())}
    return out


def run(cfg: Config, paths: Paths) -> FinetuneResult:
    """Run every fine-tuning task through the executor; write logs, hashes and metrics."""
    with atomic_dir(paths.stage("finetune")) as out:
        done: list[FinetuneOutput] = run_all(finetune_task, tasks(cfg, paths, out), cfg.executor,
                                             desc="fine-tuning runs")
        logs = [d.log for d in done if d.arm in ("unblocked", "mixed")]
        write_csv(out / "log.csv", pd.concat(logs, ignore_index=True))
        write_csv(out / "runs.csv", pd.DataFrame(
            [{"history": d.history, "arm": d.arm, "seed": d.seed, "batch_hash": d.batch_hash}
             for d in done]))
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    write_json(paths.metrics_file("finetune"), metrics(cfg, log))
    write_json(paths.timings / "finetune_runs.json",
               {f"{d.history}/{d.arm}_seed{d.seed}": d.seconds for d in done})
    return load(cfg, paths)


def load(cfg: Config, paths: Paths) -> FinetuneResult:
    """Read stage 02's outputs back."""
    read_json(paths.metrics_file("finetune"))  # names the stage to run if it is missing
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    return FinetuneResult(log, pd.read_csv(paths.stage("finetune") / "runs.csv"),
                          regime_table(cfg, log))


def findings(cfg: Config, r: FinetuneResult) -> list[str]:
    """What chapter 02 shows, in words computed from the logs."""
    log = r.log[r.log["arm"] == "unblocked"]
    start = log[log["step"] == 0]["refusal_rate"]
    end = log[log["step"] == cfg.finetune.steps]["refusal_rate"]
    out = [f"Benign fine-tuning on harmless data takes refusal from {start.mean():.0f}% at "
           f"theta_S to {end.mean():.0f}% at step {cfg.finetune.steps} (mean over "
           f"{len(end)} runs in {log['history'].nunique()} histories; range "
           f"{end.min():.0f}-{end.max():.0f}%)."]
    half = start.mean() / 2
    means = log.groupby("step")["refusal_rate"].mean()
    below = means[means <= half]
    if len(below) and start.mean() > 0:
        out.append(f"Half of the refusal is gone, on average, by step {int(below.index[0])}.")
    learned = r.regime["learned"]
    out.append(f"The pre-registered regime's rule (the new task at >= "
               f"{cfg.finetune.min_new_task_accuracy:g}% by T) holds in {int(learned.sum())} of "
               f"{len(learned)} runs"
               + ("; the regime is as registered." if learned.all() else
                  "; the regime does not fully meet its own rule, and the book says so."))
    mixed = r.log[(r.log["arm"] == "mixed") & (r.log["step"] == cfg.finetune.steps)]
    if len(mixed):
        out.append(f"With the safety data kept in the mix, refusal at T is "
                   f"{mixed['refusal_rate'].mean():.0f}%: the control drift is not reversion.")
    if "prefilled_content" in log:
        late = log[log["step"] == cfg.finetune.steps]["prefilled_content"]
        out.append(f"The latent harmful content (prefilled) stays at {late.mean():.0f}% at T, so "
                   "lost refusal is not masked by forgetting.")
    return out
