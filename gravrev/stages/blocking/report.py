"""Chapter 05's words and figures: the lambda check, every arm at T, what blocking kept."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gravrev.claims.thresholds import kept_refusal
from gravrev.config.load import Config
from gravrev.report.figures import strip_points
from gravrev.stages.blocking.metrics import BlockingResult


def findings(cfg: Config, r: BlockingResult) -> list[str]:
    """What chapter 05 shows, in words computed from the arms."""
    arms = r.metrics.arms
    u, c = arms["unblocked"], arms.get(cfg.blocking.claim_arm)
    out = [f"The harm-blind manipulation check chose lambda = {r.lam:g} ({r.check})."]
    if c is not None:
        held = c.alignment.mean < u.alignment.mean
        kept = kept_refusal(c.non_refusal.mean, u.non_refusal.mean)
        out.append(
            f"The claim arm ({cfg.blocking.claim_arm}) {'held' if held else 'did not hold'} "
            f"alignment at T ({c.alignment.mean:.2f} against {u.alignment.mean:.2f}) "
            f"and {'kept' if kept else 'did not keep'} refusal: non-refusal "
            f"{c.non_refusal.mean:.0f}% against {u.non_refusal.mean:.0f}% unblocked, "
            f"new task {c.new_task_accuracy.mean:.0f}%.")
    costly = [a for a, m in arms.items() if m.task_cost_not_block and a != "unblocked"]
    if costly:
        out.append(f"Arms that stopped the new task being learned ({', '.join(costly)}) count as "
                   "task cost, not as blocks.")
    best = min((a for a in arms if a != "unblocked"), key=lambda a: arms[a].non_refusal.mean)
    out.append(f"The lowest non-refusal of any arm is {arms[best].non_refusal.mean:.0f}% "
               f"({best}).")
    return out


def calibration(df: pd.DataFrame, p99: float, tolerance: float) -> plt.Figure:
    """The harm-blind manipulation check: alignment and new-task cost against lambda."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.lineplot(df, x="lambda", y="alignment", hue="history", marker="o", errorbar=None,
                 ax=axes[0])
    axes[0].axhline(p99, ls="--", color="C3", label="isotropic p99")
    axes[0].set(xscale="log", title="Held-out alignment at T", xlabel="penalty weight lambda",
                ylabel="cos(drift, v_rev)")
    sns.lineplot(df, x="lambda", y="new_task_cost", hue="history", marker="o", errorbar=None,
                 ax=axes[1])
    axes[1].axhline(tolerance, ls="--", color="C3", label="tolerance")
    axes[1].set(xscale="log", title="New-task cost at T", xlabel="penalty weight lambda",
                ylabel="accuracy lost (points)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Fixing lambda without looking at harm (first seed of each history)")
    fig.tight_layout()
    return fig


def arms_overview(final: pd.DataFrame, measures: dict[str, str]) -> plt.Figure:
    """Every arm at T: one panel per measure, runs as points, mean as a bar."""
    fig, axes = plt.subplots(1, len(measures), figsize=(4.4 * len(measures), 4.2), sharey=True)
    order = list(dict.fromkeys(final["arm"]))
    for ax, (col, label) in zip(np.atleast_1d(axes), measures.items(), strict=True):
        sns.barplot(final, y="arm", x=col, order=order, errorbar=None, color="C0", alpha=0.35,
                    ax=ax)
        strip_points(final, y="arm", x=col, order=order, hue="history", size=4, ax=ax,
                     legend=ax is np.atleast_1d(axes)[-1])
        ax.set(title=label, xlabel=label, ylabel="")
    np.atleast_1d(axes)[-1].legend(title="history", fontsize=8, bbox_to_anchor=(1.01, 1),
                                   loc="upper left")
    fig.suptitle("Every blocking arm at step T (points: runs; bars: means)")
    fig.tight_layout()
    return fig
