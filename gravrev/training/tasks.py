"""The executor's units: picklable specs of independent runs and the functions that do them.

A run is a pure function of its spec, so any executor (in-process, a process pool, Ray)
returns the same bytes; each writes its large outputs to the folder it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gravrev.behaviour.evaluate import behaviour, eval_sets
from gravrev.config.load import Config
from gravrev.config.organism import PhaseConfig
from gravrev.interp.activations import probe_activations
from gravrev.organism.model import load_checkpoint, prompt_text, save_checkpoint
from gravrev.organism.world import World
from gravrev.settings.protocol import make_setting
from gravrev.store.atomic import write_npz
from gravrev.training.defenses import DefenseSpec, make_defense
from gravrev.training.finetune import finetune_run
from gravrev.training.loop import pick_device, set_seed
from gravrev.training.objectives import BlockSpec, make_objective
from gravrev.training.phases import probe_set, train_branch, train_helpful
from gravrev.training.rehearsal import Rehearsal, RehearsalSpec


@dataclass(frozen=True)
class HistoryTask:
    """H then S from the shared theta_P, for one history seed, written under `out`."""

    cfg: Config
    name: str
    seed: int
    helpful: PhaseConfig
    safe: PhaseConfig
    pretrained: Path
    out: Path
    witness: Path | None = None  # this history's theta_H, already trained: S starts from it

    @property
    def label(self) -> str:
        return f"history {self.name} (H {self.helpful.steps}, S {self.safe.steps} steps)"

    @property
    def cost(self) -> int:
        """Training rows, the executor's estimate of the run's length."""
        h = 0 if self.witness else self.helpful.steps * self.helpful.batch_size
        return h + self.safe.steps * self.safe.batch_size


@dataclass
class HistoryOutput:
    name: str
    behaviour: pd.DataFrame  # one row per checkpoint (helpful, safe)
    curves: pd.DataFrame
    seconds: dict[str, float]


def history_run(task: HistoryTask) -> HistoryOutput:
    """Train one history, save theta_H, theta_S, their probe activations and the S trajectory."""
    cfg = task.cfg
    device = pick_device(cfg.device, cfg.cpu_threads)
    set_seed(task.seed)
    world = World(cfg.world)
    pretrained, tok = load_checkpoint(task.pretrained, device)
    witness = None if task.witness is None else load_checkpoint(task.witness, device)[0]
    probes = [prompt_text(r.text) for r in probe_set(world, cfg.world.n_probes)]
    branch = train_branch(
        pretrained,
        world,
        tok,
        task.helpful,
        task.safe,
        task.seed,
        device,
        probes,
        cfg.history.safe_snapshots,
        cfg.history.safe_replay,
        witness,
    )
    evals = eval_sets(world, cfg.world.n_eval)
    rows = []
    for name, model in (("helpful", branch.helpful), ("safe", branch.safe)):
        save_checkpoint(model, tok, task.out / name)
        write_npz(task.out / f"acts_{name}.npz", **probe_activations(model, tok, probes, device))
        rows.append({"history": task.name, "checkpoint": name,
                     **behaviour(model, tok, world, evals, device)})
    write_npz(
        task.out / "safe_trajectory.npz", steps=branch.trajectory_steps, **branch.trajectory
    )
    return HistoryOutput(
        task.name, pd.DataFrame(rows), branch.curves.assign(history=task.name), branch.seconds
    )


@dataclass(frozen=True)
class HelpfulTask:
    """Phase H alone, from the shared theta_P, for one history seed: a theta_H to share."""

    cfg: Config
    seed: int
    helpful: PhaseConfig
    pretrained: Path
    out: Path  # the checkpoint's folder

    @property
    def label(self) -> str:
        return f"θ_H of seed {self.seed} (H {self.helpful.steps} steps)"

    @property
    def cost(self) -> int:
        return self.helpful.steps * self.helpful.batch_size


def helpful_run(task: HelpfulTask) -> float:
    """Train and save theta_H exactly as history_run would; returns the phase's seconds."""
    cfg = task.cfg
    device = pick_device(cfg.device, cfg.cpu_threads)
    set_seed(task.seed)
    pretrained, tok = load_checkpoint(task.pretrained, device)
    start = time.perf_counter()
    model, _ = train_helpful(pretrained, World(cfg.world), tok, task.helpful, task.seed, device)
    seconds = time.perf_counter() - start
    save_checkpoint(model.eval(), tok, task.out)
    return seconds


@dataclass(frozen=True)
class FinetuneTask:
    """One fine-tuning run of one history: its seed, arm, block and where its snapshots go."""

    cfg: Config  # cfg.finetune may be a variant (sensitivity, early runs)
    history: str
    checkpoints: Path  # the history's folder, holding helpful/ and safe/
    seed: int
    arm: str
    out: Path  # the run's npz; its log comes back to the caller
    block: BlockSpec | None = None
    mix_safety: bool = False
    judge: str = "every"
    log_steps: tuple[int, ...] | None = None
    rehearsal: RehearsalSpec | None = None  # safety pairs replacing a share of each batch
    defense: DefenseSpec | None = None  # a weight-space or token-wise defense (not with block)

    @property
    def label(self) -> str:
        return f"fine-tuning {self.history} {self.arm} seed {self.seed}"

    @property
    def cost(self) -> int:
        """Training rows (a penalty's prompts included) plus ~10 rows' worth per judged step."""
        fc = self.cfg.finetune
        steps = (self.log_steps or fc.log_steps)[-1]
        extra = self.block.batch if self.block is not None else 0
        judged = {"every": len(self.log_steps or fc.log_steps) + 1, "ends": 2, "end": 1}
        return steps * (fc.batch_size + extra) + 10 * fc.batch_size * judged.get(self.judge, 0)


@dataclass
class FinetuneOutput:
    history: str
    arm: str
    seed: int
    log: pd.DataFrame
    batch_hash: str
    seconds: float


def finetune_task(task: FinetuneTask) -> FinetuneOutput:
    """Run one fine-tuning task and save its activation snapshots (npz)."""
    cfg = task.cfg
    device = pick_device(cfg.device, cfg.cpu_threads)
    setting = make_setting(cfg, task.checkpoints)
    objective = None
    if task.block is not None and task.defense is not None:
        raise ValueError(f"{task.label}: a block and a defense at once")
    if task.block is not None:
        objective = make_objective(task.block, setting.tokenizer, device)
    if task.defense is not None:
        helpful = None
        if task.defense.kind == "weight_direction":
            helpful = setting.load("helpful", device)[0]
        objective = make_defense(task.defense, helpful)
    rehearsal = None
    if task.rehearsal is not None:
        rehearsal = Rehearsal(task.rehearsal, setting.tokenizer, task.seed)
    result = finetune_run(
        cfg.finetune, setting, task.seed, device, objective, task.mix_safety, task.judge,
        task.log_steps, rehearsal=rehearsal,
    )
    write_npz(task.out, steps=result.steps, **result.acts)
    log = result.log.assign(history=task.history, arm=task.arm)
    return FinetuneOutput(task.history, task.arm, task.seed, log, result.batch_hash,
                          result.seconds)
