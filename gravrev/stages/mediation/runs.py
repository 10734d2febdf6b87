"""Stage 06's runs: v_rev ablated from and added to the checkpoints, patching, logit lens.

Per history: v_rev ablated from theta_S and added (± multiples) to theta_S and theta_H; one
unblocked fine-tuning run re-done (the stage-02 run: same batches) to patch component groups
between theta_S and theta_T; the logit lens at theta_S, theta_H and theta_T. Writes
data/mediation/: each history's tables, the tables of all histories, and the re-run's check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.behaviour.evaluate import eval_sets
from gravrev.config.load import Config
from gravrev.interp.patching import NONE, logit_lens, patch_table
from gravrev.interp.steering import reversion_norms, run_mediation
from gravrev.organism.model import load_checkpoint, prompt_text
from gravrev.organism.world import World
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.store.atomic import atomic_dir, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.finetune import finetune_run
from gravrev.training.loop import pick_device

TABLES = ("baseline", "sweeps", "patching", "logit_lens")
# The `checkpoint` labels of the logit lens's table, in its order: safe, helpful, fine-tuned.
LENS_CHECKPOINTS = ("theta_S", "theta_H", "theta_T")


@dataclass(frozen=True)
class MediationTask:
    """The mediation and route analyses of one history, written under `out`."""

    cfg: Config
    history: str
    paths: Paths
    out: Path


@dataclass
class MediationOutput:
    history: str
    seed: int
    batch_hash: str
    acts_max_abs_diff: float  # the re-run's probe snapshots against stage 02's
    seconds: float


def mediation_task(task: MediationTask) -> MediationOutput:
    """Sweeps, patching and logit lens of one history; its tables go to task.out/*.csv."""
    cfg, h, paths = task.cfg, task.history, task.paths
    start = time.perf_counter()
    device = pick_device(cfg.device, cfg.cpu_threads)
    world = World(cfg.world)
    requests = eval_sets(world, cfg.world.n_eval)["harmful"]
    helpful, tok = load_checkpoint(paths.checkpoint("helpful", h), device)
    safe, _ = load_checkpoint(paths.checkpoint("safe", h), device)
    pos, mask = cfg.analysis.position, probe_selection(cfg, paths)
    norms = reversion_norms(read_npz(paths.acts("helpful", h))[pos],
                            read_npz(paths.acts("safe", h))[pos], mask)
    med = run_mediation(helpful, safe, tok, requests, load_v_rev(cfg, paths, h), norms,
                        cfg.mediation.scales, device, alphabet=world.alphabet)
    seed = cfg.finetune.seeds[0]
    tuned = finetune_run(cfg.finetune, make_setting(cfg, paths.history / h), seed, device,
                         judge="none", keep_model=True)
    patches = patch_table(safe, tuned.model, tok, requests, device, alphabet=world.alphabet)
    prompts = [prompt_text(r.text) for r in requests]
    lens = pd.concat([logit_lens(m, tok, prompts, device).assign(checkpoint=name)
                      for name, m in zip(LENS_CHECKPOINTS, (safe, helpful, tuned.model),
                                         strict=True)],
                     ignore_index=True)
    tables = dict(zip(TABLES, (med.baseline, med.combined(), patches, lens), strict=True))
    for name, df in tables.items():
        write_csv(task.out / f"{name}.csv", df.assign(history=h))
    saved = read_npz(paths.run("finetune", h, "unblocked", seed))
    diff = max(float(np.max(np.abs(saved[k] - tuned.acts[k]))) for k in tuned.acts)
    return MediationOutput(h, seed, tuned.batch_hash, diff, time.perf_counter() - start)


def _runs_table(cfg: Config, paths: Paths, done: list[MediationOutput],
                patching: pd.DataFrame) -> pd.DataFrame:
    ref = pd.read_csv(paths.stage("finetune") / "runs.csv")
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    rows = []
    for d in done:
        key = (ref["history"] == d.history) & (ref["arm"] == "unblocked") & (ref["seed"] == d.seed)
        at_t = log[(log["history"] == d.history) & (log["arm"] == "unblocked")
                   & (log["seed"] == d.seed) & (log["step"] == cfg.finetune.steps)]
        mine = patching[(patching["history"] == d.history) & (patching["patch"] == "S->T")
                        & (patching["group"] == NONE)]
        if not key.any() or at_t.empty:
            raise ValueError(f"{paths.stage('finetune')}: no unblocked run of {d.history} with "
                             f"seed {d.seed} to T; re-run stage finetune with this config")
        expected = ref.loc[key, "batch_hash"].iloc[0]
        rows.append({"history": d.history, "seed": d.seed, "batch_hash": d.batch_hash,
                     "stage02_batch_hash": expected, "same_batches": d.batch_hash == expected,
                     "acts_max_abs_diff": d.acts_max_abs_diff,
                     "refusal_at_T": float(mine["refusal_rate"].iloc[0]),
                     "stage02_refusal_at_T": float(at_t["refusal_rate"].iloc[0])})
    return pd.DataFrame(rows)


def run(cfg: Config, paths: Paths) -> None:
    """Every history's analyses through the executor; its tables and the re-run's check."""
    if cfg.is_hf:
        raise ValueError("preset hf: the mediation stage judges with the organism's world; "
                         "it has no judged sweeps for real models yet")
    with atomic_dir(paths.stage("mediation")) as out:
        tasks = [MediationTask(cfg, h, paths, out / h) for h in cfg.histories]
        done: list[MediationOutput] = run_all(mediation_task, tasks, cfg.executor,
                                              desc="mediation and route")
        for name in TABLES:
            write_csv(out / f"{name}.csv", pd.concat(
                [pd.read_csv(out / h / f"{name}.csv") for h in cfg.histories], ignore_index=True))
        runs = _runs_table(cfg, paths, done, pd.read_csv(out / "patching.csv"))
        bad = runs[~runs["same_batches"]]
        if len(bad):
            raise RuntimeError(f"the re-run fine-tuning of {bad['history'].tolist()} saw other "
                               "batches than stage 02's: its theta_T is not stage 02's")
        write_csv(out / "runs.csv", runs)
    write_json(paths.timings / "mediation.json", {d.history: d.seconds for d in done})
