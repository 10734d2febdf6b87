"""Figures of the history-depth sweep: grid heatmaps and reversion against log(H/S)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gravrev.stats.depth import DepthFit

FLAG = "†"  # a cell with a unit that missed a shape check


def grid_heatmap(units: pd.DataFrame, value: str, title: str, label: str,
                 limits: tuple[float, float], fmt: str = ".1f",
                 center: float | None = None) -> plt.Figure:
    """Mean of `value` over seeds per (H steps, S steps) cell; FLAG marks failed shape checks."""
    means = units.pivot_table(index="helpful_steps", columns="safe_steps", values=value,
                              aggfunc="mean", dropna=False)
    failed = units.assign(bad=~units["shape_ok"].astype(bool)).pivot_table(
        index="helpful_steps", columns="safe_steps", values="bad", aggfunc="any")
    annot = means.map(lambda v: "n/a" if not np.isfinite(v) else format(v, fmt))
    annot = annot.where(~failed.reindex_like(means).fillna(False).astype(bool), annot + FLAG)
    fig, ax = plt.subplots(figsize=(1.6 * means.shape[1] + 3, 0.9 * means.shape[0] + 1.8))
    sns.heatmap(means, annot=annot, fmt="", cmap="vlag" if center is not None else "viridis",
                center=center, vmin=limits[0], vmax=limits[1], cbar_kws={"label": label}, ax=ax)
    ax.invert_yaxis()  # deeper H upward
    ax.set(title=title, xlabel="S, safety-phase depth (optimiser steps)",
           ylabel="H, helpful-phase depth (optimiser steps)")
    fig.tight_layout()
    return fig


def outcome_vs_ratio(units: pd.DataFrame, fit: DepthFit, title: str, label: str) -> plt.Figure:
    """Each unit (colour: history seed; cross: failed a shape check) and the fitted line."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    data = units.assign(seed=units["seed"].astype(str),
                        shape=np.where(units["shape_ok"].astype(bool), "passed", "failed"))
    sns.scatterplot(data, x="log_ratio", y=fit.outcome, hue="seed", style="shape",
                    style_order=["passed", "failed"], markers={"passed": "o", "failed": "X"},
                    s=60, ax=ax)
    if np.isfinite(fit.slope):
        x = np.linspace(units["log_ratio"].min(), units["log_ratio"].max(), 50)
        ax.plot(x, fit.intercept + fit.slope * x, color="0.2",
                label=f"fit ({fit.method}), slope {fit.slope:.2f}")
    ax.set(title=title, xlabel="log(H steps / S steps) (natural log, dimensionless)",
           ylabel=label)
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
