"""The power analysis in words and in a figure: probability against the number of histories."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from gravrev.runtime import seeds
from gravrev.stats.power import (
    TARGET,
    HistoryLevel,
    PowerCurve,
    histories_needed,
    power_curve,
)

WHICH = {"p_excludes_zero": "95% interval excludes 0",
         "p_precise": "half-width below half the mean"}


def curves(inputs: dict[str, dict[str, float]]) -> dict[str, PowerCurve]:
    """power_curve of each claim from its {'mean', 'sd'}, on the claim's named seed stream."""
    return {claim: power_curve(claim, float(x["mean"]), float(x["sd"]),
                               seeds.power_simulation(claim))
            for claim, x in inputs.items()}


def figure(curves_: dict[str, PowerCurve], n_planned: int, title: str) -> plt.Figure:
    """Probability against the number of histories: a line per claim and criterion."""
    fig, ax = plt.subplots(figsize=(7.5, 5.6))
    for (claim, c), colour in zip(curves_.items(), ("C0", "C1", "C2", "C3"), strict=False):
        ns = [p.n for p in c.points]
        for which, style in (("p_excludes_zero", "-"), ("p_precise", "--")):
            ax.plot(ns, [getattr(p, which) for p in c.points], style, color=colour, marker="o",
                    ms=3, label=f"{claim} (mean {c.mean:.2f}, sd {c.sd:.2f}): {WHICH[which]}")
    ax.axhline(TARGET, color="0.5", lw=0.8, ls=":")
    ax.axvline(n_planned, color="k", lw=0.8, ls=":", label=f"this run: {n_planned} histories")
    ax.set(title=title, xlabel="histories (the unit of a pooled verdict)",
           ylabel="probability over simulated studies", ylim=(0, 1.02))
    ax.legend(fontsize=7, bbox_to_anchor=(0.5, -0.16), loc="upper center", ncol=1)
    fig.tight_layout()
    return fig


def sentence(curves_: dict[str, PowerCurve], n_planned: int) -> str:
    """What the curves say at the planned number of histories, and how many each claim needs."""
    parts = []
    for claim, c in curves_.items():
        p = c.at(n_planned) if any(x.n == n_planned for x in c.points) else None
        at = (f"at {n_planned} histories its 95% interval excludes 0 with P = "
              f"{p.p_excludes_zero:.2f} and is narrower than half its mean with P = "
              f"{p.p_precise:.2f}" if p else f"{n_planned} histories lie outside the grid")
        need = []
        for which in WHICH:
            n = histories_needed(c, which, seeds.power_simulation(claim))
            need.append(f"{WHICH[which]} with P >= {TARGET:.1f}: "
                        + (f"n >= {n}" if n is not None else "more than 100 histories"))
        parts.append(f"{claim} (history mean {c.mean:.2f}, between-history sd {c.sd:.2f}): "
                     f"{at}; {'; '.join(need)}")
    return ". ".join(parts) + "."


def check_sentence(reference: dict[str, dict[str, float]], measured: dict[str, HistoryLevel],
                   n_planned: int) -> str:
    """This run's own between-history sd beside the reference's, and the power it implies."""
    parts = []
    for claim, ref in reference.items():
        lv = measured.get(claim)
        if lv is None or not np.isfinite(lv.sd) or not lv.sd > 0:
            n = 0 if lv is None else lv.n_histories
            parts.append(f"{claim}: this run gives no between-history sd ({n} history mean(s))")
            continue
        c = power_curve(claim, float(ref["mean"]), lv.sd, seeds.power_simulation(claim))
        at = (f"with the reference mean {ref['mean']:.2f}, {n_planned} histories give P = "
              f"{c.at(n_planned).p_excludes_zero:.2f} (excludes 0) and P = "
              f"{c.at(n_planned).p_precise:.2f} (half-width below half the mean)"
              if any(p.n == n_planned for p in c.points) else
              f"{n_planned} histories lie outside the simulated 3 to 16")
        parts.append(f"{claim}: this run's history means are {lv.mean:.2f} ± {lv.sd:.2f} (sd over "
                     f"{lv.n_histories} histories, against the reference's {ref['sd']:.2f}); {at}")
    return "; ".join(parts) + "."


def runs_sentence(measured: dict[str, HistoryLevel | None], reference_runs: int) -> str:
    """How many runs this run's history means are over, against the reference's."""
    have = {claim: lv for claim, lv in measured.items() if lv is not None}
    if not have:
        return "This run measured none of these claims, so it has no history means to compare."
    per = {claim: lv.n_runs / lv.n_histories for claim, lv in have.items()}
    listed = ", ".join(f"{n:.3g} ({claim})" for claim, n in per.items())
    head = (f"The reference's sds are of history means over {reference_runs} runs each; this "
            f"run's are over {listed} runs per history, on average over histories.")
    if min(per.values()) < reference_runs:
        return (f"{head} Fewer runs put more within-history noise into each mean, so the "
                "pre-registered sd may understate this run's between-history sd.")
    return f"{head} No fewer runs, so the sd is not understated for that reason."
