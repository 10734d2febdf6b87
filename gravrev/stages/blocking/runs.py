"""Stage 05's runs: lambda fixed harm-blind, then every arm on every history and seed.

Writes data/blocking/: each run's probe snapshots, the lambda check (calibration.csv,
lambda.json) and every run's state at T (final.csv: its drift's alignment and judged behaviour).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import drift
from gravrev.runtime import seeds
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stats.nulls import (
    cosine,
    covariance,
    covariance_direction,
    isotropic_quantile,
    random_direction,
)
from gravrev.store.atomic import atomic_dir, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.objectives import BlockSpec
from gravrev.training.tasks import FinetuneOutput, FinetuneTask, finetune_task


def arm_directions(cfg: Config, paths: Paths, history: str) -> dict[str, dict[int, np.ndarray]]:
    """The direction(s) each arm acts along, per layer; freeze has none."""
    v = load_v_rev(cfg, paths, history)
    layer, seed = cfg.layer, cfg.history.seeds[cfg.histories.index(history)]
    rng = np.random.default_rng(seeds.control_directions(seed))  # random, then covariance
    mask = probe_selection(cfg, paths)
    cov = covariance(read_npz(paths.acts("safe", history))[cfg.analysis.position][layer][mask])
    out = {
        "penalty": {layer: v[layer]},
        "mean_penalty": {layer: v[layer]},
        "grad_project": {layer: v[layer]},
        "penalty_all": dict(enumerate(v)),
        "random_penalty": {layer: random_direction(v.shape[1], rng)},
        "covariance_penalty": {layer: covariance_direction(cov, rng, orthogonal_to=v[layer])},
        "freeze": {},
    }
    for other in range(v.shape[0]):
        if other != layer:
            out[f"penalty_L{other}"] = {other: v[other]}
    return out


def expand_arms(cfg: Config) -> list[str]:
    """blocking.arms with penalty_layers replaced by one arm per other layer."""
    out = []
    for arm in cfg.blocking.arms:
        if arm == "penalty_layers":
            out += [f"penalty_L{x}" for x in range(cfg.model.n_layer) if x != cfg.layer]
        else:
            out.append(arm)
    return out


def block_spec(cfg: Config, arm: str, directions: dict, lam: float, pool: list[str]) -> BlockSpec:
    """The fine-tuning objective's block of one arm at one lambda."""
    kind = ("freeze" if arm == "freeze" else "grad_project" if arm == "grad_project"
            else "mean_penalty" if arm == "mean_penalty" else "penalty")
    return BlockSpec(kind, directions, lam, tuple(pool), cfg.blocking.penalty_batch,
                     cfg.analysis.position)


def _task(cfg: Config, paths: Paths, out, history: str, seed: int, arm: str,
          spec: BlockSpec) -> FinetuneTask:
    return FinetuneTask(cfg, history, paths.history / history, seed, arm,
                        out / history / f"{arm}_seed{seed}.npz", block=spec, judge="end")


def final_drift(cfg: Config, npz, mask: np.ndarray) -> np.ndarray:
    """The harmful probes' drift from step 0 to T of one run's snapshots, analysed cell."""
    acts = read_npz(npz)[cfg.analysis.position]
    return drift(acts[-1, cfg.layer], acts[0, cfg.layer], mask)


def final_alignment(cfg: Config, npz, direction: np.ndarray, mask: np.ndarray) -> tuple:
    """(cos, projection) of the harmful probes' drift at T with a direction, analysed cell."""
    d = final_drift(cfg, npz, mask)
    return cosine(d, direction), float(d @ direction)


def choose_lambda(cfg: Config, calib: pd.DataFrame) -> tuple[float, str]:
    """The pre-registered rule: the smallest lambda that holds alignment under the isotropic
    p99 in every history with new-task cost within tolerance; else the largest within the
    cost tolerance (the check failed, said so); else the smallest lambda."""
    tol = cfg.blocking.task_cost_tolerance
    worst = calib.groupby("lambda").agg(alignment=("alignment", "max"),
                                        cost=("new_task_cost", "max")).sort_index()
    ok = worst[(worst["alignment"] < calib["p99"].iloc[0]) & (worst["cost"] <= tol)]
    if len(ok):
        return float(ok.index[0]), "passed"
    cheap = worst[worst["cost"] <= tol]
    if len(cheap):
        return float(cheap.index[-1]), "failed: no lambda held alignment under the p99"
    return float(worst.index[0]), "failed: every lambda cost more than the tolerance"


def _row(cfg: Config, d: np.ndarray, log_t: pd.Series, v: np.ndarray, own: dict,
         unblocked_d: np.ndarray) -> dict:
    """One run at T: its drift d's alignment and projection, and its judged behaviour."""
    new = f"{cfg.finetune.new_task}_accuracy"
    row = {"alignment": cosine(d, v), "non_refusal": 100 - log_t["refusal_rate"],
           "refusal_rate": log_t["refusal_rate"], "refusals": log_t["refusals"],
           "n_harmful": log_t["n_harmful"], "harmful_compliance": log_t["harmful_compliance"],
           "prefilled_content": log_t["prefilled_content"],
           "benign_accuracy": log_t["benign_accuracy"], "new_task_accuracy": log_t[new]}
    if cfg.layer in own:
        u = own[cfg.layer]
        row["projection"] = float(d @ u)
        row["projection_unblocked"] = float(unblocked_d @ u)
    return row


def run(cfg: Config, paths: Paths) -> None:
    """Fix lambda (harm-blind), run every arm; every run's state at T goes to final.csv."""
    pool = make_setting(cfg, paths.history / cfg.histories[0]).penalty_pool(cfg.blocking.pool_size)
    dirs = {h: arm_directions(cfg, paths, h) for h in cfg.histories}
    mask = probe_selection(cfg, paths)
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    unblocked = log[log["arm"] == "unblocked"].set_index(["history", "seed", "step"])
    new = f"{cfg.finetune.new_task}_accuracy"
    v_rev = {h: dirs[h]["penalty"][cfg.layer] for h in cfg.histories}  # read once, not per run
    p99 = isotropic_quantile(v_rev[cfg.histories[0]].size, cfg.analysis.null_quantile)
    arms = expand_arms(cfg)
    with atomic_dir(paths.stage("blocking")) as out:
        seed0 = cfg.finetune.seeds[0]
        calib_tasks = [
            _task(cfg, paths, out / "calibration", h, seed0, f"penalty_lambda{lam:g}",
                  block_spec(cfg, "penalty", dirs[h]["penalty"], lam, pool))
            for lam in cfg.blocking.lambda_grid for h in cfg.histories
        ]
        calib_done = run_all(finetune_task, calib_tasks, cfg.executor, desc="lambda check")
        rows = []
        for t, d in zip(calib_tasks, calib_done, strict=True):
            a, _ = final_alignment(cfg, t.out, v_rev[t.history], mask)
            ref = unblocked.loc[(t.history, t.seed, cfg.finetune.steps), new]
            rows.append({"lambda": t.block.lam, "history": t.history, "alignment": a, "p99": p99,
                         "new_task_cost": ref - d.log.iloc[-1][new]})
        calibration = pd.DataFrame(rows)
        lam, check = choose_lambda(cfg, calibration)
        tasks = [
            _task(cfg, paths, out, h, seed, arm, block_spec(cfg, arm, dirs[h][arm], lam, pool))
            for arm in arms for h in cfg.histories for seed in cfg.finetune.seeds
        ]
        done = run_arms(tasks, calib_tasks, calib_done, lam, cfg)
        ref_hash = pd.read_csv(paths.stage("finetune") / "runs.csv").set_index(
            ["history", "arm", "seed"])["batch_hash"]
        ub = {(h, seed): final_drift(cfg, paths.run("finetune", h, "unblocked", seed), mask)
              for h in cfg.histories for seed in cfg.finetune.seeds}  # each read once
        final = []
        for t, d in zip(tasks, done, strict=True):
            if d.batch_hash != ref_hash[(t.history, "unblocked", t.seed)]:
                raise AssertionError(f"{t.arm} {t.history} seed {t.seed}: other batches than "
                                     "the unblocked run")
            final.append({"arm": t.arm, "history": t.history, "seed": t.seed,
                          **_row(cfg, final_drift(cfg, t.out, mask), d.log.iloc[-1],
                                 v_rev[t.history], dirs[t.history][t.arm], ub[t.history, t.seed])})
        for (h, seed), d in ub.items():
            final.append({"arm": "unblocked", "history": h, "seed": seed,
                          **_row(cfg, d, unblocked.loc[(h, seed, cfg.finetune.steps)], v_rev[h],
                                 {cfg.layer: v_rev[h]}, d)})
        final = pd.DataFrame(final)
        final["task_cost_not_block"] = (final["new_task_accuracy"]
                                        < cfg.finetune.min_new_task_accuracy)
        write_csv(out / "calibration.csv", calibration)
        write_csv(out / "final.csv", final)
        write_json(out / "lambda.json", {"lambda": lam, "check": check})


def run_arms(tasks: list[FinetuneTask], checked: list[FinetuneTask], checked_done: list,
             lam: float, cfg: Config) -> list[FinetuneOutput]:
    """Every arm's run; the lambda check's runs at the chosen lambda are the penalty arm's (the
    same tasks, the same bytes): copied, not run again."""
    same = {(t.history, t.seed): (t, d) for t, d in zip(checked, checked_done, strict=True)
            if t.block.lam == lam}
    reuse = {i: same[(t.history, t.seed)] for i, t in enumerate(tasks)
             if t.arm == "penalty" and (t.history, t.seed) in same}
    rest = [t for i, t in enumerate(tasks) if i not in reuse]
    ran = iter(run_all(finetune_task, rest, cfg.executor, desc="blocking arms"))
    done = []
    for i, t in enumerate(tasks):
        if i in reuse:
            c, d = reuse[i]
            t.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(c.out, t.out)
            done.append(dataclasses.replace(d, arm=t.arm, log=d.log.assign(arm=t.arm)))
        else:
            done.append(next(ran))
    return done
