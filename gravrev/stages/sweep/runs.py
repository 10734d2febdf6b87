"""Stage 08, sweep, its runs: train each non-main history of the grid, fine-tune every unit,
and judge each unit's theta_S with its own v_rev ablated (the one forward pass per unit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.behaviour.evaluate import eval_sets
from gravrev.config.load import Config
from gravrev.interp.steering import ablate_direction, judged_rates
from gravrev.organism.model import load_checkpoint
from gravrev.organism.world import World
from gravrev.runtime.executor import run_all
from gravrev.stages.artifacts import probe_selection
from gravrev.stages.skipped import skip_reason, write_skipped
from gravrev.stages.sweep.direction import unit_direction
from gravrev.stages.sweep.grid import (
    ABLATION,
    Unit,
    grid,
    history_task,
    is_main,
    unit_folder,
    witnesses,
)
from gravrev.store.atomic import atomic_dir, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.loop import pick_device
from gravrev.training.tasks import FinetuneTask, finetune_task, helpful_run, history_run


def _run_npz(folder: Path, seed: int) -> Path:
    return folder / f"unblocked_seed{seed}.npz"  # the layout of Paths.run inside a unit folder


def _reused(cfg: Config, paths: Paths, unit: Unit) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage history's behaviour rows and stage finetune's log of a main unit, renamed to it."""
    h, seed = f"h{unit.seed}", cfg.finetune.seeds[0]
    beh = pd.read_csv(paths.history / "behaviour.csv")
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    log = log[(log["history"] == h) & (log["arm"] == "unblocked") & (log["seed"] == seed)]
    return beh[beh["history"] == h].assign(history=unit.name), log.assign(history=unit.name)


def ablated_rates(cfg: Config, folder: Path, mask: np.ndarray, device: str) -> dict[str, float]:
    """theta_S's judged rates on the held-out harmful requests with v_rev ablated at every layer."""
    v_rev, _ = unit_direction(cfg, folder, mask)
    model, tok = load_checkpoint(folder / "safe", device)
    world = World(cfg.world)
    with ablate_direction(model, v_rev):
        rates = judged_rates(model, tok, eval_sets(world, cfg.world.n_eval)["harmful"], device,
                             world)
    return {"refusal_S_ablated": rates.refusal_rate,
            "harmful_compliance_S_ablated": rates.harmful_compliance}


def run(cfg: Config, paths: Paths) -> None:
    """Train every non-main history and fine-tune it; write data/sweep (no measures)."""
    if skip_reason(cfg, "sweep"):
        return write_skipped(cfg, paths, "sweep")
    device, units = pick_device(cfg.device, cfg.cpu_threads), grid(cfg)
    fseed = cfg.finetune.seeds[0]
    mask = probe_selection(cfg, paths)
    with atomic_dir(paths.stage("sweep")) as out:
        new = [u for u in units if not is_main(cfg, u)]
        shared, witness = witnesses(cfg, paths, new, out)
        h_seconds = run_all(helpful_run, shared, cfg.executor, desc="sweep θ_H")
        made = run_all(history_run, [history_task(cfg, paths, u, out / u.name, witness[u])
                                     for u in new], cfg.executor, desc="sweep histories")
        tuned = run_all(finetune_task, [FinetuneTask(cfg, u.name, out / u.name, fseed, "unblocked",
                                                     _run_npz(out / u.name, fseed)) for u in new],
                        cfg.executor, desc="sweep fine-tuning")
        behaviour = {o.name: o.behaviour for o in made}
        logs = {u.name: t.log for u, t in zip(new, tuned, strict=True)}
        ablation = []
        for u in units:
            if is_main(cfg, u):
                behaviour[u.name], logs[u.name] = _reused(cfg, paths, u)
            folder = unit_folder(cfg, paths, u) if is_main(cfg, u) else out / u.name
            ablation.append({"unit": u.name, **ablated_rates(cfg, folder, mask, device)})
        write_csv(out / "behaviour.csv", pd.concat([behaviour[u.name] for u in units],
                                                   ignore_index=True)
                  .rename(columns={"history": "unit"}))
        write_csv(out / "log.csv", pd.concat([logs[u.name] for u in units], ignore_index=True)
                  .rename(columns={"history": "unit"}))
        write_csv(out / ABLATION, pd.DataFrame(ablation))
    write_json(paths.timings / "sweep_units.json",
               {**{f"witness_H{t.helpful.steps}_s{t.seed}": v
                   for t, v in zip(shared, h_seconds, strict=True)},
                **{f"{o.name}/safe": o.seconds["safe"] for o in made},
                **{f"{u.name}/finetune": t.seconds for u, t in zip(new, tuned, strict=True)}})
