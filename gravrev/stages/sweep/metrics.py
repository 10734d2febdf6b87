"""Stage 08, sweep, its metrics: each unit's measures from its saved runs, the depth fits and
the outcome; data/measures/sweep/ and data/metrics/sweep.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.organism.shape import shape_checks
from gravrev.stages.artifacts import probe_selection
from gravrev.stages.skipped import skip_reason, skipped_metrics
from gravrev.stats.depth import (
    ComponentFit,
    DepthEffect,
    DepthFit,
    RankEffect,
    component_fit,
    depth_effect,
    depth_fit,
    log_ratio,
    rank_effect,
    speed_effect,
)
from gravrev.store.atomic import atomic_dir, write_csv, write_json
from gravrev.store.paths import Paths

PRIMARY = ("non_refusal_T", "alignment_T")  # the depth fits at T, shown beside the verdict
# The verdict's outcome, pre-registered in chapter 08 before the grid spanning the transition ran:
# the area under non-refusal over the logged steps / T (a mean level, %), off the ceiling at T.
VERDICT_OUTCOME = "non_refusal_auc"
RANKED = ("non_refusal_auc", "half_time")  # each against both depths, seed as the unit
DEPTHS = ("safe_steps", "helpful_steps")
# The claim's sign of rho(outcome, depth): deeper S reverts less and later, deeper H more, sooner.
EXPECTED = {("non_refusal_auc", "safe_steps"): -1, ("non_refusal_auc", "helpful_steps"): +1,
            ("half_time", "safe_steps"): +1, ("half_time", "helpful_steps"): -1}
SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved by this grid"
NAN = float("nan")


def measures_folder(paths: Paths) -> Path:
    """data/measures/sweep: the tables this step derives (the runs' folder is another step's)."""
    return paths.data / "measures" / "sweep"


# ----------------------------------------------------------------------------- one unit


def _with_flags(units: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """shape_ok and the failed checks' names per unit: flagged, never dropped."""
    failed = checks[~checks["passed"].astype(bool)].groupby("unit")["check"].agg("; ".join)
    units = units.assign(shape_ok=~units["unit"].isin(failed.index),
                         failed_checks=units["unit"].map(failed).fillna(""))
    units = units.assign(log_ratio=log_ratio(units["helpful_steps"], units["safe_steps"]))
    return units.assign(in_verdict=in_verdict(units))


def in_verdict(units: pd.DataFrame) -> pd.Series:
    """The units the verdict counts: shape checks passed and theta_S refuses at all (a unit
    that never refused is not 'slowest to revert': it had nothing to revert)."""
    return units["shape_ok"].astype(bool) & (units["refusal_S"].astype(np.float64) > 0)


def measure(cfg: Config, paths: Paths) -> None:
    """Each unit's measures from data/sweep (and stage history's and finetune's for the main
    units); data/measures/sweep/{units,checks,alignment}.csv and data/metrics/sweep.json."""
    if skip_reason(cfg, "sweep"):
        return skipped_metrics(cfg, paths, "sweep", measures_folder(paths))
    # Reading checkpoints needs torch; this module's types and verdicts (the render's) do not.
    from gravrev.stages.sweep.grid import ABLATION, grid
    from gravrev.stages.sweep.units import unit_measures

    runs, mask = paths.stage("sweep"), probe_selection(cfg, paths)
    log = pd.read_csv(runs / "log.csv")
    ablated = pd.read_csv(runs / ABLATION).set_index("unit")
    rows, frames = [], []
    for u in grid(cfg):
        row, align = unit_measures(cfg, paths, u, log[log["unit"] == u.name], ablated.loc[u.name],
                                   mask)
        rows.append(row)
        frames.append(align)
    behaviour = pd.read_csv(runs / "behaviour.csv").rename(columns={"unit": "history"})
    checks = shape_checks(behaviour, cfg.history.checks).rename(columns={"history": "unit"})
    with atomic_dir(measures_folder(paths)) as out:
        write_csv(out / "units.csv", _with_flags(pd.DataFrame(rows), checks))
        write_csv(out / "checks.csv", checks)
        write_csv(out / "alignment.csv", pd.concat(frames, ignore_index=True))
    write_json(paths.metrics_file("sweep"), SweepMetrics.of(cfg, load(cfg, paths)).to_json())


# ----------------------------------------------------------------------------- the grid


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
    ranks: dict[str, RankEffect]  # "outcome ~ depth" -> rho per seed and over seeds, verdict units
    n_verdict: int  # units the verdict counts (passing, and refusing at theta_S)


def summarise(units: pd.DataFrame, checks: pd.DataFrame, log: pd.DataFrame,
              alignment: pd.DataFrame, final_step: int) -> SweepResult:
    """The statistics of a unit table (what load computes; tests build tables by hand)."""
    fits = {o: depth_fit(units, o) for o in PRIMARY}
    passing = units[units["shape_ok"].astype(bool)]
    effects = {o: depth_effect(units, f) for o, f in fits.items()}
    effects["steps_to_half"] = speed_effect(units, never=final_step + 1)
    counted = units[in_verdict(units)]
    ranks = {rank_key(o, d): rank_effect(counted, o, d) for o in RANKED for d in DEPTHS}
    return SweepResult(units, checks, log, alignment, fits,
                       {o: depth_fit(passing, o) for o in PRIMARY}, effects,
                       {o: component_fit(units, o) for o in PRIMARY}, final_step, ranks,
                       len(counted))


def rank_key(outcome: str, depth: str) -> str:
    """The key of one rank effect in SweepResult.ranks and sweep.json."""
    return f"{outcome} ~ {depth}"


def load(cfg: Config, paths: Paths) -> SweepResult:
    """Read stage 08's tables back, with the statistics recomputed from the unit table."""
    folder = measures_folder(paths)
    if not (folder / "units.csv").is_file():
        raise FileNotFoundError(f"{folder / 'units.csv'}: not found; run `gravrev run sweep` "
                                "and `gravrev metrics sweep` first")
    units = pd.read_csv(folder / "units.csv")
    units["failed_checks"] = units["failed_checks"].fillna("")
    return summarise(units, pd.read_csv(folder / "checks.csv"),
                     pd.read_csv(paths.stage("sweep") / "log.csv"),
                     pd.read_csv(folder / "alignment.csv"), cfg.finetune.steps)


def outcome(result: SweepResult) -> str:
    """On VERDICT_OUTCOME over the verdict's units: SUPPORTED if the seed-level interval of rho
    with each depth lies on the claim's side of 0 (EXPECTED), CONTRADICTED if either lies on the
    other side; NOT_RESOLVED otherwise (and always with fewer than two seeds: no interval)."""
    sides = []
    for depth in DEPTHS:
        r, sign = result.ranks[rank_key(VERDICT_OUTCOME, depth)], EXPECTED[VERDICT_OUTCOME, depth]
        low, high = sign * r.ci_low, sign * r.ci_high
        sides.append((min(low, high), max(low, high)))
    if any(hi < 0 for _, hi in sides):  # NaN (no interval) compares False: never decides
        return CONTRADICTED
    if all(lo > 0 for lo, _ in sides):
        return SUPPORTED
    return NOT_RESOLVED


# ----------------------------------------------------------------------------- sweep.json


def _numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {k: NAN if v is None else v for k, v in row.items()}  # JSON null is NaN


@dataclass(frozen=True)
class SweepUnit:
    """One unit's row of sweep.json: its depths and seed, flags and measures (NaN: none)."""

    unit: str
    cell: str
    helpful_steps: int
    safe_steps: int
    seed: int
    reused: bool
    refusal_S: float
    refusal_T: float
    non_refusal_T: float
    harmful_compliance_T: float
    new_task_accuracy_T: float
    steps_to_half: float
    alignment_1: float
    alignment_20: float
    alignment_T: float
    v_rev_norm: float
    weight_distance: float
    refusal_S_ablated: float
    harmful_compliance_S_ablated: float
    ablation_refusal_drop: float
    shape_ok: bool
    log_ratio: float
    non_refusal_auc: float = NAN  # area under non-refusal / T (%)
    half_time: float = NAN  # steps to half-reversion, T where censored; NaN: never refused
    half_censored: bool = False
    in_verdict: bool = False


@dataclass(frozen=True)
class SweepMetrics:
    """data/metrics/sweep.json: the grid, each unit's measures, the fits and the outcome."""

    preset: str
    helpful_steps: list[int]
    safe_steps: list[int]
    seeds: list[int]
    finetune_seed: int
    layer: int
    position: str
    units: list[SweepUnit]
    fits: dict[str, DepthFit]
    fits_passing: dict[str, DepthFit]
    effects: dict[str, DepthEffect]
    outcome: str
    verdict_outcome: str = VERDICT_OUTCOME
    n_verdict_units: int = 0
    ranks: dict[str, RankEffect] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, cfg: Config, result: SweepResult) -> SweepMetrics:
        """The metrics of a loaded result under its config."""
        rows = result.units.drop(columns=["failed_checks"]).to_dict(orient="records")
        return cls(cfg.preset, list(cfg.sweep.helpful_steps), list(cfg.sweep.safe_steps),
                   list(cfg.sweep.seeds), cfg.finetune.seeds[0], cfg.layer,
                   cfg.analysis.position, [SweepUnit(**r) for r in rows], dict(result.fits),
                   dict(result.fits_passing), dict(result.effects), outcome(result),
                   VERDICT_OUTCOME, result.n_verdict, dict(result.ranks))

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["units"] = [dataclasses.asdict(u) for u in self.units]
        for key in ("fits", "fits_passing", "effects", "ranks"):
            out[key] = {o: dataclasses.asdict(x) for o, x in out[key].items()}
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepMetrics:
        return cls(**{**d, "units": [SweepUnit(**_numbers(u)) for u in d["units"]],
                      "fits": {o: DepthFit(**_numbers(f)) for o, f in d["fits"].items()},
                      "fits_passing": {o: DepthFit(**_numbers(f))
                                       for o, f in d["fits_passing"].items()},
                      "effects": {o: DepthEffect(**_numbers(e)) for o, e in d["effects"].items()},
                      "ranks": {k: _rank(x) for k, x in d.get("ranks", {}).items()}})


def _rank(d: dict[str, Any]) -> RankEffect:
    return RankEffect(**{**_numbers(d), "per_seed": _numbers(d["per_seed"])})
