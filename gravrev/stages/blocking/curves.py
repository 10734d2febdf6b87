"""One run over its logged steps: its drift's projection on and alignment with v_rev, its
judged behaviour, and the areas under them (cumulative reversion, non-refusal)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import drift
from gravrev.stats.nulls import cosine
from gravrev.stats.trajectories import cumulative_reversion


def run_curve(cfg: Config, acts: dict, log: pd.DataFrame, v: np.ndarray,
              mask: np.ndarray) -> pd.DataFrame:
    """One run over its logged steps (0 included): the harmful probes' drift's projection on
    and alignment with v_rev at the analysed cell, and its judged behaviour at each step."""
    a = acts[cfg.analysis.position][:, cfg.layer]  # (S, N, d), row 0 theta_S
    d = drift(a, a[0], mask)  # (S, d); step 0's is 0
    steps = acts["steps"].astype(int)
    rows = log.set_index("step").loc[steps]
    new = f"{cfg.finetune.new_task}_accuracy"
    if new not in rows:  # a setting without a new task (hf)
        rows = rows.assign(**{new: math.nan})
    return pd.DataFrame({
        "step": steps, "projection": d @ v,
        "alignment": [cosine(x, v) if np.linalg.norm(x) > 0 else math.nan for x in d],
        "non_refusal": 100 - rows["refusal_rate"].to_numpy(),
        "harmful_compliance": rows["harmful_compliance"].to_numpy(),
        "new_task_accuracy": rows[new].to_numpy(),
    })


def areas(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run: cumulative reversion and the area under non-refusal over its logged steps."""
    rows = []
    for (arm, h, seed), c in curve.groupby(["arm", "history", "seed"], sort=False):
        a = cumulative_reversion(c["step"], c["projection"], c["non_refusal"])
        rows.append({"arm": arm, "history": h, "seed": seed, "cumulative_reversion": a.reversion,
                     "area_non_refusal": a.non_refusal})
    return pd.DataFrame(rows)
