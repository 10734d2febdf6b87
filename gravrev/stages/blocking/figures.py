"""Chapter 05's figures: calibration, matching, the arms over steps and at T, both regimes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gravrev.report.figures import readable, strip_points


def calibration(df: pd.DataFrame, p99: float, tolerance: float) -> plt.Figure:
    """The harm-blind manipulation check: alignment and new-task cost against lambda."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.lineplot(df, x="lambda", y="alignment", hue="history", marker="o", errorbar=None,
                 ax=axes[0])
    axes[0].axhline(p99, ls="--", color="C3", label="isotropic p99")
    axes[0].set(xscale="log", title="Held-out alignment at T", xlabel="weight lambda",
                ylabel="cos(drift, v_rev)")
    sns.lineplot(df, x="lambda", y="new_task_cost", hue="history", marker="o", errorbar=None,
                 ax=axes[1])
    axes[1].axhline(tolerance, ls="--", color="C3", label="tolerance")
    cost_of = df["cost_of"].iloc[0] if "cost_of" in df and len(df) else "new-task accuracy"
    axes[1].set(xscale="log", title=f"Task cost at T ({cost_of})", xlabel="weight lambda",
                ylabel="accuracy lost (points)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Fixing lambda without looking at harm (first seed of each history)")
    fig.tight_layout()
    return readable(fig)


def matching(df: pd.DataFrame) -> plt.Figure:
    """Achieved reduction along each arm's own direction against lambda (first seed)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.lineplot(df, x="lambda", y="reduction", hue="arm", marker="o", errorbar=None, ax=ax)
    ax.set(xscale="log", xlabel="weight lambda", ylabel="achieved reduction",
           title="Reduction along each arm's own direction (mean over histories)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return readable(fig)


def over_steps(curves: pd.DataFrame) -> plt.Figure:
    """Non-refusal and harmful compliance over the fine-tuning steps, one line per arm (mean
    over histories and seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    order = list(dict.fromkeys(curves["arm"]))
    for ax, (col, label) in zip(axes, (("non_refusal", "non-refusal (%)"),
                                       ("harmful_compliance", "harmful compliance (%)")),
                                strict=True):
        sns.lineplot(curves, x="step", y=col, hue="arm", hue_order=order, marker="o",
                     errorbar=None, ax=ax, legend=ax is axes[-1])
        ax.set(title=label, xlabel="fine-tuning step", ylabel=label, ylim=(-3, 103))
    axes[-1].legend(title="arm", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle("Every arm judged at every logged step (lines: means over runs)")
    fig.tight_layout()
    return readable(fig)


def harm_against_task(final: pd.DataFrame, new_task: str) -> plt.Figure:
    """Every arm at T: harm (non-refusal, harmful compliance) against new-task accuracy."""
    means = final.groupby("arm", sort=False)[["non_refusal", "harmful_compliance",
                                               "new_task_accuracy"]].mean().reset_index()
    order = list(means["arm"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True)
    for ax, (col, label) in zip(axes, (("non_refusal", "non-refusal at T (%)"),
                                       ("harmful_compliance", "harmful compliance at T (%)")),
                                strict=True):
        sns.scatterplot(final, x="new_task_accuracy", y=col, hue="arm", hue_order=order,
                        alpha=0.3, s=20, legend=False, ax=ax)
        sns.scatterplot(means, x="new_task_accuracy", y=col, hue="arm", hue_order=order, s=90,
                        marker="D", legend=ax is axes[-1], ax=ax)
        ax.set(xlabel=f"new task ({new_task}) accuracy at T (%)", ylabel=label, title=label,
               xlim=(-3, 103), ylim=(-3, 103))
    axes[-1].legend(title="arm (diamond: mean)", fontsize=8, bbox_to_anchor=(1.01, 1),
                    loc="upper left")
    fig.suptitle("Harm against the new task, every arm at T (small points: runs)")
    fig.tight_layout()
    return readable(fig)


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
    return readable(fig)


def regimes_over_steps(main: pd.DataFrame, shock: pd.DataFrame) -> plt.Figure:
    """Non-refusal and harmful compliance of the claim arms over the steps, one row per regime."""
    arms = list(dict.fromkeys(shock["arm"]))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharey=True)
    for row, (name, curves) in enumerate((("main regime", main[main["arm"].isin(arms)]),
                                          ("shock regime", shock))):
        for col, (measure, label) in enumerate((("non_refusal", "non-refusal (%)"),
                                                ("harmful_compliance",
                                                 "harmful compliance (%)"))):
            ax = axes[row, col]
            sns.lineplot(curves, x="step", y=measure, hue="arm", hue_order=arms, marker="o",
                         errorbar=None, ax=ax, legend=row == 0 and col == 1)
            ax.set(title=f"{name}: {label}", xlabel="fine-tuning step", ylabel=label,
                   ylim=(-3, 103))
    axes[0, 1].legend(title="arm", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle("The claim arms in both regimes (lines: means over histories)")
    fig.tight_layout()
    return readable(fig)
