"""Throughput of gravrev's fine-tuning loop against the Hugging Face Trainer, and stage times.

Same model (theta_S of the smoke-sized organism, trained here in seconds), same data, same
batch size, one process; prints steps/s of each and their ratio. Not a test: run it with
`make benchmark` or `python benchmarks/bench_finetune.py [--preset tiny] [--steps 60]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gravrev.config import Paths, resolve
from gravrev.phases import build_history
from gravrev.setting import OrganismSetting
from gravrev.train import lm_loss, make_optimizer


def gravrev_loop(setting: OrganismSetting, steps: int, batch_size: int, lr: float) -> float:
    model, _ = setting.load("safe", "cpu")
    opt = make_optimizer(model, "adamw", lr)
    rng = np.random.default_rng(0)
    batches = [setting.benign_batch(rng, batch_size) for _ in range(steps)]
    model.train()
    start = time.perf_counter()
    for batch in batches:
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def trainer_loop(setting: OrganismSetting, steps: int, batch_size: int, lr: float) -> float:
    from transformers import Trainer, TrainingArguments

    model, _ = setting.load("safe", "cpu")
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(steps):
        b = setting.benign_batch(rng, batch_size)
        rows += [{k: v[i] for k, v in b.items()} for i in range(batch_size)]

    def collate(items):
        width = max(len(x["input_ids"]) for x in items)
        return {
            k: torch.stack(
                [
                    torch.nn.functional.pad(
                        x[k], (0, width - len(x[k])), value=-100 if k == "labels" else 0
                    )
                    for x in items
                ]
            )
            for k in items[0]
        }

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            max_steps=steps,
            learning_rate=lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
            max_grad_norm=1e9,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        start = time.perf_counter()
        trainer.train()
        return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--root", default=None, help="a repo root whose data/history to reuse")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both loops")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = resolve({"preset": args.preset})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        paths = Paths(root)
        if not paths.checkpoint("safe").is_dir():
            build_history(cfg, paths, "cpu")
        setting = OrganismSetting(cfg, paths)
        bs, lr = cfg.finetune.batch_size, cfg.finetune.lr
        ours = gravrev_loop(setting, args.steps, bs, lr)
        theirs = trainer_loop(setting, args.steps, bs, lr)
    report = {
        "preset": args.preset,
        "steps": args.steps,
        "batch_size": bs,
        "gravrev_steps_per_s": round(ours, 2),
        "trainer_steps_per_s": round(theirs, 2),
        "ratio_gravrev_over_trainer": round(ours / theirs, 3),
    }
    timings = Path("data/timings")
    if timings.is_dir():
        report["stage_seconds"] = {
            f.stem: json.loads(f.read_text())["seconds"] for f in sorted(timings.glob("*.json"))
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
