"""Benign fine-tuning from theta_S, snapshotting probe activations at the logged steps."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from gravrev.config.experiment import FinetuneConfig
from gravrev.interp.activations import probe_activations
from gravrev.settings.protocol import Setting
from gravrev.training.loop import (
    autocast,
    make_optimizer,
    set_seed,
    to_device,
    warmup_linear,
)
from gravrev.training.objectives import Baseline, Objective
from gravrev.training.rehearsal import Rehearsal


def flat_params(model: PreTrainedModel) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])


def weight_cosine(theta_t: torch.Tensor, theta_s: torch.Tensor, theta_h: torch.Tensor) -> float:
    """cos(theta_t - theta_S, theta_H - theta_S), the weight-space analogue of alignment."""
    if not theta_t.shape == theta_s.shape == theta_h.shape:
        return float("nan")  # adapters (LoRA) change the parameter set: no weight-space view
    a, b = theta_t - theta_s, theta_h - theta_s
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else float("nan")


JUDGE_MODES = ("every", "ends", "end", "none")


@dataclass
class RunResult:
    """One fine-tuning run: its log, its activation snapshots and the hash of its batches."""

    log: pd.DataFrame  # one row per logged step (0 included): behaviour, loss, weight cosine
    acts: dict[str, np.ndarray]  # {'last'|'mean': (S, L, N, d)} at the logged steps
    steps: np.ndarray
    batch_hash: str
    seconds: float
    model: PreTrainedModel | None = None  # theta_T, only when asked for (keep_model=True)


def finetune_run(
    fc: FinetuneConfig,
    setting: Setting,
    seed: int,
    device: str,
    objective: Objective | None = None,
    mix_safety: bool = False,
    judge: str = "every",
    log_steps: tuple[int, ...] | None = None,
    *,
    keep_model: bool = False,
    rehearsal: Rehearsal | None = None,
) -> RunResult:
    """T steps from theta_S on harmless data; the batches depend on the seed only.

    Activations are snapshotted at every logged step; behaviour (generation and judging, the
    slow part) at every logged step (`every`), at steps 0 and T (`ends`), at T only (`end`:
    step 0 is theta_S, judged once by the unblocked run) or never (`none`).
    With `keep_model`, the result also holds the trained model theta_T (in eval mode).
    A `rehearsal` replaces a share of each benign batch with safety pairs; the batch hash
    stays that of the benign draws, so it still pairs the run with the baseline's batches.
    """
    if judge not in JUDGE_MODES:
        raise ValueError(f"judge must be one of {JUDGE_MODES}, got {judge!r}")
    start = time.perf_counter()
    log_steps = fc.log_steps if log_steps is None else log_steps
    steps = log_steps[-1]
    set_seed(seed)
    model, tok = setting.load("safe", device)
    theta_s = flat_params(model)
    theta_h = flat_params(setting.load("helpful", "cpu")[0])
    model = setting.prepare_for_training(model)
    objective = objective or Baseline()
    objective.prepare(model, seed)
    opt = make_optimizer(model, fc.optimizer, fc.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear(fc.warmup))
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    rows, snaps = [], {"last": [], "mean": []}

    def log_step(step: int, loss: float | None) -> None:
        acts = probe_activations(model, tok, setting.probe_prompts, device)
        for k in snaps:
            snaps[k].append(acts[k])
        row = {
            "seed": seed,
            "step": step,
            "train_loss": loss,
            "weight_cosine": weight_cosine(flat_params(model), theta_s, theta_h),
        }
        if (judge == "every" or (judge == "ends" and step in (0, steps))
                or (judge == "end" and step == steps)):
            row.update(setting.behaviour(model, tok, device))
        rows.append(row)
        model.train()

    log_step(0, None)
    model.train()
    with objective.hooks(model):
        for step in range(1, steps + 1):
            batch = setting.benign_batch(rng, fc.batch_size, mix_safety=mix_safety)
            digest.update(batch["input_ids"].numpy().tobytes())
            if rehearsal is not None:
                batch = rehearsal.mix(batch)
            batch = to_device(batch, device)
            with autocast(device):
                loss = objective.task_loss(model, batch)
                extra = objective.extra_loss(model)
            total = loss if extra is None else loss + extra
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step in log_steps:
                log_step(step, float(loss.detach()))
    return RunResult(
        pd.DataFrame(rows),
        {k: np.stack(v) for k, v in snaps.items()},
        np.array([0, *log_steps]),
        digest.hexdigest(),
        time.perf_counter() - start,
        model.eval() if keep_model else None,
    )
