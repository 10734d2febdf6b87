"""Stage 02: benign fine-tuning from theta_S, snapshotting probe activations at the logged steps."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel

from gravrev.activations import probe_activations
from gravrev.blocking import NoBlock
from gravrev.config import Config, Paths
from gravrev.io import write_csv, write_json, write_npz
from gravrev.setting import Setting
from gravrev.train import autocast, lm_loss, make_optimizer, set_seed, to_device


class Intervention(Protocol):
    """Something that blocks motion along v_rev during fine-tuning (see gravrev.blocking)."""

    name: str

    def prepare(self, model: PreTrainedModel) -> None: ...

    def extra_loss(self, model: PreTrainedModel) -> torch.Tensor | None: ...

    def hooks(self, model: PreTrainedModel) -> AbstractContextManager: ...


def flat_params(model: PreTrainedModel) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])


def witness_params(setting: Setting) -> torch.Tensor:
    """theta_H, flattened: load it once per stage, not once per run."""
    helpful, _ = setting.load("helpful", "cpu")
    return flat_params(helpful)


def weight_cosine(theta_t: torch.Tensor, theta_s: torch.Tensor, theta_h: torch.Tensor) -> float:
    """cos(theta_t - theta_S, theta_H - theta_S), the weight-space analogue of alignment."""
    if not theta_t.shape == theta_s.shape == theta_h.shape:
        return float("nan")  # adapters (LoRA) change the parameter set: no weight-space view
    a, b = theta_t - theta_s, theta_h - theta_s
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else float("nan")


@dataclass
class RunResult:
    arm: str
    seed: int
    log: pd.DataFrame  # one row per logged step (0 included): behaviour, losses, weight cosine
    acts: dict[str, np.ndarray]  # {'last'|'mean': (S, L, N, d)} at the logged steps
    steps: np.ndarray
    batch_hash: str
    seconds: float


def finetune_run(
    cfg: Config,
    setting: Setting,
    seed: int,
    device: str,
    arm: str = "unblocked",
    intervention: Intervention | None = None,
    mix_safety: bool = False,
    judge_every_log: bool = True,
    theta_h: torch.Tensor | None = None,
) -> RunResult:
    """One run of T steps from theta_S on harmless data; the batches depend on the seed only.

    Activations are snapshotted at every logged step; behaviour (generation and judging, the
    slow part) too, unless `judge_every_log` is False: then only at steps 0 and T.
    `theta_h` (from witness_params) is loaded here when the caller has none.
    """

    start = time.perf_counter()
    fc = cfg.finetune
    set_seed(seed)
    model, tok = setting.load("safe", device)
    theta_s = flat_params(model)
    if theta_h is None:
        theta_h = witness_params(setting)
    model = setting.prepare_for_training(model)
    intervention = intervention or NoBlock()
    intervention.prepare(model)
    opt = make_optimizer(model, fc.optimizer, fc.lr)
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    rows, snaps = [], {"last": [], "mean": []}

    def log_step(step: int, loss: float | None) -> None:
        acts = probe_activations(model, tok, setting.probe_prompts, device)
        for k in snaps:
            snaps[k].append(acts[k])
        row = {
            "arm": arm,
            "seed": seed,
            "step": step,
            "train_loss": loss,
            "weight_cosine": weight_cosine(flat_params(model), theta_s, theta_h),
        }
        if judge_every_log or step in (0, fc.steps):
            row.update(setting.behaviour(model, tok, device))
        rows.append(row)
        model.train()

    log_step(0, None)
    model.train()
    with intervention.hooks(model):
        for step in tqdm(range(1, fc.steps + 1), desc=f"{arm} seed {seed}", leave=False):
            batch = setting.benign_batch(rng, fc.batch_size, mix_safety=mix_safety)
            digest.update(batch["input_ids"].numpy().tobytes())
            batch = to_device(batch, device)
            with autocast(device):
                loss = lm_loss(model, batch)
                extra = intervention.extra_loss(model)
            total = loss if extra is None else loss + extra
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step in fc.log_steps:
                log_step(step, float(loss.detach()))
    return RunResult(
        arm,
        seed,
        pd.DataFrame(rows),
        {k: np.stack(v) for k, v in snaps.items()},
        np.array([0, *fc.log_steps]),
        digest.hexdigest(),
        time.perf_counter() - start,
    )


def save_run(result: RunResult, out_dir) -> None:
    """Activations as npz (anyone can recompute drift from them), the log as csv."""
    stem = f"{result.arm}_seed{result.seed}"  # arm names may hold dots (lr0.001): no with_suffix
    write_npz(out_dir / f"{stem}.npz", steps=result.steps, **result.acts)
    write_json(
        out_dir / f"{stem}.json",
        {
            "arm": result.arm,
            "seed": result.seed,
            "batch_hash": result.batch_hash,
            "seconds": result.seconds,
        },
    )


SENSITIVITY_STEPS = (1, 2, 5, 10, 20)


def sensitivity_settings(cfg: Config) -> list[dict]:
    """The early-step sweep: each lr with adamw and sgd, each batch size at the configured lr."""
    fc = cfg.finetune
    grid = [
        {"lr": lr, "optimizer": opt, "batch_size": fc.batch_size}
        for lr in fc.sensitivity_lrs
        for opt in ("adamw", "sgd")
    ]
    grid += [
        {"lr": fc.lr, "optimizer": fc.optimizer, "batch_size": b}
        for b in fc.sensitivity_batch_sizes
    ]
    for g in grid:
        g["arm"] = f"sens_{g['optimizer']}_lr{g['lr']:g}_bs{g['batch_size']}"
    return list({g["arm"]: g for g in grid}.values())


def run_sensitivity(
    cfg: Config, paths: Paths, setting: Setting, device: str, theta_h: torch.Tensor
) -> list[dict]:
    """Short runs (first seed) showing how optimizer, lr and batch size move the early steps."""
    steps = min(cfg.finetune.steps, SENSITIVITY_STEPS[-1])
    log_steps = tuple(s for s in SENSITIVITY_STEPS if s <= steps)
    done = []
    for g in sensitivity_settings(cfg):
        fc = dataclasses.replace(
            cfg.finetune,
            lr=g["lr"],
            optimizer=g["optimizer"],
            batch_size=g["batch_size"],
            steps=steps,
            log_steps=log_steps,
        )
        run_cfg = dataclasses.replace(cfg, finetune=fc)
        seed = cfg.finetune.seeds[0]
        result = finetune_run(
            run_cfg, setting, seed, device, arm=g["arm"], judge_every_log=False, theta_h=theta_h
        )
        save_run(result, paths.finetune)
        done.append({**g, "seed": seed})
    write_json(paths.finetune / "sensitivity.json", done)
    return done


def run_finetune(cfg: Config, paths: Paths, setting: Setting, device: str) -> pd.DataFrame:
    """Every seed unblocked, and (if asked) the control runs with the safety data mixed in."""
    arms = [("unblocked", False)] + ([("mixed", True)] if cfg.finetune.mixed_control else [])
    logs, timings = [], {}
    theta_h = witness_params(setting)
    for arm, mix in arms:
        for seed in cfg.finetune.seeds:
            result = finetune_run(
                cfg, setting, seed, device, arm=arm, mix_safety=mix, theta_h=theta_h
            )
            save_run(result, paths.finetune)
            logs.append(result.log)
            timings[f"{arm}_seed{seed}"] = result.seconds
    log = pd.concat(logs, ignore_index=True)
    write_csv(paths.finetune / "log.csv", log)
    start = time.perf_counter()
    run_sensitivity(cfg, paths, setting, device, theta_h)
    timings["sensitivity"] = time.perf_counter() - start
    write_json(paths.finetune / "timings.json", timings)
    write_csv(paths.finetune / "probes.csv", setting.probes)
    return log


def final_rows(log: pd.DataFrame, arm: str) -> pd.DataFrame:
    """One row per seed: the arm's behaviour at the last step."""
    df = log[log["arm"] == arm]
    return df[df["step"] == df["step"].max()]


def finetune_metrics(cfg: Config, log: pd.DataFrame) -> dict:
    """data/metrics/finetune.json: theta_S's behaviour and each arm's at T, per seed."""
    start = log[(log["arm"] == "unblocked") & (log["step"] == 0)].iloc[0]
    cols = [
        c
        for c in log.columns
        if c.endswith(("_rate", "_compliance", "_accuracy", "_loss", "_content"))
    ]
    out = {
        "preset": cfg.preset,
        "steps": cfg.finetune.steps,
        "seeds": list(cfg.finetune.seeds),
        "safe_start": {c: start[c] for c in cols},
        "final": {},
    }
    for arm in log["arm"].unique():
        fin = final_rows(log, arm)
        out["final"][arm] = {c: fin[c].tolist() for c in cols}
    return out


def run_stage(cfg: Config, paths: Paths, device: str) -> pd.DataFrame:
    """Stage 02: every fine-tuning run, its log and data/metrics/finetune.json."""
    from gravrev.setting import make_setting

    log = run_finetune(cfg, paths, make_setting(cfg, paths), device)
    write_json(paths.metrics / "finetune.json", finetune_metrics(cfg, log))
    return log
