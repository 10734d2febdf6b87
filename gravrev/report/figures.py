"""Figures: seaborn/matplotlib, each with a title, labelled axes and units."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter

sns.set_theme(style="whitegrid", context="notebook")

FIGURE_WIDTH = 9.0  # inches: a figure of several panels spans the book's text column
# Width over height at most this: at the text column's ~660 px a figure is >= ~330 px tall.
MAX_ASPECT = 2.0
ONE_ROW_PANELS = 3  # more panels than this go on two rows (or more), never one long strip
MAX_COLUMNS = 3


def panel_grid(
    n: int, *, columns: int | None = None, panel_aspect: float = 1.3,
    width: float = FIGURE_WIDTH, **subplot_kw,
) -> tuple[plt.Figure, list[plt.Axes]]:
    """`n` panels readable at column width: one row up to ONE_ROW_PANELS, else two rows (or
    more, at most MAX_COLUMNS across); never wider than MAX_ASPECT; spare cells removed."""
    if columns is None:
        columns = n if n <= ONE_ROW_PANELS else min(MAX_COLUMNS, math.ceil(n / 2))
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    height = max(rows * width / columns / panel_aspect, width / MAX_ASPECT)
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False, **subplot_kw)
    cells = list(axes.flat)
    for ax in cells[n:]:
        fig.delaxes(ax)
    return fig, cells[:n]


def readable(fig: plt.Figure) -> plt.Figure:
    """No wider than MAX_ASPECT times its height: a wide strip shrinks to an unreadable sliver at
    column width, so the figure is made taller (its panels keep their layout)."""
    width, height = fig.get_size_inches()
    if width > MAX_ASPECT * height:
        fig.set_size_inches(width, width / MAX_ASPECT)
    return fig


def training_curves(curves: pd.DataFrame) -> plt.Figure:
    """Loss per step of each history phase (P, H, S), one line per history."""
    fig, axes = panel_grid(curves["phase"].nunique(), sharey=True)
    for i, (ax, (phase, df)) in enumerate(
        zip(axes, curves.groupby("phase", sort=False), strict=True)
    ):
        df = df.sort_values(["history", "step"])
        window = max(1, df["step"].nunique() // 50)  # smoothed within each history, never across
        df = df.assign(smoothed=df.groupby("history")["loss"].transform(
            lambda s, w=window: s.rolling(w, min_periods=1).mean()))
        sns.lineplot(data=df, x="step", y="smoothed", hue="history", errorbar=None, ax=ax,
                     lw=1, legend=i == 0)
        ax.set(
            title=f"phase {phase}", xlabel="training step", ylabel="loss (nats/token)", yscale="log"
        )
    fig.suptitle("Training history: loss per phase (rolling mean)")
    fig.tight_layout()
    return fig


def alignment_trajectory(
    df: pd.DataFrame, nulls: dict[str, float] | None = None, hue: str | None = None
) -> plt.Figure:
    """Per-run lines, a mean ± sd band, and horizontal lines for the nulls' quantiles."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    if hue is None:
        for _, run in df.groupby("seed"):
            ax.plot(run["step"], run["alignment"], color="0.6", lw=0.8, alpha=0.8)
        stats = df.groupby("step")["alignment"].agg(["mean", "std"]).reset_index()
        ax.plot(stats["step"], stats["mean"], color="C0", lw=2, marker="o", label="mean over runs")
        ax.fill_between(
            stats["step"],
            stats["mean"] - stats["std"].fillna(0),
            stats["mean"] + stats["std"].fillna(0),
            color="C0",
            alpha=0.2,
            label="± sd",
        )
    else:
        sns.lineplot(df, x="step", y="alignment", hue=hue, ax=ax, errorbar=("sd", 1), marker="o")
    for i, (name, value) in enumerate((nulls or {}).items()):
        ax.axhline(value, ls="--", color=f"C{i + 3}", lw=1, label=name)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(
        xscale="log",
        xlabel="benign fine-tuning step",
        ylabel="cos(drift, v_rev)",
        title="Alignment of representational drift with v_rev",
        ylim=(-1, 1),
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def layer_position_heatmap(table: pd.DataFrame, title: str) -> plt.Figure:
    """A layer x position grid of mean alignment."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.heatmap(
        table,
        annot=True,
        fmt=".2f",
        vmin=-1,
        vmax=1,
        cmap="RdBu_r",
        ax=ax,
        cbar_kws={"label": "mean cos(drift, v_rev)"},
    )
    ax.set(title=title, xlabel="position", ylabel="layer")
    fig.tight_layout()
    return fig


def null_histograms(samples: dict[str, np.ndarray], observed: np.ndarray) -> plt.Figure:
    """Null distributions of the cosine, with the observed alignments as a rug."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for name, s in samples.items():
        sns.histplot(s, bins=120, stat="density", element="step", fill=False, ax=ax, label=name)
    sns.rugplot(observed, ax=ax, color="k", height=0.08, label="observed (run-step pairs)")
    ax.set(
        xlabel="cosine with the drift",
        ylabel="density",
        title="Null distributions of cos(drift, direction)",
        xlim=(-1, 1),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


VERDICT_COLOURS = {"holds": "C2", "does not hold": "C3", "not comparable": "0.5"}
BOUNDED = ("cosine", "Spearman rho")  # units that live in [-1, 1]


def paper_vs_measured(table: pd.DataFrame) -> plt.Figure:
    """Each claim with a paper figure: the paper's value beside this run's pooled mean and the
    95% interval that decided its verdicts; colour: direction verdict, fill: size verdict."""
    bounded = table["unit"].isin(BOUNDED)
    panels = [(table[bounded], "cosine or Spearman rho"), (table[~bounded], "percent")]
    panels = [(df, unit) for df, unit in panels if len(df)]
    rows = [len(df) for df, _ in panels]
    height = max(FIGURE_WIDTH / MAX_ASPECT, 0.55 * sum(rows) + 2.4)
    fig, axes = plt.subplots(len(panels), 1, figsize=(FIGURE_WIDTH, height), squeeze=False,
                             gridspec_kw={"height_ratios": rows})
    for ax, (df, unit) in zip(axes.flat, panels, strict=True):
        y = np.arange(len(df))[::-1]
        ax.errorbar(df["paper_mean"], y + 0.15, xerr=df["paper_sd"].fillna(0), fmt="s",
                    color="0.35", ms=6, capsize=2, label="paper (its mean ± sd)")
        for yi, row in zip(y, df.itertuples(), strict=True):
            colour = VERDICT_COLOURS.get(row.direction, "0.5")
            ax.plot([row.ci_low, row.ci_high], [yi - 0.15] * 2, color=colour, lw=2.5)
            ax.plot(row.mean, yi - 0.15, "o", ms=8, color=colour,
                    mfc=colour if row.size == "holds" else "white", mew=2)
        ax.set_yticks(y, [f"{i}\n({u})" for i, u in zip(df["id"], df["unit"], strict=True)],
                      fontsize=8)
        sd = df["paper_sd"].fillna(0)
        lo = min(df["ci_low"].min(), (df["paper_mean"] - sd).min())
        hi = max(df["ci_high"].max(), (df["paper_mean"] + sd).max())
        if unit.startswith("cosine"):
            lo, hi = min(lo, -1.0), max(hi, 1.0)
            ax.axvspan(-1, 1, color="0.93", zorder=0)  # a cosine's and a rho's whole range
        pad = 0.05 * (hi - lo)
        ax.axvline(0, color="k", lw=0.5)
        ax.set(xlabel=unit, xlim=(lo - pad, hi + pad), ylim=(-0.6, len(df) - 0.4))
    legend = [plt.Line2D([], [], color="0.35", marker="s", ls="", label="paper (mean ± sd)")]
    legend += [plt.Line2D([], [], color=c, marker="o", lw=2.5, label=f"this run, 95% CI: {v}")
               for v, c in VERDICT_COLOURS.items() if v in set(table["direction"])]
    legend += [plt.Line2D([], [], color="0.2", marker="o", ls="", mfc="white", mew=2,
                          label="open: size does not hold or is not judged")]
    fig.legend(handles=legend, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle("Paper versus this run: the intervals that decided the verdicts")
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    return fig


def sensitivity(df: pd.DataFrame, lr: float, optimizer: str) -> plt.Figure:
    """Early-step alignment under each optimizer and learning rate (above), and each batch
    size (below)."""
    fig, axes = panel_grid(2, columns=1, panel_aspect=2.6, sharex=True)
    by_lr = df.assign(setting=df["optimizer"] + " lr " + df["lr"].map("{:g}".format))
    sns.lineplot(by_lr, x="step", y="alignment", hue="setting", marker="o", errorbar=None,
                 ax=axes[0])  # one run per setting: no interval to draw
    axes[0].legend(fontsize=8, title="setting", bbox_to_anchor=(1.01, 1), loc="upper left")
    axes[0].set(
        title="Optimizer and learning rate",
        xlabel="fine-tuning step",
        ylabel="cos(drift, v_rev)",
        xscale="log",
    )
    at_lr = df[(df["lr"] == lr) & (df["optimizer"] == optimizer)]
    sns.lineplot(
        at_lr, x="step", y="alignment", hue="batch_size", marker="o", ax=axes[1], palette="crest",
        errorbar=None,
    )
    axes[1].legend(fontsize=8, title="batch size", bbox_to_anchor=(1.01, 1), loc="upper left")
    axes[1].set(
        title=f"Batch size ({optimizer}, lr {lr:g})", xlabel="fine-tuning step",
        ylabel="cos(drift, v_rev)", xscale="log",
    )
    fig.suptitle("How the fine-tuning setting moves the early steps (first seed)")
    fig.tight_layout()
    return fig


def shape_margins(checks: pd.DataFrame) -> plt.Figure:
    """Each history's margin over each pre-registered shape check (points above the target)."""
    height = max(FIGURE_WIDTH / MAX_ASPECT, 0.5 * checks["check"].nunique() + 1.6)
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, height))
    sns.barplot(checks, y="check", x="margin", hue="history", ax=ax, orient="h", errorbar=None)
    ax.axvline(0, color="k", lw=1)
    ax.set(title="Shape checks: margin over each target, per history",
           xlabel="margin (percentage points; < 0 fails)", ylabel="")
    ax.legend(title="history", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def refusal_trajectories(log: pd.DataFrame, measures: tuple[str, ...]) -> plt.Figure:
    """Behaviour over fine-tuning steps, one line per history (mean ± sd over seeds)."""
    cols = [c for c in measures if c in log]
    fig, axes = panel_grid(len(cols), sharey=True)
    for i, (ax, col) in enumerate(zip(axes, cols, strict=True)):
        sns.lineplot(log, x="step", y=col, hue="history", ax=ax, errorbar=("sd", 1), marker="o",
                     legend=i == 0)
        ax.set(title=col.replace("_", " "), xlabel="fine-tuning step", ylabel="percent",
               ylim=(-3, 103))
        ax.set_xscale("symlog", linthresh=1)  # step 0 (θ_S) sits at the left edge
        ax.set_xlim(left=0)
        if i == 0:
            ax.legend(fontsize=8, title="history")
    fig.suptitle("Behaviour during benign fine-tuning (mean ± sd over seeds)")
    fig.tight_layout()
    return fig


@contextmanager
def fixed_global_rng(seed: int = 0) -> Iterator[None]:
    """numpy's global generator seeded for a block and restored after: a figure that jitters
    is the same picture every time it is drawn."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def strip_points(data: pd.DataFrame, **kw) -> None:
    """sns.stripplot under a fixed seed: its jitter comes from numpy's global generator, and
    every strip plot of the book must be the same picture on every render."""
    with fixed_global_rng():
        sns.stripplot(data, **kw)


def early_alignment(early: pd.DataFrame) -> plt.Figure:
    """Early-step alignment: every short run as a point, the mean with a 95% CI, per history;
    the large-batch run (the expected update) as a cross."""
    runs = early[early["arm"] == "early"]
    large = early[early["arm"] == "large_batch"]
    fig, ax = plt.subplots(figsize=(8, 4))
    strip_points(runs, x="step", y="alignment", hue="history", dodge=True, alpha=0.45, size=3,
                 ax=ax, legend=False)
    sns.pointplot(runs, x="step", y="alignment", hue="history", dodge=0.5, errorbar=("ci", 95),
                  seed=0,  # the bootstrap's draws fixed: the same figure every time
                  linestyle="none", marker="o", ax=ax)
    if len(large):
        sns.pointplot(large, x="step", y="alignment", color="k", marker="x", linestyle="none",
                      errorbar=None, ax=ax, label="16x batch (expected update)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title="Early-step alignment: short runs (points), mean and 95% CI per history",
           xlabel="fine-tuning step", ylabel="cos(drift, v_rev)")
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig



def alignment_and_refusal(main: pd.DataFrame) -> plt.Figure:
    """Per history on one step axis: cos(drift, v_rev) per run (thin) and its mean (left axis),
    non-refusal and harmful compliance, means over runs (right axis, percent)."""
    histories = list(dict.fromkeys(main["history"]))
    n = len(histories)
    columns = n if n <= ONE_ROW_PANELS else min(4, math.ceil(n / 2))  # two rows up to 8
    fig, axes = panel_grid(n, columns=columns, panel_aspect=1.0, sharex=True, sharey=True)
    last = {i for i in range(n) if (i + 1) % columns == 0 or i == n - 1}
    for i, (ax, h) in enumerate(zip(axes, histories, strict=True)):
        df = main[main["history"] == h].sort_values("step")
        for _, run in df.groupby("seed"):
            ax.plot(run["step"], run["alignment"], color="C0", lw=0.7, alpha=0.35)
        mean = df.groupby("step")[["alignment", "non_refusal", "harmful_compliance"]].mean()
        ax.plot(mean.index, mean["alignment"], color="C0", lw=2, label="cos(drift, v_rev)")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(title=h, ylim=(-1.05, 1.05), xlabel="fine-tuning step" if i >= n - columns
               else "", ylabel="cos(drift, v_rev)" if i % columns == 0 else "")
        ax.set_xscale("symlog", linthresh=1)  # a step 0 (θ_S), where logged, sits at the left
        ax.set_xlim(main["step"].min(), main["step"].max())
        right = ax.twinx()
        right.plot(mean.index, mean["non_refusal"], color="C3", lw=1.8, label="non-refusal")
        right.plot(mean.index, mean["harmful_compliance"], color="C1", lw=1.8, ls="--",
                   label="harmful compliance")
        right.set_ylim(-2.5, 102.5)  # 0%, 50%, 100% level with cosines -1, 0, 1
        right.set_yticks([0, 25, 50, 75, 100])
        right.grid(False)
        right.set_ylabel("percent" if i in last else "")
        if i not in last:
            right.tick_params(right=False, labelright=False)
        ax.set_yticks([-1, -0.5, 0, 0.5, 1])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.tick_params(labelsize=8)
        right.tick_params(labelsize=8)
    handles = axes[0].get_legend_handles_labels()
    more = fig.axes[-1].get_legend_handles_labels()
    fig.legend(handles[0] + more[0], handles[1] + more[1], loc="lower center", ncol=3,
               fontsize=8)
    fig.suptitle("Alignment with v_rev and refusal over fine-tuning, per history "
                 "(unblocked runs)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
