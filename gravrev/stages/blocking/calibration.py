"""Stage 05's harm-blind lambda check and the controls' matching on achieved reduction: the
pre-registered rules, the calibration runs' names and the matched lambdas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gravrev.config.experiment import CONTROLS
from gravrev.config.load import Config
from gravrev.training.tasks import FinetuneTask

MATCH_TOLERANCE = 0.1  # a control reaches its arm's reduction when within this of it


def cost_column(cfg: Config, columns) -> str:
    """The accuracy whose loss is the task cost: the new task's, or the benign task's where
    the setting has no new task (hf), as stage finetune does."""
    new = f"{cfg.finetune.new_task}_accuracy"
    return new if new in columns else "benign_accuracy"


def choose_lambda(cfg: Config, calib: pd.DataFrame) -> tuple[float, str]:
    """The pre-registered rule: the smallest lambda that holds alignment under the isotropic
    p99 in every history with task cost (new_task_cost: the loss of cost_column's accuracy)
    within tolerance; else the largest within it (the check failed, said so); else the
    smallest lambda."""
    tol = cfg.blocking.task_cost_tolerance
    worst = calib.groupby("lambda").agg(alignment=("alignment", "max"),
                                        cost=("new_task_cost", "max")).sort_index()
    ok = worst[(worst["alignment"] < calib["p99"].iloc[0]) & (worst["cost"] <= tol)]
    if len(ok):
        return float(ok.index[0]), "passed"
    cheap = worst[worst["cost"] <= tol]
    if len(cheap):
        return float(cheap.index[-1]), "failed: no lambda held alignment under the p99"
    return float(worst.index[0]), "failed: every lambda cost more than the tolerance"


def match_lambda(calib: pd.DataFrame, target: float, fallback: float) -> dict:
    """The pre-registered matching rule: the lambda of the grid whose reduction (mean over
    histories) is closest to the target (the smaller lambda on a tie); reached when within
    MATCH_TOLERANCE of it. A lambda whose reduction is undefined in a history is no
    candidate; with no candidate or an undefined target, `fallback`, not reached."""
    mean = calib.groupby("lambda")["reduction"].agg(lambda x: x.to_numpy().mean()).sort_index()
    gap = (mean - target).abs().dropna()
    if gap.empty:
        return {"lambda": float(fallback), "reduction": float(mean.get(fallback, math.nan)),
                "target": float(target), "reached": False}
    lam = float(gap.index[int(np.argmin(gap.to_numpy()))])
    return {"lambda": lam, "reduction": float(mean[lam]), "target": float(target),
            "reached": bool(gap[lam] <= MATCH_TOLERANCE)}


def match_controls(matching: pd.DataFrame, controls: list[str], lam: float) -> dict[str, dict]:
    """Each control's match_lambda to the mean reduction of the arm it controls at lam."""
    matched = {}
    for c in controls:
        of = matching[matching["arm"] == CONTROLS[c]]
        target = float(of[of["lambda"] == lam]["reduction"].to_numpy().mean())
        matched[c] = match_lambda(matching[matching["arm"] == c], target, lam)
    return matched


def reduction_table(tasks: list[FinetuneTask], reductions: list[float]) -> pd.DataFrame:
    """Each calibration run's achieved reduction along its arm's own direction(s)."""
    return pd.DataFrame(
        [{"arm": arm_of(t.arm), "lambda": t.block.lam, "history": t.history,
          "reduction": r} for t, r in zip(tasks, reductions, strict=True)],
        columns=["arm", "lambda", "history", "reduction"])


def calibrated_arms(claim: str, controls: list[str]) -> list[str]:
    """The arms run at every lambda: the claim arm, the arm each control controls, the controls."""
    return list(dict.fromkeys([claim, *(CONTROLS[c] for c in controls), *controls]))


def calibration_name(arm: str, lam: float) -> str:
    """A calibration or matching run's name, "<arm>_lambda<lambda>" (arm_of reads it back)."""
    return f"{arm}_lambda{lam:g}"


def arm_of(name: str) -> str:
    """The arm of a calibration or matching run's name ("<arm>_lambda<lambda>")."""
    return name.rsplit("_lambda", 1)[0]
