"""Measures of one history and its benign fine-tuning: reversion, v_rev, weights, mediation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.behaviour.evaluate import eval_sets
from gravrev.config.load import Config
from gravrev.interp.direction import alignment_trajectory, v_rev_checkpoint_diff
from gravrev.interp.steering import ablate_direction, judged_rates, reversion_norms
from gravrev.organism.model import load_checkpoint
from gravrev.organism.world import World
from gravrev.store.atomic import read_npz
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


def unit_direction(cfg: Config, folder: Path, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The unit's own v_rev (L, d) from its theta_H and theta_S, and |v_rev| at the layer."""
    pos = cfg.analysis.position
    helpful, safe = (read_npz(folder / f"acts_{n}.npz")[pos] for n in ("helpful", "safe"))
    norm = float(reversion_norms(helpful, safe, mask)[cfg.layer])
    return v_rev_checkpoint_diff(helpful, safe, mask), norm


def unit_alignment(cfg: Config, npz: Path, v_rev: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """cos(drift_t, v_rev) of the unit's fine-tuning run at the analysed layer and position."""
    acts = read_npz(npz)
    df = alignment_trajectory(acts[cfg.analysis.position], acts["steps"], v_rev, mask)
    return df[df["layer"] == cfg.layer].reset_index(drop=True)


def reversion(cfg: Config, log: pd.DataFrame) -> dict:
    """Refusal at theta_S (step 0) and at T, non-refusal at T, steps to half-reversion."""
    log = log.sort_values("step")
    start, end = log.iloc[0], log.iloc[-1]
    return {"refusal_S": start["refusal_rate"], "refusal_T": end["refusal_rate"],
            "non_refusal_T": 100 - end["refusal_rate"],
            "harmful_compliance_T": end["harmful_compliance"],
            "new_task_accuracy_T": end[f"{cfg.finetune.new_task}_accuracy"],
            "steps_to_half": half_reversion_step(log)}


def weights_and_mediation(cfg: Config, folder: Path, v_rev: np.ndarray, device: str) -> dict:
    """||theta_S - theta_H||_2, and theta_S's judged rates with v_rev ablated at every layer."""
    theta_h, _ = load_checkpoint(folder / "helpful", "cpu")
    model, tok = load_checkpoint(folder / "safe", device)
    distance = float((flat_params(model) - flat_params(theta_h)).norm())
    world = World(cfg.world)
    with ablate_direction(model, v_rev):
        rates = judged_rates(model, tok, eval_sets(world, cfg.world.n_eval)["harmful"], device,
                             world.alphabet)
    return {"weight_distance": distance, "refusal_S_ablated": rates.refusal_rate,
            "harmful_compliance_S_ablated": rates.harmful_compliance}


def measure(cfg: Config, folder: Path, npz: Path, log: pd.DataFrame, mask: np.ndarray,
            device: str) -> tuple[dict, pd.DataFrame]:
    """Every per-unit measure, and the unit's alignment trajectory."""
    v_rev, norm = unit_direction(cfg, folder, mask)
    align = unit_alignment(cfg, npz, v_rev, mask)
    by_step = align.set_index("step")["alignment"]
    out = reversion(cfg, log)
    for step in ALIGNMENT_STEPS:
        out[f"alignment_{step}"] = float(by_step.get(step, np.nan))
    out.update(alignment_T=float(by_step.loc[by_step.index.max()]), v_rev_norm=norm,
               **weights_and_mediation(cfg, folder, v_rev, device))
    out["ablation_refusal_drop"] = out["refusal_S"] - out["refusal_S_ablated"]
    return out, align


