"""Memory and time of the `hf` route for a 7B model: the own-model page's arithmetic, computed.

An estimate from operation counts and published figures (Llama-2-7B's shapes, an H100's data
sheet), not a measurement. The schedule (seeds, lambda grid, arms, steps, batch, probes) is
read from the resolved `hf` config, so the page follows the preset when it changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gravrev.config.experiment import CONTROLS, GEN_BATCH, KINDS
from gravrev.config.load import Config
from gravrev.stages.blocking.shock.regime import shock_runs
from gravrev.stages.finetune.grid import cell_config, cells

# Objectives that run a forward pass on a minibatch of pool prompts each step.
PROMPT_KINDS = ("block", "push", "penalty", "mean_penalty")

GB = 1e9


@dataclass(frozen=True)
class Model:
    """Llama-2-7B's published shapes."""

    n_params: float = 7e9
    hidden: int = 4096
    layers: int = 32
    mlp: int = 11008
    vocab: int = 32_000
    seq_len: int = 512  # tokens per training sequence (an assumption)


@dataclass(frozen=True)
class Hardware:
    """One H100 SXM's data sheet, and what a host moves with one CPU thread."""

    memory_gb: float = 80.0
    peak_flops: float = 989e12  # dense bf16
    hbm_bytes_per_s: float = 3.35e12
    utilisation: float = 0.40  # of the peak, in training
    link_gb_per_s: tuple[float, float] = (10.0, 25.0)  # GPU to host
    host_gb_per_s: tuple[float, float] = (10.0, 20.0)  # host memory traffic

    @property
    def train_flops(self) -> float:
        return self.peak_flops * self.utilisation


ACT_BYTES = 34  # per token per hidden unit per layer, 16-bit, fused attention (Korthikanti 2022)
LOGIT_BYTES = 2 + 4 + 2  # bf16 logits, the loss's fp32 copy, their bf16 gradient


@dataclass(frozen=True)
class Schedule:
    """The `hf` preset's runs, from the config."""

    seeds: int
    lambdas: int
    arms: int
    controls: int  # arms whose lambda is matched to another arm's achieved reduction
    targets: int  # arms other than the claim arm that controls are matched to (run at each lambda)
    steps: int
    logged: int  # logged points per run, step 0 included
    batch: int
    lr: float
    lora_rank: int
    penalty_arms: int
    penalty_batch: int
    n_eval: int
    new_tokens: int
    gen_batch: int
    shock_runs: int  # the shock regime's unblocked run and claim arms (first seed)
    shock_steps: int
    shock_logged: int  # their logged points, step 0 included
    # the regime search's unblocked runs, one per cell and searched history, and at most as many
    # per other history for the confirmation (an upper bound: it runs the eligible cells only)
    search_runs: int
    search_steps: int  # each runs to the longest horizon
    search_logged: int  # their logged points, step 0 included
    defense_runs: int  # the defenses' baseline and every arm at every strength (judged at T)

    @property
    def gen_batches(self) -> int:
        """Generation batches per judging: the harmful and the benign prompts."""
        return math.ceil(2 * self.n_eval / self.gen_batch)

    @property
    def check_runs(self) -> int:
        """The lambda check on the first seed: the claim arm, each matched control and each other
        arm a control is matched to, at every lambda."""
        return self.lambdas * (1 + self.controls + self.targets)

    @property
    def main_runs(self) -> int:
        """The runs of the main regime's length: unblocked seeds, the check, every arm on every
        seed, the defenses."""
        return self.seeds + self.check_runs + self.arms * self.seeds + self.defense_runs

    @property
    def runs(self) -> int:
        """Every fine-tuning run: the main and shock regimes' and the search's (at most)."""
        return self.main_runs + self.shock_runs + self.search_runs

    @property
    def total_steps(self) -> int:
        """Training steps of every run, each at its own regime's length."""
        return (self.main_runs * self.steps + self.shock_runs * self.shock_steps
                + self.search_runs * self.search_steps)

    @property
    def judged(self) -> int:
        """Generations: two checkpoints; the unblocked runs' and every arm's logged points; the
        claim arm's end at each lambda of the check (the controls' check runs are not judged);
        the shock runs' and the search runs' logged points; each defense run's end."""
        return (2 + self.logged * self.seeds * (1 + self.arms) + self.lambdas
                + self.shock_runs * self.shock_logged + self.search_runs * self.search_logged
                + self.defense_runs)

    @property
    def view_points(self) -> int:
        """Logged points of every run, at which the weight-space view reads theta; a defense run
        logs its start and T only."""
        return (self.logged * (self.main_runs - self.defense_runs) + 2 * self.defense_runs
                + self.shock_runs * self.shock_logged + self.search_runs * self.search_logged)


def schedule(cfg: Config) -> Schedule:
    """The schedule of a resolved `hf` config."""
    arms = cfg.blocking.arms
    searched = cfg.regime.search_histories
    # a search run's length and logged steps do not depend on its cell
    search = cell_config(cfg, *cells(cfg)[0]).finetune if searched else None
    return Schedule(
        seeds=len(cfg.finetune.seeds), lambdas=len(cfg.blocking.lambda_grid), arms=len(arms),
        controls=sum(a in CONTROLS for a in arms),
        targets=len({CONTROLS[a] for a in arms if a in CONTROLS} - {cfg.blocking.claim_arm}),
        steps=cfg.finetune.steps, logged=len(cfg.finetune.log_steps) + 1,
        batch=cfg.finetune.batch_size, lr=cfg.finetune.lr, lora_rank=cfg.hf.lora_rank,
        penalty_arms=sum(KINDS.get(a) in PROMPT_KINDS for a in arms),
        penalty_batch=cfg.blocking.penalty_batch,
        n_eval=cfg.world.n_eval, new_tokens=cfg.hf.max_new_tokens, gen_batch=GEN_BATCH,
        shock_runs=len(shock_runs(cfg)),
        shock_steps=cfg.regime.shock.steps, shock_logged=len(cfg.regime.shock.log_steps) + 1,
        search_runs=(len(cfg.histories) if searched and cfg.regime.confirm else searched)
        * len(cells(cfg)),
        search_steps=search.steps if search else 0,
        search_logged=len(search.log_steps) + 1 if search else 0,
        defense_runs=len(cfg.first_histories(cfg.defenses.n_histories))
        * (cfg.defenses.n_seeds or len(cfg.finetune.seeds))
        * (1 + sum(len(cfg.defenses.grid(a)) for a in cfg.defenses.arms)),
    )


def lora_params_per_layer(m: Model, rank: int) -> int:
    """Rank-r adapters on q, k, v, o, gate, up and down: r x (fan-in + fan-out) each."""
    attention = 4 * (m.hidden + m.hidden)
    gate_up = 2 * (m.hidden + m.mlp)
    down = m.mlp + m.hidden
    return rank * (attention + gate_up + down)


def stuck_exponent(lr: float) -> int:
    """The smallest e such that a bf16 weight with |w| >= 2^e cannot move by lr: half a unit in
    its last place, 2^(e - 8), exceeds lr (bf16 keeps 8 significant bits)."""
    return math.floor(math.log2(lr)) + 9


@dataclass(frozen=True)
class Memory:
    """GPU and host bytes of a fine-tune, in GB where not per parameter."""

    mixed: float  # standard mixed precision: 16 B/param
    bf16: float  # this code's dtype auto: 8 B/param
    fp32: float
    lora_adapters: int
    frozen: float
    adapters: float
    act_layer: float
    act: float
    logits_values: int
    logits: float
    ckpt_input: float
    ckpt: float
    host_full: float
    host_lora: float


def memory_budget(m: Model, s: Schedule) -> Memory:
    """Bytes of each way to fine-tune, from the shapes and the schedule."""
    tokens = m.seq_len * s.batch
    act_layer = ACT_BYTES * tokens * m.hidden / GB
    ckpt_input = 2 * tokens * m.hidden / GB
    adapters = lora_params_per_layer(m, s.lora_rank) * m.layers
    logits = s.batch * m.seq_len * m.vocab
    return Memory(
        mixed=m.n_params * 16 / GB, bf16=m.n_params * 8 / GB, fp32=m.n_params * 16 / GB,
        lora_adapters=adapters, frozen=m.n_params * 2 / GB, adapters=adapters * 16 / GB,
        act_layer=act_layer, act=act_layer * m.layers, logits_values=logits,
        logits=logits * LOGIT_BYTES / GB, ckpt_input=ckpt_input,
        ckpt=ckpt_input * m.layers + act_layer,
        host_full=m.n_params * (8 + 8 + 8 + 16) / GB, host_lora=m.n_params * (8 + 8 + 16) / GB,
    )


@dataclass(frozen=True)
class Time:
    """Seconds of the `hf` schedule on one GPU (ranges as (low, high))."""

    steps: int
    tokens: int
    full_step: float
    lora_step: float
    ckpt_step: float
    train: tuple[float, float]
    decode_steps: int
    decode_step: float
    judge: float
    view_points: int
    flat: float  # GB of theta_T in float64
    view_copy: tuple[float, float]  # per point: to the host
    view_concat: tuple[float, float]  # per point: the concatenation
    view_lora: tuple[float, float]  # per point
    view_full: tuple[float, float]
    full_traffic: float  # GB of host traffic per point, full fine-tune

    @property
    def lora_total(self) -> tuple[float, float]:
        """Training, judging and the weight-space view with LoRA, before generate()'s overhead."""
        return tuple(tr + self.judge + self.view_points * v
                     for tr, v in zip(self.train, self.view_lora, strict=True))


def _range(gb: float, rates: tuple[float, float]) -> tuple[float, float]:
    return gb / rates[1], gb / rates[0]


def time_budget(m: Model, hw: Hardware, s: Schedule) -> Time:
    """Seconds of training, judging and the weight-space view, from operation counts."""
    tokens = s.batch * m.seq_len
    step = {k: k * m.n_params * tokens / hw.train_flops for k in (6, 4, 2)}
    flat = m.n_params * 8 / GB  # theta_T in float64
    copy, concat = _range(flat, hw.link_gb_per_s), _range(2 * flat, hw.host_gb_per_s)
    # Two differences (read two, write one each), two norms and a dot product (read each).
    full_traffic = 2 * flat + 2 * 3 * flat + 2 * flat + 2 * flat
    full_host = _range(full_traffic, hw.host_gb_per_s)
    decode_steps = s.judged * s.gen_batches * s.new_tokens
    decode_step = m.n_params * 2 / hw.hbm_bytes_per_s
    return Time(
        steps=s.total_steps, tokens=tokens, full_step=step[6], lora_step=step[4],
        ckpt_step=step[2], train=(s.total_steps * step[4], s.total_steps * step[6]),
        decode_steps=decode_steps, decode_step=decode_step, judge=decode_steps * decode_step,
        view_points=s.view_points, flat=flat, view_copy=copy, view_concat=concat,
        view_lora=(copy[0] + concat[0], copy[1] + concat[1]),
        view_full=(copy[0] + full_host[0], copy[1] + full_host[1]), full_traffic=full_traffic,
    )
