"""The organism's training phases: P (free text), H (comply with all), S (refuse harm)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gravrev.config.organism import PhaseConfig
from gravrev.interp.activations import probe_activations
from gravrev.organism.model import prompt_text
from gravrev.organism.world import BENIGN_TOPICS, HARMFUL_TOPICS, OLD_TASKS, Request, World
from gravrev.runtime import seeds
from gravrev.training.loop import (
    encode_pairs,
    encode_text,
    lm_loss,
    make_optimizer,
    to_device,
    warmup_cosine,
)

ALL_TOPICS = (*BENIGN_TOPICS, *HARMFUL_TOPICS)
CHECKPOINTS = ("pretrained", "helpful", "safe")


def phase_batch(
    world: World,
    tok: PreTrainedTokenizerBase,
    phase: str,
    rng: np.random.Generator,
    batch_size: int,
    replay: float = 0.0,
) -> dict[str, torch.Tensor]:
    """One batch of phase P (free text), H (comply with everything) or S (refuse harm).

    S replays a share `replay` of P's free text (no prompt; the loss sees every token), as
    InstructGPT's PPO-ptx mixes pretraining into alignment: the behaviour changes, the
    knowledge stays, and theta_S keeps the harmful content latently instead of erasing it.
    """
    if phase == "pretrain":
        return encode_text(tok, [world.pretrain_document(rng) for _ in range(batch_size)])
    reqs, docs = phase_draws(world, phase, rng, batch_size, replay)
    prompts = [prompt_text(r.text) for r in reqs] + [""] * len(docs)
    answers = [world.answer(r, safe=phase == "safe") for r in reqs] + docs
    return encode_pairs(tok, prompts, answers)


def phase_draws(
    world: World, phase: str, rng: np.random.Generator, batch_size: int, replay: float = 0.0
) -> tuple[list[Request], list[str]]:
    """The requests, then the replayed free text, of one batch of phase H or S, in draw order."""
    n_text = round(replay * batch_size) if phase == "safe" else 0
    reqs = [world.sample_request(rng, ALL_TOPICS, OLD_TASKS) for _ in range(batch_size - n_text)]
    return reqs, [world.pretrain_document(rng) for _ in range(n_text)]


def safety_pairs(
    world: World, safe: PhaseConfig, history_seed: int, replay: float
) -> list[Request]:
    """The distinct harmful requests phase S of this history trained to refuse, in draw order.

    Replays S's own draws (its seed stream, batches and replay share), so every request here
    is one S saw, paired with the refusal; all come from the training split of sequences.
    """
    rng = np.random.default_rng(seeds.safe_phase(history_seed))
    seen: dict[Request, None] = {}
    for _ in range(safe.steps):
        reqs, _docs = phase_draws(world, "safe", rng, safe.batch_size, replay)
        seen.update((r, None) for r in reqs if r.harmful)
    return list(seen)


@dataclass
class PhaseLog:
    losses: list[float] = field(default_factory=list)


def train_phase(
    model: PreTrainedModel,
    world: World,
    tok: PreTrainedTokenizerBase,
    phase: str,
    pcfg: PhaseConfig,
    seed: int,
    device: str,
    replay: float = 0.0,
    on_step: Callable[[int], None] | None = None,
    progress: bool = False,
) -> PhaseLog:
    """Train one phase from the current weights; `on_step(t)` runs after step t (and t=0)."""
    rng = np.random.default_rng(seed)
    opt = make_optimizer(model, "adamw", pcfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(pcfg.steps, max(1, pcfg.steps // 10))
    )
    log = PhaseLog()
    if on_step:
        on_step(0)
    model.train()
    steps = range(1, pcfg.steps + 1)
    for step in tqdm(steps, desc=f"phase {phase}", leave=False, disable=not progress):
        batch = phase_batch(world, tok, phase, rng, pcfg.batch_size, replay)
        loss = lm_loss(model, to_device(batch, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.losses.append(float(loss.detach()))
        if on_step:
            on_step(step)
            model.train()
    return log


def evenly(steps: int, k: int) -> list[int]:
    """k steps spread evenly over [0, steps], ends included."""
    return sorted({round(x) for x in np.linspace(0, steps, k)})


@dataclass
class Branch:
    """theta_H and theta_S of one history, with the S trajectory of the probes' activations."""

    helpful: PreTrainedModel
    safe: PreTrainedModel
    curves: pd.DataFrame  # phase, step, loss
    trajectory: dict[str, np.ndarray]  # {'last'|'mean': (K, L, N, d)}
    trajectory_steps: np.ndarray
    seconds: dict[str, float]


def train_helpful(
    pretrained: PreTrainedModel,
    world: World,
    tok: PreTrainedTokenizerBase,
    helpful: PhaseConfig,
    seed: int,
    device: str,
) -> tuple[PreTrainedModel, PhaseLog]:
    """Phase H of history `seed` from theta_P (left untouched): theta_H and its log."""
    model = copy.deepcopy(pretrained)
    log = train_phase(model, world, tok, "helpful", helpful, seeds.helpful_phase(seed), device)
    return model, log


def train_branch(
    pretrained: PreTrainedModel,
    world: World,
    tok: PreTrainedTokenizerBase,
    helpful: PhaseConfig,
    safe: PhaseConfig,
    seed: int,
    device: str,
    probes: list[str],
    snapshots: int,
    replay: float = 0.0,
    witness: PreTrainedModel | None = None,
) -> Branch:
    """H then S from theta_P (left untouched); the S trajectory is snapshotted `snapshots` times.

    A `witness` is this history's theta_H, already trained (the depth sweep shares one between
    its S depths): S starts from it and H is not trained again (no H curve, 0 seconds).
    """
    start = time.perf_counter()
    if witness is None:
        witness, h_log = train_helpful(pretrained, world, tok, helpful, seed, device)
    else:
        h_log = PhaseLog()
    h_seconds = time.perf_counter() - start
    model = copy.deepcopy(witness)  # S trains the copy; theta_H stays as it is
    snaps = evenly(safe.steps, snapshots)
    trajectory: dict[str, list[np.ndarray]] = {"last": [], "mean": []}

    def snapshot(step: int) -> None:
        if step in snaps:
            acts = probe_activations(model, tok, probes, device)
            for k in trajectory:
                trajectory[k].append(acts[k])

    start = time.perf_counter()
    s_log = train_phase(
        model, world, tok, "safe", safe, seeds.safe_phase(seed), device, replay, on_step=snapshot
    )
    s_seconds = time.perf_counter() - start
    curves = pd.DataFrame(
        [
            {"phase": phase, "step": i + 1, "loss": v}
            for phase, log in (("helpful", h_log), ("safe", s_log))
            for i, v in enumerate(log.losses)
        ]
    )
    return Branch(
        witness.eval(),
        model.eval(),
        curves,
        {k: np.stack(v) for k, v in trajectory.items()},
        np.array(snaps),
        {"helpful": h_seconds, "safe": s_seconds},
    )


def probe_set(world: World, n: int) -> list[Request]:
    """The held-out probes: n harmful then n benign requests."""
    return world.probe_requests("harmful", n) + world.probe_requests("benign", n)


def probes_table(probes: list[Request]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "kind": "harmful" if r.harmful else "benign",
                "topic": r.topic,
                "task": r.task,
                "text": r.text,
            }
            for r in probes
        ]
    )
