"""The defenses stage's runs: every arm at every strength of its grid, and the baseline.

Writes data/defenses/: each run's probe snapshots at steps 0 and T and final.csv, one row per
run at T (its drift's cosine with v_rev, its judged behaviour). Every run has the unblocked
run's optimizer, schedule, steps and benign batches (checked against stage finetune's hashes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import drift, probe_mask, refusal_direction
from gravrev.runtime.executor import run_all
from gravrev.settings.protocol import Setting, make_setting
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stats.nulls import cosine
from gravrev.store.atomic import atomic_dir, read_npz, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.training.defenses import DefenseSpec
from gravrev.training.objectives import BlockSpec
from gravrev.training.phases import safety_pairs
from gravrev.training.rehearsal import RehearsalSpec
from gravrev.training.tasks import FinetuneTask, finetune_task

BASELINE = "baseline"
WEIGHT_SPACE = ("constrained_sft", "proximal", "weight_direction")  # DefenseSpec kinds
ALONG = ("block", "refusal_direction")  # BlockSpec "block" arms: along v_rev, along -r


def seeds(cfg: Config) -> tuple[int, ...]:
    """The fine-tuning seeds this stage runs: the first defenses.n_seeds (0: all)."""
    n = cfg.defenses.n_seeds
    return cfg.finetune.seeds[:n] if n else cfg.finetune.seeds


def run_name(arm: str, strength: float | None) -> str:
    """A run's arm label: "<arm>_x<strength>", or "baseline"."""
    return BASELINE if strength is None else f"{arm}_x{strength:g}"


def rehearsal_spec(cfg: Config, setting: Setting, history: str, share: float) -> RehearsalSpec:
    """The harmful requests this history's phase S refused, as (prompt, refusal) pairs."""
    world = getattr(setting, "world", None)
    if world is None:
        raise ValueError("defenses.arms: rehearsal needs the organism's safety phase (not hf)")
    seed = cfg.history_seed(history)
    pairs = safety_pairs(world, cfg.history.safe, seed, cfg.history.safe_replay)
    return RehearsalSpec.from_requests(world, pairs, share)


def directions(cfg: Config, paths: Paths, history: str) -> dict[str, np.ndarray]:
    """At the analysed layer: v_rev (block's direction) and -r (refusal_direction's, as
    chapter 05's refusal_block: r points from the benign toward the harmful mean at theta_S)."""
    safe = read_npz(paths.acts("safe", history))[cfg.analysis.position]
    r = refusal_direction(safe, probe_mask(pd.read_csv(paths.probes), "harmful"))
    return {"block": load_v_rev(cfg, paths, history)[cfg.layer], "refusal_direction": -r[cfg.layer]}


def task_of(cfg: Config, paths: Paths, out: Path, history: str, seed: int, arm: str,
            strength: float | None, pool: list[str], dirs: dict[str, np.ndarray],
            setting: Setting) -> FinetuneTask:
    """One run: judged at T only, snapshotted at 0 and T."""
    block = defense = rehearsal = None
    if arm in ALONG:
        block = BlockSpec("block", {cfg.layer: dirs[arm]}, strength, tuple(pool),
                          cfg.blocking.penalty_batch, cfg.analysis.position)
    elif arm in WEIGHT_SPACE:
        defense = DefenseSpec(arm, strength, cfg.defenses.constrained_prefix)
    elif arm == "rehearsal":
        rehearsal = rehearsal_spec(cfg, setting, history, strength)
    name = run_name(arm, strength)
    return FinetuneTask(cfg, history, paths.history / history, seed, name,
                        out / history / f"{name}_seed{seed}.npz", block=block, judge="end",
                        log_steps=(cfg.finetune.steps,), rehearsal=rehearsal, defense=defense)


def at_t(cfg: Config, log_t: pd.Series) -> dict:
    """A run's judged behaviour at T (NaN for a measure the setting does not log)."""
    def get(col: str) -> float:
        return float(log_t[col]) if col in log_t.index else float("nan")

    return {"non_refusal": 100 - get("refusal_rate"),
            "harmful_compliance": get("harmful_compliance"),
            "new_task_accuracy": get(f"{cfg.finetune.new_task}_accuracy"),
            "benign_accuracy": get("benign_accuracy"),
            "refusals": get("refusals"), "n_harmful": get("n_harmful")}


def run(cfg: Config, paths: Paths) -> None:
    """Every arm at every strength, and the baseline, on the chosen histories and seeds."""
    hs, ss = cfg.first_histories(cfg.defenses.n_histories), seeds(cfg)
    settings = {h: make_setting(cfg, paths.history / h) for h in hs}
    pool = settings[hs[0]].penalty_pool(cfg.blocking.pool_size)
    dirs = {h: directions(cfg, paths, h) for h in hs}
    mask = probe_selection(cfg, paths)
    arms = cfg.defenses.arms
    ref_hash = pd.read_csv(paths.stage("finetune") / "runs.csv").set_index(
        ["history", "arm", "seed"])["batch_hash"]
    with atomic_dir(paths.stage("defenses")) as out:
        tasks = [task_of(cfg, paths, out, h, s, arm, g, pool, dirs[h], settings[h])
                 for arm in (BASELINE, *arms) for g in
                 ((None,) if arm == BASELINE else cfg.defenses.grid(arm)) for h in hs for s in ss]
        done = run_all(finetune_task, tasks, cfg.executor, desc="defenses")
        rows = []
        for t, d in zip(tasks, done, strict=True):
            if d.batch_hash != ref_hash[(t.history, "unblocked", t.seed)]:
                raise AssertionError(f"defenses {t.arm} {t.history} seed {t.seed}: other "
                                     "benign batches than the unblocked run")
            acts = read_npz(t.out)[cfg.analysis.position]  # (2, L, N, d): theta_S, theta_T
            d_t = drift(acts[-1], acts[0], mask)[cfg.layer]
            arm, _, g = t.arm.rpartition("_x")
            rows.append({"arm": arm or BASELINE, "strength": float(g) if arm else 0.0,
                         "history": t.history, "seed": t.seed,
                         "alignment": cosine(d_t, dirs[t.history]["block"]),
                         **at_t(cfg, d.log.iloc[-1])})
        write_csv(out / "final.csv", pd.DataFrame(rows))
        write_json(out / "design.json", {"histories": list(hs), "seeds": list(ss),
                                         "arms": list(arms),
                                         "grids": {a: list(cfg.defenses.grid(a)) for a in arms}})
    write_json(paths.timings / "defenses_runs.json",
               {f"{d.history}/{d.arm}_seed{d.seed}": d.seconds for d in done})
