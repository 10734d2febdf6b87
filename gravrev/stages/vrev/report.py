"""Stage 03, vrev, its report: what the alignments show, in words."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.vrev.compute import VrevResult

AGREE = 0.9  # cosine from which two histories' v_rev count as one direction in the findings


def findings(cfg: Config, r: VrevResult) -> list[str]:
    """What chapter 03 shows, in words computed from the alignments."""
    out = []
    eb = r.early_by_step[r.early_by_step["history"] == "all"].set_index("step")
    each = r.early_by_step[r.early_by_step["history"] != "all"]
    for step in (1, 20):
        if step in eb.index:
            x = eb.loc[step]
            hs = each[each["step"] == step]
            by = ("; by history " + ", ".join(f"{h.history} {h.mean:.2f}" for h in hs.itertuples())
                  if len(hs) > 1 else "")
            out.append(f"At step {step}, over {int(x['n'])} short runs, alignment is "
                       f"{x['mean']:.2f} ± {x['sd']:.2f} (95% CI {x['ci_low']:.2f} to "
                       f"{x['ci_high']:.2f} over runs{by}; chapter 07 pools over histories).")
    large = r.early[(r.early["arm"] == "large_batch") & (r.early["step"] == 1)]
    if len(large):
        out.append(f"The expected first update (16x the batch) aligns at "
                   f"{large['alignment'].mean():.2f}: the spread of single runs around it is "
                   "batch noise.")
    bs = r.by_step[r.by_step["history"] == "all"].set_index("step")
    last = int(bs.index.max())
    m = r.models["all"]
    trend = "rises" if m["slope"] > 0 and m["slope_p"] < 0.05 else (
        "falls" if m["slope"] < 0 and m["slope_p"] < 0.05 else "shows no clear trend")
    out.append(f"Over the main runs alignment {trend} with log(step) (slope {m['slope']:.3f}, "
               f"SE {m['slope_se']:.3f}, {m['method']}) and reaches {bs.loc[last, 'mean']:.2f} ± "
               f"{bs.loc[last, 'sd']:.2f} at step {last}.")
    others = r.between_histories[r.between_histories["history"] != r.between_histories["other"]]
    if len(others):
        lo, hi = others["cosine"].min(), others["cosine"].max()
        if lo >= AGREE:
            out.append(f"v_rev of independent histories agree closely (cosine {lo:.2f}-{hi:.2f} "
                       "at the analysed layer): the direction is a property of the shared "
                       "pretraining and the H -> S step, not of one seed.")
        else:
            out.append(f"v_rev is not the same direction in every history (cosine {lo:.2f}-"
                       f"{hi:.2f} at the analysed layer): it depends on the history's seed, "
                       "and each run is measured against its own history's v_rev.")
    return out


def alignment_harm_table(r: VrevResult) -> pd.DataFrame:
    """One row per history: rho(alignment, harm) over the logged steps, with the bound flags."""
    return pd.DataFrame([{"history": h, **asdict(x)}
                         for h, x in r.alignment_harm.per_history.items()])


def alignment_harm_findings(r: VrevResult) -> list[str]:
    """What the step correlations of alignment with harm show, floors and ceilings said."""
    out = []
    for measure, label in (("non_refusal", "non-refusal"),
                           ("harmful_compliance", "harmful compliance")):
        xs = r.alignment_harm.per_history
        rhos = {h: getattr(x, f"rho_{measure}") for h, x in xs.items()}
        bound = [h for h, x in xs.items() if getattr(x, f"at_bound_{measure}")]
        defined = {h: v for h, v in rhos.items() if not np.isnan(v)}
        per = ", ".join(f"{h} {v:+.2f}" if not np.isnan(v) else f"{h} undefined"
                        for h, v in rhos.items())
        text = (f"Over the logged steps, Spearman's rho of alignment with {label} is {per}"
                + (f" (mean over {len(defined)} histories {np.mean(list(defined.values())):+.2f})"
                   if defined else ""))
        if bound:
            text += (f"; {label} sits at 0% or 100% on most steps in {', '.join(bound)}, so "
                     "its ranks are mostly ties at a bound and rho there says little")
        out.append(text + ".")
    return out
