"""Stage 03, vrev, its report: what the alignments show, in words."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.vrev.compute import VrevResult

AGREE = 0.9  # cosine from which two histories' v_rev count as one direction in the findings


def _early_step(eb: pd.DataFrame, each: pd.DataFrame, step: int) -> str:
    x = eb.loc[step]
    hs = each[each["step"] == step]
    by = ", ".join(f"{h.history} {h.mean:.2f}" for h in hs.itertuples())
    k = int(x["n_groups"]) if "n_groups" in x and np.isfinite(x["n_groups"]) else len(hs)
    if k >= 2:
        interval = (f"95% CI {x['ci_low']:.2f} to {x['ci_high']:.2f} over the {k} history means, "
                    f"{k - 1} df; by history {by}")
    else:
        interval = f"95% CI {x['ci_low']:.2f} to {x['ci_high']:.2f} over the runs of one history"
    return (f"At step {step}, over {int(x['n'])} short runs, alignment is {x['mean']:.2f} "
            f"(sd over runs {x['sd']:.2f}; {interval}).")


def _spread(r: VrevResult) -> str | None:
    """Where the step-1 spread of single runs lies: between histories or within them."""
    runs = r.early[(r.early["arm"] == "early") & (r.early["step"] == 1)]
    large = r.early[(r.early["arm"] == "large_batch") & (r.early["step"] == 1)]
    if not len(large):
        return None
    big = large.groupby("history")["alignment"].mean()
    means = runs.groupby("history")["alignment"].mean()
    text = ("The expected first update (16x the batch) aligns at "
            + ", ".join(f"{h} {v:.2f}" for h, v in big.items()))
    if len(means) < 2 or not set(big.index) <= set(means.index):
        return text + "."
    within = float(np.sqrt(runs.groupby("history")["alignment"].var(ddof=1).mean()))
    between = float(means.std(ddof=1))
    own = int(sum(abs(big[h] - means[h]) < abs(big[h] - means.mean()) for h in big.index))
    where = ("between histories, not batch noise around one value" if between > within else
             "mostly batch noise within a history")
    return (f"{text}, against the short runs' history means "
            + ", ".join(f"{h} {means[h]:.2f}" for h in big.index)
            + f": it lies nearer its own history's mean than the pooled mean in {own} of "
            f"{len(big)} histories. The history means differ with sd {between:.2f}, while a "
            f"history's single runs scatter around their mean with sd {within:.2f}: the spread "
            f"of single runs is {where}.")


def _trend(r: VrevResult) -> str:
    m = {k: (float("nan") if v is None else v) for k, v in r.models["all"].items()}
    per = {h: x["slope"] for h, x in r.models.items() if h != "all"}
    trend = "rises" if m["slope"] > 0 and m["slope_p"] < 0.05 else (
        "falls" if m["slope"] < 0 and m["slope_p"] < 0.05 else "shows no clear trend")
    if m.get("method") == "t over history slopes" and len(per) >= 2:
        how = (f"mean slope over the {len(per)} histories {m['slope']:.3f}, 95% CI "
               f"{m['ci_low']:.3f} to {m['ci_high']:.3f}, {len(per) - 1} df; per history "
               + ", ".join(f"{h} {v:+.3f}" for h, v in per.items()))
    elif m.get("method") == "t over history slopes":
        how = (f"slope {m['slope']:.3f} in the one history: no interval over histories, runs "
               "of one history are not independent draws of one")
    else:
        how = f"slope {m['slope']:.3f}, SE {m['slope_se']:.3f}, {m['method']}"
    return f"Over the main runs alignment {trend} with log(step) ({how})"


def findings(cfg: Config, r: VrevResult) -> list[str]:
    """What chapter 03 shows, in words computed from the alignments."""
    out = []
    eb = r.early_by_step[r.early_by_step["history"] == "all"].set_index("step")
    each = r.early_by_step[r.early_by_step["history"] != "all"]
    for step in (1, 20):
        if step in eb.index:
            out.append(_early_step(eb, each, step))
    spread = _spread(r)
    if spread:
        out.append(spread)
    bs = r.by_step[r.by_step["history"] == "all"].set_index("step")
    last = int(bs.index.max())
    out.append(f"{_trend(r)} and reaches {bs.loc[last, 'mean']:.2f} ± {bs.loc[last, 'sd']:.2f} "
               f"(sd over runs) at step {last}.")
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
