"""Stage 08, sweep: vary the depths of H and S, fine-tune each history, measure reversion."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.organism.shape import shape_checks
from gravrev.runtime.executor import run_all
from gravrev.stages.artifacts import probe_selection
from gravrev.stats.depth import (
    CI_LEVEL,
    ComponentFit,
    DepthEffect,
    DepthFit,
    component_fit,
    depth_effect,
    depth_fit,
    log_ratio,
    speed_effect,
)
from gravrev.store.atomic import atomic_dir, write_csv, write_json
from gravrev.store.paths import Paths
from gravrev.sweep.grid import Unit, grid, history_task, is_main, witnesses
from gravrev.sweep.measure import measure
from gravrev.training.loop import pick_device
from gravrev.training.tasks import FinetuneTask, finetune_task, helpful_run, history_run

PRIMARY = ("non_refusal_T", "alignment_T")  # what the verdict rests on
NAMES = {"non_refusal_T": "non-refusal at T", "alignment_T": "alignment with v_rev at T"}
SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved by this grid"


def _run_npz(folder: Path, seed: int) -> Path:
    return folder / f"unblocked_seed{seed}.npz"  # the layout of Paths.run inside a unit folder


def _reused(cfg: Config, paths: Paths, unit: Unit) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stage history's behaviour rows and stage finetune's log of a main unit, renamed to it."""
    h, seed = f"h{unit.seed}", cfg.finetune.seeds[0]
    beh = pd.read_csv(paths.history / "behaviour.csv")
    log = pd.read_csv(paths.stage("finetune") / "log.csv")
    log = log[(log["history"] == h) & (log["arm"] == "unblocked") & (log["seed"] == seed)]
    return beh[beh["history"] == h].assign(history=unit.name), log.assign(history=unit.name)


def run(cfg: Config, paths: Paths) -> SweepResult:
    """Train every non-main history, fine-tune each unit, measure; write data/sweep, metrics."""
    device, units = pick_device(cfg.device, cfg.cpu_threads), grid(cfg)
    fseed = cfg.finetune.seeds[0]
    mask = probe_selection(cfg, paths)
    with atomic_dir(paths.stage("sweep")) as out:
        new = [u for u in units if not is_main(cfg, u)]
        shared, witness = witnesses(cfg, paths, new, out)
        h_seconds = run_all(helpful_run, shared, cfg.executor, desc="sweep theta_H")
        made = run_all(history_run, [history_task(cfg, paths, u, out / u.name, witness[u])
                                     for u in new], cfg.executor, desc="sweep histories")
        tuned = run_all(finetune_task, [FinetuneTask(cfg, u.name, out / u.name, fseed, "unblocked",
                                                     _run_npz(out / u.name, fseed)) for u in new],
                        cfg.executor, desc="sweep fine-tuning")
        behaviour = {o.name: o.behaviour for o in made}
        logs = {u.name: t.log for u, t in zip(new, tuned, strict=True)}
        rows, frames = [], []
        for u in units:
            if is_main(cfg, u):
                folder = paths.history / f"h{u.seed}"
                npz = paths.run("finetune", f"h{u.seed}", "unblocked", fseed)
                behaviour[u.name], logs[u.name] = _reused(cfg, paths, u)
            else:
                folder, npz = out / u.name, _run_npz(out / u.name, fseed)
            measures, align = measure(cfg, folder, npz, logs[u.name], mask, device)
            rows.append({"unit": u.name, "cell": u.cell, "helpful_steps": u.helpful_steps,
                         "safe_steps": u.safe_steps, "seed": u.seed, "reused": is_main(cfg, u),
                         **measures})
            frames.append(align.assign(unit=u.name))
        table = pd.concat([behaviour[u.name] for u in units], ignore_index=True)
        checks = shape_checks(table, cfg.history.checks).rename(columns={"history": "unit"})
        units_df = _with_flags(pd.DataFrame(rows), checks)
        write_csv(out / "units.csv", units_df)
        write_csv(out / "checks.csv", checks)
        write_csv(out / "behaviour.csv", table.rename(columns={"history": "unit"}))
        write_csv(out / "log.csv", pd.concat([logs[u.name] for u in units], ignore_index=True)
                  .rename(columns={"history": "unit"}))
        write_csv(out / "alignment.csv", pd.concat(frames, ignore_index=True))
    result = load(cfg, paths)
    write_json(paths.metrics_file("sweep"), metrics(cfg, result))
    write_json(paths.timings / "sweep_units.json",
               {**{f"witness_H{t.helpful.steps}_s{t.seed}": v
                   for t, v in zip(shared, h_seconds, strict=True)},
                **{f"{o.name}/safe": o.seconds["safe"] for o in made},
                **{f"{u.name}/finetune": t.seconds for u, t in zip(new, tuned, strict=True)}})
    return result


def _with_flags(units: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """shape_ok and the failed checks' names per unit: flagged, never dropped."""
    failed = checks[~checks["passed"].astype(bool)].groupby("unit")["check"].agg("; ".join)
    units = units.assign(shape_ok=~units["unit"].isin(failed.index),
                         failed_checks=units["unit"].map(failed).fillna(""))
    return units.assign(log_ratio=log_ratio(units["helpful_steps"], units["safe_steps"]))


@dataclass
class SweepResult:
    """What chapter 08 shows."""

    units: pd.DataFrame  # one row per (cell, seed): depths, reused, flags, measures
    checks: pd.DataFrame  # unit, check, value, threshold, margin, passed
    log: pd.DataFrame  # every unit's fine-tuning log (behaviour at the logged steps)
    alignment: pd.DataFrame  # unit, step, alignment, drift_norm at the analysed layer
    fits: dict[str, DepthFit]  # outcome -> fit over every unit
    fits_passing: dict[str, DepthFit]  # the same over the units that passed the shape checks
    effects: dict[str, DepthEffect]  # outcome (and "steps_to_half") -> effect sizes
    components: dict[str, ComponentFit]  # outcome -> log H and log S separately
    final_step: int


def summarise(units: pd.DataFrame, checks: pd.DataFrame, log: pd.DataFrame,
              alignment: pd.DataFrame, final_step: int) -> SweepResult:
    """The statistics of a unit table (what load computes; tests build tables by hand)."""
    fits = {o: depth_fit(units, o) for o in PRIMARY}
    passing = units[units["shape_ok"].astype(bool)]
    effects = {o: depth_effect(units, f) for o, f in fits.items()}
    effects["steps_to_half"] = speed_effect(units, never=final_step + 1)
    return SweepResult(units, checks, log, alignment, fits,
                       {o: depth_fit(passing, o) for o in PRIMARY}, effects,
                       {o: component_fit(units, o) for o in PRIMARY}, final_step)


def load(cfg: Config, paths: Paths) -> SweepResult:
    """Read stage 08's outputs back, with the statistics recomputed from the unit table."""
    folder = paths.stage("sweep")
    if not (folder / "units.csv").is_file():
        raise FileNotFoundError(f"{folder / 'units.csv'}: not found; run the stage sweep first")
    units = pd.read_csv(folder / "units.csv")
    units["failed_checks"] = units["failed_checks"].fillna("")
    return summarise(units, pd.read_csv(folder / "checks.csv"), pd.read_csv(folder / "log.csv"),
                     pd.read_csv(folder / "alignment.csv"), cfg.finetune.steps)


def metrics(cfg: Config, result: SweepResult) -> dict:
    """data/metrics/sweep.json: the grid, each unit's measures, the fits and the outcome."""
    return {"preset": cfg.preset, "helpful_steps": list(cfg.sweep.helpful_steps),
            "safe_steps": list(cfg.sweep.safe_steps), "seeds": list(cfg.sweep.seeds),
            "finetune_seed": cfg.finetune.seeds[0], "layer": cfg.layer,
            "position": cfg.analysis.position,
            "units": result.units.drop(columns=["failed_checks"]).to_dict(orient="records"),
            "fits": {o: dataclasses.asdict(f) for o, f in result.fits.items()},
            "fits_passing": {o: dataclasses.asdict(f) for o, f in result.fits_passing.items()},
            "effects": {o: dataclasses.asdict(e) for o, e in result.effects.items()},
            "outcome": outcome(result)}


def outcome(result: SweepResult) -> str:
    """SUPPORTED if both primary slopes are above 0 (CI_LEVEL interval), CONTRADICTED if either
    is below; NOT_RESOLVED otherwise."""
    fits = [result.fits[o] for o in PRIMARY]
    if any(f.ci_high < 0 for f in fits):  # NaN (no interval) compares False: never decides
        return CONTRADICTED
    if all(f.ci_low > 0 for f in fits):
        return SUPPORTED
    return NOT_RESOLVED


def fit_sentences(result: SweepResult) -> str:
    """The two depth fits in words; a fit without an interval says so instead of 'nan'."""
    return (_fit_text(result.fits["non_refusal_T"], "Non-refusal at T (points) moves") + ". "
            + _fit_text(result.fits["alignment_T"], "Alignment with v_rev at T moves") + ".")


def _fit_text(f: DepthFit, what: str) -> str:
    if f.method == "none":
        return f"{what}: no fit (the grid has fewer than two depth ratios with data)"
    if f.method == "constant":
        return f"{what}: {f.intercept:.2f} in every unit, so no slope to fit"
    interval = (f"{CI_LEVEL:.0%} CI [{f.ci_low:+.2f}, {f.ci_high:+.2f}], p = {f.p:.3g}"
                if np.isfinite(f.ci_low) and np.isfinite(f.ci_high) and np.isfinite(f.p)
                else "no interval: too few units vary")
    return (f"{what} {f.slope * np.log(2):+.2f} per doubling of H/S (slope {f.slope:+.2f} per "
            f"unit log ratio, {interval}, {f.method}, {f.n_units} units)")


def verdict(result: SweepResult) -> str:
    """Plain words on 'deeper H relative to S -> stronger, faster reversion along v_rev'."""
    rev = _fit_text(result.fits["non_refusal_T"], "non-refusal at T (points)")
    ali = _fit_text(result.fits["alignment_T"], "alignment with v_rev at T")
    speed = result.effects["steps_to_half"]
    faster = ("" if not np.isfinite(speed.spearman_rho) else
              f" Speed, descriptively: Spearman rho of log(H/S) with steps to half-reversion is "
              f"{speed.spearman_rho:+.2f} (negative means faster when H is deeper).")
    found = outcome(result)
    if found == SUPPORTED:
        head = ("Supported by this grid: the deeper H was relative to S, the more the model "
                "stopped refusing after benign fine-tuning and the more its drift lay along v_rev.")
    elif found == CONTRADICTED:
        head = (f"Contradicted by this grid: at least one measure of reversion fell, with a "
                f"{CI_LEVEL:.0%} interval below zero, as H deepened relative to S.")
    else:
        open_ = [NAMES[o] for o, f in result.fits.items() if not f.ci_low > 0]
        head = (f"Not resolved by this grid: no positive depth slope with a {CI_LEVEL:.0%} "
                f"interval above zero for {' nor '.join(open_)}, and none below zero either, so "
                "the grid neither shows nor rules out the claim.")
    return f"{head} Fits: {rev}; {ali}.{faster}"


def _robustness(result: SweepResult, n_bad: int) -> str:
    n, passing = len(result.units), result.fits_passing["non_refusal_T"]
    if n_bad == 0:
        return "Every unit passed the shape checks, so no fit rests on a misshapen history."
    if n_bad == n:
        return ("No unit passed the shape checks: every fit here rests on histories without the "
                "pre-registered shape, so none speaks for the paper's picture.")
    return ("Over the units that passed the shape checks only, "
            f"{_fit_text(passing, 'non-refusal at T (points)')}.")


def _components(result: SweepResult) -> str:
    comp = result.components["non_refusal_T"]
    if comp.method in ("none", "constant"):
        why = "non-refusal at T does not vary" if comp.method == "constant" else "too few depths"
        return f"The grid cannot take the ratio apart into the depths of H and of S ({why})."
    opposite = np.sign(comp.helpful_slope) == -np.sign(comp.safe_slope)
    return (f"Taken apart ({comp.method}), non-refusal at T moves {comp.helpful_slope:+.2f} points "
            f"per unit log of H steps and {comp.safe_slope:+.2f} per unit log of S steps: "
            f"{'opposite' if opposite else 'not opposite'} signs, where a pure depth-ratio effect "
            "would give opposite ones.")


def _mediation(units: pd.DataFrame) -> str:
    refusing = units[units["refusal_S"].astype(float) > 0]
    if not len(refusing):
        return ("No unit's theta_S refused any held-out harmful request, so ablating v_rev had "
                "no refusal to remove: the mediation check is empty here.")
    share = (refusing["ablation_refusal_drop"] / refusing["refusal_S"]).astype(float)
    return (f"Ablating each unit's own v_rev from theta_S removed {100 * share.mean():.0f}% of its "
            f"refusal on average (from {100 * share.min():.0f}% to {100 * share.max():.0f}%, over "
            f"the {len(refusing)} units whose theta_S refuses at all).")


def findings(result: SweepResult) -> list[str]:
    """The six sentences of 'What this shows', worded from the measurements."""
    u = result.units
    n, n_bad, n_reused = len(u), int((~u["shape_ok"].astype(bool)).sum()), int(u["reused"].sum())
    reached = int(np.isfinite(u["steps_to_half"].astype(float)).sum())
    return [
        f"The grid: {u['cell'].nunique()} depth cells x {u['seed'].nunique()} history seed(s) = "
        f"{n} units. Reusing the main history's own runs: {n_reused}. Missing at least one "
        f"pre-registered shape check: {n_bad} (flagged, kept in every fit).",
        verdict(result),
        _robustness(result, n_bad),
        _components(result),
        f"Units whose refusal fell to half of theta_S's within the {result.final_step} "
        f"fine-tuning steps: {reached} of {n}.",
        _mediation(u),
    ]
