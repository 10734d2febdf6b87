"""Stage 01, history, its runs: theta_P once, then one H -> S branch per history seed."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from gravrev.behaviour.evaluate import behaviour, eval_sets, example_answers
from gravrev.config.load import Config
from gravrev.interp.activations import probe_activations
from gravrev.organism.model import (
    build_model,
    build_tokenizer,
    load_checkpoint,
    prompt_text,
    save_checkpoint,
)
from gravrev.organism.shape import shape_checks
from gravrev.organism.world import World
from gravrev.runtime.executor import run_all
from gravrev.stages.history.saved import hf_description
from gravrev.store.atomic import atomic_dir, write_csv, write_json, write_npz
from gravrev.store.paths import Paths
from gravrev.training.loop import pick_device, set_seed
from gravrev.training.phases import CHECKPOINTS, probe_set, probes_table, train_phase
from gravrev.training.tasks import HistoryTask, history_run


class ShapeCheckError(RuntimeError):
    """A history misses a pre-registered shape check (history.checks.enforce is true)."""


def _train_pretrained(cfg: Config, out: Path, device: str) -> tuple[dict, float]:
    """theta_P, shared by every history; returns its behaviour row and seconds."""
    set_seed(cfg.history.pretrain_seed)
    world, tok = World(cfg.world), build_tokenizer(cfg.world)
    model = build_model(cfg.model, tok, cfg.history.pretrain_seed).to(device)
    start = time.perf_counter()
    log = train_phase(model, world, tok, "pretrain", cfg.history.pretrain,
                      cfg.history.pretrain_seed, device, progress=True)
    seconds = time.perf_counter() - start
    model.eval()
    save_checkpoint(model, tok, out / "pretrained")
    probes = [prompt_text(r.text) for r in probe_set(world, cfg.world.n_probes)]
    write_npz(out / "acts_pretrained.npz", **probe_activations(model, tok, probes, device))
    curves = pd.DataFrame({"phase": "pretrain", "step": range(1, len(log.losses) + 1),
                           "loss": log.losses, "history": "shared"})
    write_csv(out / "curves_pretrain.csv", curves)
    row = {"history": "shared", "checkpoint": "pretrained",
           **behaviour(model, tok, world, eval_sets(world, cfg.world.n_eval), device)}
    return row, seconds


def examples_table(cfg: Config, paths: Paths, device: str, n_per_kind: int = 2) -> pd.DataFrame:
    """Greedy answers of theta_P and the first history's theta_H and theta_S to a few prompts."""
    world = World(cfg.world)
    sets = eval_sets(world, cfg.world.n_eval, cfg.finetune.new_task)
    reqs = [r for kind in sets.values() for r in kind[:n_per_kind]]
    rows = []
    for name in CHECKPOINTS:
        model, tok = load_checkpoint(paths.checkpoint(name, cfg.histories[0]), device)
        for prompt, answer in example_answers(model, tok, reqs, device):
            rows.append({"checkpoint": name, "prompt": prompt, "answer": answer})
    table = pd.DataFrame(rows).pivot(index="prompt", columns="checkpoint", values="answer")
    return table[list(CHECKPOINTS)].reset_index()


def enforce_shape(cfg: Config, table: pd.DataFrame) -> None:
    """Stop the pipeline before fine-tuning when a history misses its shape (if enforced)."""
    checks = shape_checks(table, cfg.history.checks)
    failed = checks[~checks["passed"]]
    if len(failed) and cfg.history.checks.enforce:
        lines = [f"  {r.history}: {r.check} = {r.value:.1f}, target {r.threshold:g}"
                 for r in failed.itertuples()]
        raise ShapeCheckError(
            "the history misses its pre-registered shape checks (history.checks; set "
            "history.checks.enforce: false to report and go on):\n" + "\n".join(lines)
        )


def run(cfg: Config, paths: Paths) -> None:
    """Train theta_P and every history (through the executor), evaluate, check the shape."""
    device = pick_device(cfg.device, cfg.cpu_threads)
    if cfg.is_hf:
        _run_hf(cfg, paths, device)
        return
    timings: dict[str, float] = {}
    with atomic_dir(paths.history) as out:
        p_row, timings["pretrain"] = _train_pretrained(cfg, out, device)
        tasks = [
            HistoryTask(cfg, name, seed, cfg.history.helpful, cfg.history.safe,
                        out / "pretrained", out / name)
            for name, seed in zip(cfg.histories, cfg.history.seeds, strict=True)
        ]
        outputs = run_all(history_run, tasks, cfg.executor, desc="histories")
        table = pd.concat([pd.DataFrame([p_row])] + [o.behaviour for o in outputs],
                          ignore_index=True)
        curves = pd.concat([o.curves for o in outputs], ignore_index=True)
        for o in outputs:
            timings.update({f"{o.name}_{k}": v for k, v in o.seconds.items()})
        write_csv(out / "behaviour.csv", table)
        write_csv(out / "curves.csv", curves)
        write_csv(out / "probes.csv", probes_table(probe_set(World(cfg.world), cfg.world.n_probes)))
    write_csv(paths.history / "examples.csv", examples_table(cfg, paths, device))
    write_json(paths.timings / "history_phases.json", timings)
    enforce_shape(cfg, table)


def _run_hf(cfg: Config, paths: Paths, device: str) -> None:
    """hf: nothing is trained; the two checkpoints are evaluated and their activations saved."""
    from gravrev.settings.hf.setting import describe_checkpoints

    d = describe_checkpoints(cfg, paths, device)
    h = cfg.histories[0]
    with atomic_dir(paths.history) as out:
        for name, acts in d.acts.items():
            write_npz(out / h / f"acts_{name}.npz", **acts)
        write_csv(out / "probes.csv", d.probes)
        write_csv(out / "behaviour.csv", d.behaviour)
        write_csv(out / "curves.csv", pd.DataFrame(columns=["history", "phase", "step", "loss"]))
        write_csv(out / "examples.csv", d.examples)
        write_json(out / hf_description(paths).name, {"n_params": d.n_params, "judge": d.judge})
