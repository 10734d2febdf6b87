"""Benchmarks, not tests: throughput, FLOP/s against sgemm, pipeline profile, parallel efficiency.

1. steps/s of gravrev's fine-tuning step against the Hugging Face Trainer: same model, same
   batches, AdamW and clipping, one thread, each with its fastest AdamW (ours: foreach, the
   bytes of the plain loop; the Trainer's: adamw_torch_fused); their ratio (goal: >= 1.5).
2. FLOP/s that step achieves (FLOPs counted by torch's FlopCounterMode) as a fraction of the
   FLOP/s of a large single-thread fp32 matmul (sgemm) under the numeric pins, measured in the
   same run (both in CPU time; goal: 0.5).
3. The whole pipeline's profile: the shares of run, metrics and render steps in the wall time,
   and the training runs' share of the run steps that record them (from data/timings, written
   by the last pipeline run; without one, it says so).
4. The executor's parallel efficiency: t(N runs, 1 worker) / (2 * t(N runs, 2 workers)).

Prints a table and writes it as JSON (data/timings/benchmark.json: timings depend on the
machine, so they live outside data/metrics). Run with `make benchmark`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from gravrev.cli import STAGES
from gravrev.config.experiment import ExecutorConfig
from gravrev.config.load import Config, resolve
from gravrev.organism.model import build_model, build_tokenizer, n_params
from gravrev.organism.world import World
from gravrev.report.provenance import (
    ProfileShares,
    host_cpu,
    pipeline_profile,
    profile_shares,
    shares_text,
)
from gravrev.runtime.executor import run_all
from gravrev.runtime.numerics import check_pins, pins_in_force
from gravrev.training.loop import lm_loss, make_optimizer
from gravrev.training.phases import phase_batch

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Rate:
    """Steps per second of wall time, and per second of this process's CPU time.

    On a shared machine the CPU-time rate is the steadier one: other people's work stretches
    the wall time, not the CPU time the steps use.
    """

    wall: float
    cpu: float


class Stopwatch:
    """Wall and CPU time since `start()`, as a rate of steps."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rate(self, steps: int) -> Rate:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Rate(steps / wall, steps / cpu)


@dataclass(frozen=True)
class Benchmark:
    preset: str
    n_params: int
    batch_size: int
    timed_steps: int
    repeats: int
    ours_steps_per_s: float
    trainer_steps_per_s: float
    ratio_ours_over_trainer: float
    ours_steps_per_cpu_s: float
    trainer_steps_per_cpu_s: float
    ratio_ours_over_trainer_cpu: float
    step_gflop: float
    achieved_gflop_per_s: float
    matmul_size: int
    matmul_gflop_per_s: float
    fraction_of_matmul: float
    parallel_runs: int
    parallel_seconds_1_worker: float
    parallel_seconds_2_workers: float
    parallel_efficiency: float
    pipeline: ProfileShares | None  # None: data/timings holds no pipeline run
    pipeline_text: str
    cpu: str
    load_average: float  # the 1-minute load at the end: how much others competed for the cores
    torch: str
    transformers: str
    numerics: dict[str, str]


def make_batches(cfg: Config, n: int, seed: int) -> list[Batch]:
    """n batches of the helpful phase's data (prompt and answer), at the fine-tuning batch size."""
    world, tok = World(cfg.world), build_tokenizer(cfg.world)
    rng = np.random.default_rng(seed)
    return [phase_batch(world, tok, "helpful", rng, cfg.finetune.batch_size) for _ in range(n)]


def fresh_model(cfg: Config) -> PreTrainedModel:
    return build_model(cfg.model, build_tokenizer(cfg.world), seed=0).train()


def our_rate(cfg: Config, batches: list[Batch], warmup: int) -> Rate:
    """Our fine-tuning step: loss, backward, clip at 1, AdamW; timed after warmup."""
    model = fresh_model(cfg)
    opt = make_optimizer(model, "adamw", cfg.finetune.lr)
    clock = Stopwatch()
    for i, batch in enumerate(batches):
        if i == warmup:
            clock.start()
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return clock.rate(len(batches) - warmup)


class _StepClock(TrainerCallback):
    """Times the Trainer's steps after the warm-up, leaving out its set-up and wind-down."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.clock = warmup, steps, Stopwatch()
        self.result = Rate(0.0, 0.0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.clock.start()
        elif state.global_step == self.warmup + self.steps:
            self.result = self.clock.rate(self.steps)


def trainer_rate(cfg: Config, batches: list[Batch], warmup: int) -> Rate:
    """The same steps through transformers.Trainer (each dataset item is one whole batch)."""
    clock = _StepClock(warmup, len(batches) - warmup)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=1,
            max_steps=len(batches),
            learning_rate=cfg.finetune.lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            optim="adamw_torch_fused",  # the Trainer's fastest AdamW on a CPU
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=fresh_model(cfg),
            args=args,
            train_dataset=batches,
            data_collator=lambda items: items[0],
            callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # its end-of-training line would break the table
        trainer.train()
    return clock.result


def mean_step_flops(cfg: Config, batches: list[Batch]) -> float:
    """FLOPs of forward and backward, averaged over the batches (the optimizer's are negligible)."""
    model = fresh_model(cfg)
    with FlopCounterMode(display=False) as counter:
        for batch in batches:
            lm_loss(model, batch).backward()
    return counter.get_total_flops() / len(batches)


def matmul_flops_per_s(n: int, repeats: int) -> float:
    """FLOPs per CPU-second of an n x n fp32 matmul, the best of `repeats`: a reachable peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2 * n**3 / best


def training_run(seed: int, preset: str = "tiny", steps: int = 100) -> float:
    """One independent run for the parallel benchmark: train from a seed, return the loss."""
    cfg = resolve({"preset": preset})
    batches = make_batches(cfg, steps, seed)
    model = fresh_model(cfg)
    opt = make_optimizer(model, "adamw", cfg.finetune.lr)
    for batch in batches:
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def parallel_seconds(runs: int, workers: int, preset: str) -> float:
    start = time.perf_counter()
    run_all(partial(training_run, preset=preset), list(range(runs)),
            ExecutorConfig("local", workers, None), f"{workers} worker")
    return time.perf_counter() - start


def pipeline_shares(timings: Path) -> ProfileShares | None:
    """The last pipeline run's profile shares (one worker per core, the default executor)."""
    workers = os.cpu_count() or 1
    return profile_shares(pipeline_profile(timings, workers, list(STAGES)), workers)


def run_benchmark(
    preset: str, steps: int, warmup: int, repeats: int, runs: int, timings: Path
) -> Benchmark:
    """Every measurement, alternating ours and the Trainer's so that drift hits both alike."""
    cfg = resolve({"preset": preset})
    batches = make_batches(cfg, warmup + steps, seed=0)
    pairs = [
        (our_rate(cfg, batches, warmup), trainer_rate(cfg, batches, warmup)) for _ in range(repeats)
    ]
    ours_cpu = statistics.median(a.cpu for a, _ in pairs)
    flops = mean_step_flops(cfg, batches[warmup:])
    matmul_size = 2048
    peak = matmul_flops_per_s(matmul_size, repeats=5)
    t1, t2 = parallel_seconds(runs, 1, preset), parallel_seconds(runs, 2, preset)
    shares = pipeline_shares(timings)
    return Benchmark(
        preset=preset,
        n_params=n_params(fresh_model(cfg)),
        batch_size=cfg.finetune.batch_size,
        timed_steps=steps,
        repeats=repeats,
        ours_steps_per_s=statistics.median(a.wall for a, _ in pairs),
        trainer_steps_per_s=statistics.median(b.wall for _, b in pairs),
        ratio_ours_over_trainer=statistics.median(a.wall / b.wall for a, b in pairs),
        ours_steps_per_cpu_s=ours_cpu,
        trainer_steps_per_cpu_s=statistics.median(b.cpu for _, b in pairs),
        ratio_ours_over_trainer_cpu=statistics.median(a.cpu / b.cpu for a, b in pairs),
        step_gflop=flops / 1e9,
        achieved_gflop_per_s=flops * ours_cpu / 1e9,
        matmul_size=matmul_size,
        matmul_gflop_per_s=peak / 1e9,
        fraction_of_matmul=flops * ours_cpu / peak,
        parallel_runs=runs,
        parallel_seconds_1_worker=t1,
        parallel_seconds_2_workers=t2,
        parallel_efficiency=t1 / (2 * t2),
        pipeline=shares,
        pipeline_text=shares_text(shares),
        cpu=host_cpu(),
        load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        torch=torch.__version__,
        transformers=transformers.__version__,
        numerics=pins_in_force(),
    )


def table(b: Benchmark) -> pd.DataFrame:
    """The headline figures, one row each."""
    rows = [
        ("gravrev loop", b.ours_steps_per_s, "steps/s", ""),
        ("HF Trainer", b.trainer_steps_per_s, "steps/s", ""),
        ("gravrev / Trainer", b.ratio_ours_over_trainer, "x", ">= 1.5"),
        ("gravrev loop, CPU time", b.ours_steps_per_cpu_s, "steps/cpu-s", ""),
        ("HF Trainer, CPU time", b.trainer_steps_per_cpu_s, "steps/cpu-s", ""),
        ("gravrev / Trainer, CPU time", b.ratio_ours_over_trainer_cpu, "x", ">= 1.5"),
        ("training step", b.step_gflop, "GFLOP", ""),
        ("achieved (CPU time)", b.achieved_gflop_per_s, "GFLOP/s", ""),
        (f"fp32 matmul {b.matmul_size}^2, 1 thread", b.matmul_gflop_per_s, "GFLOP/s", ""),
        ("achieved / pinned sgemm peak", b.fraction_of_matmul, "fraction", ">= 0.5"),
        (f"{b.parallel_runs} runs, 1 worker", b.parallel_seconds_1_worker, "s", ""),
        (f"{b.parallel_runs} runs, 2 workers", b.parallel_seconds_2_workers, "s", ""),
        ("parallel efficiency", b.parallel_efficiency, "fraction", ">= 0.9"),
        ("load average (1 min)", b.load_average, "", ""),
    ]
    if b.pipeline is not None:
        p = b.pipeline
        rows += [
            ("pipeline: run steps", p.run_share, "of wall", ""),
            ("pipeline: metrics steps", p.metrics_share, "of wall", ""),
            ("pipeline: rendering", p.render_share, "of wall", ""),
            ("pipeline: training runs", p.training_share, "of recorded run steps", ""),
        ]
    return pd.DataFrame(rows, columns=["measure", "value", "unit", "goal"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="the model and batch size to time")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each loop (median)")
    parser.add_argument("--runs", type=int, default=8, help="runs for the parallel benchmark")
    parser.add_argument("--out", type=Path, default=Path("data/timings/benchmark.json"))
    parser.add_argument("--timings", type=Path, default=Path("data/timings"),
                        help="the last pipeline run's step times, for the profile")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    check_pins()
    result = run_benchmark(
        args.preset, args.steps, args.warmup, args.repeats, args.runs, args.timings
    )
    with pd.option_context("display.float_format", "{:.3g}".format):
        print(table(result).to_string(index=False))
    print(f"whole-pipeline profile ({args.timings}): {result.pipeline_text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
