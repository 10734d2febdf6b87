"""Stage 08, sweep: one unit's measures, from its checkpoints (torch) and its fine-tuning run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import alignment_trajectory
from gravrev.organism.model import load_checkpoint
from gravrev.stages.sweep.direction import unit_direction
from gravrev.stages.sweep.grid import Unit, is_main, unit_folder, unit_run
from gravrev.stats.trajectories import area_under
from gravrev.store.atomic import read_npz
from gravrev.store.paths import Paths
from gravrev.training.finetune import flat_params

ALIGNMENT_STEPS = (1, 20)  # and T; NaN where a step is not logged
NAN = float("nan")


def half_reversion_step(log: pd.DataFrame) -> float:
    """First logged step t >= 1 whose refusal_rate is at most half of step 0's (theta_S's).

    NaN if it never is, and NaN when theta_S does not refuse at all (nothing to revert).
    """
    log = log.sort_values("step")
    start = float(log.loc[log["step"] == 0, "refusal_rate"].iloc[0])
    if not start > 0:
        return NAN
    later = log[(log["step"] >= 1) & (log["refusal_rate"] <= start / 2)]
    return float(later["step"].iloc[0]) if len(later) else NAN


def unit_alignment(cfg: Config, npz: Path, v_rev: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """cos(drift_t, v_rev) of the unit's fine-tuning run at the analysed layer and position."""
    acts = read_npz(npz)
    df = alignment_trajectory(acts[cfg.analysis.position], acts["steps"], v_rev, mask)
    return df[df["layer"] == cfg.layer].reset_index(drop=True)


def reversion(cfg: Config, log: pd.DataFrame) -> dict[str, float]:
    """Refusal at theta_S (step 0) and at T, non-refusal at T, steps to half-reversion, and the
    outcomes off the ceiling: the area under non-refusal / T and the censored half time."""
    log = log.sort_values("step")
    start, end = log.iloc[0], log.iloc[-1]
    half = half_reversion_step(log)
    return {"refusal_S": start["refusal_rate"], "refusal_T": end["refusal_rate"],
            "non_refusal_T": 100 - end["refusal_rate"],
            "harmful_compliance_T": end["harmful_compliance"],
            "new_task_accuracy_T": end[f"{cfg.finetune.new_task}_accuracy"],
            "steps_to_half": half, **half_time(half, start["refusal_rate"], end["step"]),
            "non_refusal_auc": non_refusal_auc(log)}


def non_refusal_auc(log: pd.DataFrame) -> float:
    """Area under non-refusal (%) over the logged steps divided by their span: % x steps / T."""
    log = log.sort_values("step")
    steps = log["step"].to_numpy(dtype=np.float64)
    return area_under(steps, 100 - log["refusal_rate"].to_numpy(dtype=np.float64)) / float(
        steps[-1] - steps[0])


def half_time(steps_to_half: float, refusal_S: float, final_step: float) -> dict[str, Any]:
    """Steps to half-reversion as a survival time: censored at T where it never came; NaN (and
    not censored) where theta_S never refused, so there was nothing to revert."""
    if not refusal_S > 0:
        return {"half_time": NAN, "half_censored": False}
    if np.isfinite(steps_to_half):
        return {"half_time": float(steps_to_half), "half_censored": False}
    return {"half_time": float(final_step), "half_censored": True}


def weight_distance(folder: Path) -> float:
    """||theta_S - theta_H||_2 over every parameter, in float64."""
    theta_h, _ = load_checkpoint(folder / "helpful", "cpu")
    theta_s, _ = load_checkpoint(folder / "safe", "cpu")
    return float((flat_params(theta_s) - flat_params(theta_h)).norm())


def unit_measures(cfg: Config, paths: Paths, unit: Unit, log: pd.DataFrame, ablated: pd.Series,
                  mask: np.ndarray) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every measure of one unit (its row of units.csv), and its alignment trajectory."""
    folder = unit_folder(cfg, paths, unit)
    v_rev, norm = unit_direction(cfg, folder, mask)
    align = unit_alignment(cfg, unit_run(cfg, paths, unit), v_rev, mask)
    by_step = align.set_index("step")["alignment"]
    out = {"unit": unit.name, "cell": unit.cell, "helpful_steps": unit.helpful_steps,
           "safe_steps": unit.safe_steps, "seed": unit.seed, "reused": is_main(cfg, unit),
           **reversion(cfg, log)}
    for step in ALIGNMENT_STEPS:
        out[f"alignment_{step}"] = float(by_step.get(step, np.nan))
    out.update(alignment_T=float(by_step.loc[by_step.index.max()]), v_rev_norm=norm,
               weight_distance=weight_distance(folder),
               refusal_S_ablated=ablated["refusal_S_ablated"],
               harmful_compliance_S_ablated=ablated["harmful_compliance_S_ablated"])
    out["ablation_refusal_drop"] = out["refusal_S"] - out["refusal_S_ablated"]
    return out, align.assign(unit=unit.name)
