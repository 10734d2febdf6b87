"""Chapter 06's figures: the mediation, patching, logit-lens and control plots, over histories.

A frame with a `history` column is pooled: lines and bars show the mean over histories, and
each history's own value is drawn as a grey point beside them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from gravrev.interp.labels import EVERY_LAYER
from gravrev.report.figures import readable, strip_points
from gravrev.stages.mediation.metrics import MediationStageResult
from gravrev.stages.mediation.report import MEASURE_LABELS
from gravrev.stages.mediation.verdicts import cell_name

RECIPIENTS = {"T->S": "θ_S, one group from θ_T", "S->T": "θ_T, one group from θ_S"}


def _outside_legend(ax: plt.Axes, title: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, bbox_to_anchor=(1.01, 1), loc="upper left")


def _layer_label(layer: int) -> str:
    return "each layer's own" if layer == EVERY_LAYER else f"layer {layer}"


def _pooled(df: pd.DataFrame) -> bool:
    return "history" in df and df["history"].nunique() > 1


def _points(df: pd.DataFrame, ax: plt.Axes, *, x: str, y: str, hue: str, bars: bool) -> None:
    """Each history's value as a small grey point (dodged like the bars, if bars)."""
    if not _pooled(df):
        return
    order = list(dict.fromkeys(df[hue]))
    grey = dict.fromkeys(order, "0.25")
    if bars:
        strip_points(df, x=x, y=y, hue=hue, hue_order=order, palette=grey, dodge=True,
                     legend=False, size=3, jitter=0.08, ax=ax)
    else:
        sns.scatterplot(df, x=x, y=y, hue=hue, hue_order=order, palette=grey, legend=False,
                        s=12, alpha=0.6, ax=ax)


def plot_mediation(df: pd.DataFrame) -> plt.Figure:
    """Refusal and harmful compliance against the added multiple of v_rev, per checkpoint and
    layer; ablation rows (if any) as bars in the last column.
    """
    df = df if "checkpoint" in df else df.assign(checkpoint="model")
    add = df[df["mode"] == "add"]
    ablate = df[df["mode"] == "ablate"]
    checkpoints = list(dict.fromkeys(add["checkpoint"]))
    n_cols = len(checkpoints) + (not ablate.empty)
    fig, axes = plt.subplots(
        len(MEASURE_LABELS), n_cols, figsize=(4.2 * n_cols + 1.5, 6.5), squeeze=False, sharey=True
    )
    for row, (col, label) in enumerate(MEASURE_LABELS.items()):
        for j, name in enumerate(checkpoints):
            ax = axes[row, j]
            cur = add[add["checkpoint"] == name].assign(
                layer=lambda d: d["layer"].map(_layer_label)
            )
            sns.lineplot(cur, x="scale", y=col, hue="layer", marker="o", errorbar=None, ax=ax)
            _points(cur, ax, x="scale", y=col, hue="layer", bars=False)
            ax.axvline(0, color="0.5", lw=0.8, ls=":")
            ax.set(
                title=f"{name}: + scale × v_rev",
                xlabel="scale (multiples of |mean h_H − mean h_S| at the layer)",
                ylabel=f"{label} (% of harmful prompts)",
                ylim=(-3, 103),
            )
            _outside_legend(ax, "added after")
        if not ablate.empty:
            ax = axes[row, -1]
            cur = ablate.assign(layer=ablate["layer"].map(_layer_label))
            sns.barplot(cur, x="layer", y=col, hue="checkpoint", errorbar=None, ax=ax)
            _points(cur, ax, x="layer", y=col, hue="checkpoint", bars=True)
            ax.tick_params(axis="x", labelrotation=30)
            ax.set(
                title="v_rev ablated",
                xlabel="direction removed (row of v_rev)",
                ylabel=f"{label} (% of harmful prompts)",
                ylim=(-3, 103),
            )
            _outside_legend(ax, "checkpoint")
    fig.suptitle("Does v_rev mediate refusal? (v_rev points from θ_S toward θ_H)")
    fig.tight_layout()
    return readable(fig)


def plot_patching(df: pd.DataFrame) -> plt.Figure:
    """Rates of each recipient with one component group taken from the other checkpoint."""
    ids = ["patch", "group", *(["history"] if "history" in df else [])]
    long = df.melt(
        id_vars=ids, value_vars=list(MEASURE_LABELS), var_name="measure", value_name="pct"
    ).assign(measure=lambda d: d["measure"].map(MEASURE_LABELS))
    patches = list(dict.fromkeys(df["patch"]))
    fig, axes = plt.subplots(
        1,
        len(patches),
        figsize=(5 * len(patches) + 2, 0.35 * df["group"].nunique() + 2.5),
        squeeze=False,
        sharey=True,
    )
    for ax, patch in zip(axes[0], patches, strict=True):
        cur = long[long["patch"] == patch]
        sns.barplot(cur, x="pct", y="group", hue="measure", errorbar=None, ax=ax)
        _points(cur, ax, x="pct", y="group", hue="measure", bars=True)
        ax.set(
            title=f"{patch}: {RECIPIENTS.get(patch, patch)}",
            xlabel="percent of harmful prompts",
            ylabel="group from the donor ('none': unpatched)",
            xlim=(0, 103),
        )
        _outside_legend(ax, "measure")
    fig.suptitle("Component patching: which parameters carry the reversion?")
    fig.tight_layout()
    return readable(fig)


def plot_logit_lens(df_by_checkpoint: dict[str, pd.DataFrame]) -> plt.Figure:
    """Refusal-minus-compliance log-probability margin, and both log-probs, after each block."""
    df = pd.concat([d.assign(checkpoint=k) for k, d in df_by_checkpoint.items()], ignore_index=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
    sns.lineplot(df, x="layer", y="margin", hue="checkpoint", marker="o", errorbar=None, ax=left)
    _points(df, left, x="layer", y="margin", hue="checkpoint", bars=False)
    left.axhline(0, color="0.5", lw=0.8, ls=":")
    left.set(
        title="Refusal margin at the first answer token",
        xlabel="block (output read through final norm and unembedding)",
        ylabel="log p(refuse) − log p(comply) (nats)",
    )
    _outside_legend(left, "checkpoint")
    tokens = df.melt(
        id_vars=["layer", "checkpoint", *(["history"] if "history" in df else [])],
        value_vars=["logp_refuse", "logp_comply"],
        var_name="token",
        value_name="logp",
    )
    sns.lineplot(tokens, x="layer", y="logp", hue="checkpoint", style="token", marker="o",
                 errorbar=None, ax=right)
    right.set(
        title="Log-probability of each first token",
        xlabel="block (output read through final norm and unembedding)",
        ylabel="mean log-probability (nats)",
    )
    _outside_legend(right, "")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Logit lens")
    fig.tight_layout()
    return readable(fig)


def control_frame(result: MediationStageResult) -> pd.DataFrame:
    """The control table with each row's change from its unmodified checkpoint, in points."""
    base = result.baseline.set_index(["history", "checkpoint"])
    df = result.controls.copy()
    key = pd.MultiIndex.from_frame(df[["history", "checkpoint"]])
    for m in MEASURE_LABELS:
        df[f"change_{m}"] = df[m].to_numpy() - base[m].reindex(key).to_numpy()
    df["cell"] = [cell_name(*k) for k in df[["checkpoint", "mode", "layer", "scale"]]
                  .itertuples(index=False)]
    return df


def plot_controls(result: MediationStageResult) -> plt.Figure:
    """Each direction's refusal and harmful compliance in every control cell, by kind."""
    df = control_frame(result)
    cells = list(dict.fromkeys(df["cell"]))
    kinds = list(dict.fromkeys(df["kind"]))
    fig, axes = plt.subplots(len(MEASURE_LABELS), len(cells), figsize=(3.2 * len(cells) + 1, 6.5),
                             squeeze=False, sharey=True)
    for row, (col, label) in enumerate(MEASURE_LABELS.items()):
        for j, cell in enumerate(cells):
            ax = axes[row, j]
            cur = df[df["cell"] == cell]
            strip_points(cur, x="kind", y=col, order=kinds, hue="kind", hue_order=kinds,
                         legend=False, size=5, jitter=0.15, ax=ax)
            ax.tick_params(axis="x", labelrotation=45)
            ax.set(title=cell, xlabel="", ylabel=f"{label} (%)", ylim=(-3, 103))
    fig.suptitle("v_rev against control directions (each point a direction in one history)")
    fig.tight_layout()
    return readable(fig)
