"""One history's mediation and route measurements in a few numbers.

Built from the tables that gravrev.interp.steering and gravrev.interp.patching produce for one
history;gravrev.report.mediation_words turns them into sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gravrev.interp.patching import NONE
from gravrev.interp.steering import EVERY_LAYER


@dataclass(frozen=True)
class PatchSummary:
    """One patching direction: the recipient unpatched, and the groups that move it most."""

    unpatched: float
    top_group: str
    top_refusal: float
    bottom_group: str
    bottom_refusal: float


@dataclass(frozen=True)
class HistorySummary:
    """One history's measurements at the analysed layer: refusal in percent, margins in nats."""

    n: int
    refusal_helpful: float
    refusal_safe: float
    refusal_finetuned: float
    ablated_at_layer: float  # theta_S with the analysed layer's row of v_rev removed everywhere
    ablated_all_layers: float  # theta_S with each block's own row removed after it
    add_safe: dict[float, float]  # scale -> refusal of theta_S with scale * v_rev added
    add_helpful: dict[float, float]
    t_to_s: PatchSummary  # theta_S given one group of theta_T
    s_to_t: PatchSummary  # theta_T given one group of theta_S
    decision_block: dict[str, int | None]  # first block from which refusal is favoured to the end
    final_margin: dict[str, float]


def patch_summary(df: pd.DataFrame) -> PatchSummary:
    """One direction of a patch_table: the unpatched rate and the highest and lowest group."""
    unpatched = float(df.loc[df["group"] == NONE, "refusal_rate"].iloc[0])
    groups = df[df["group"] != NONE].reset_index(drop=True)  # ties: the first in group order
    top = groups.loc[groups["refusal_rate"].idxmax()]
    bottom = groups.loc[groups["refusal_rate"].idxmin()]
    return PatchSummary(unpatched, str(top["group"]), float(top["refusal_rate"]),
                        str(bottom["group"]), float(bottom["refusal_rate"]))


def decision_block(margins: np.ndarray) -> int | None:
    """The first block from which the refusal margin stays positive to the last; None if never."""
    margins = np.asarray(margins)
    if margins[-1] <= 0:
        return None
    below = np.flatnonzero(margins <= 0)
    return int(below[-1] + 1) if len(below) else 0


def history_summary(baseline: pd.DataFrame, sweeps: pd.DataFrame, patching: pd.DataFrame,
                    lens: pd.DataFrame, layer: int) -> HistorySummary:
    """Summarise one history's tables (run_mediation's, patch_table's, logit_lens's) at `layer`."""
    rate = baseline.set_index("checkpoint")["refusal_rate"]
    ablate = sweeps[sweeps["mode"] == "ablate"].set_index("layer")["refusal_rate"]
    add = sweeps[(sweeps["mode"] == "add") & (sweeps["layer"] == layer)]
    margins = {c: g.sort_values("layer")["margin"].to_numpy()
               for c, g in lens.groupby("checkpoint", sort=False)}
    s_to_t = patch_summary(patching[patching["patch"] == "S->T"])

    def curve(checkpoint: str) -> dict[float, float]:
        cur = add[add["checkpoint"] == checkpoint]
        return dict(zip(cur["scale"].astype(float), cur["refusal_rate"].astype(float),
                        strict=True))

    return HistorySummary(
        n=int(baseline["n"].iloc[0]),
        refusal_helpful=float(rate["theta_H"]),
        refusal_safe=float(rate["theta_S"]),
        refusal_finetuned=s_to_t.unpatched,
        ablated_at_layer=float(ablate[layer]),
        ablated_all_layers=float(ablate[EVERY_LAYER]),
        add_safe=curve("theta_S"),
        add_helpful=curve("theta_H"),
        t_to_s=patch_summary(patching[patching["patch"] == "T->S"]),
        s_to_t=s_to_t,
        decision_block={c: decision_block(m) for c, m in margins.items()},
        final_margin={c: float(m[-1]) for c, m in margins.items()},
    )
