"""Stage 08, sweep, its report: the verdict and findings in words, and the sweep's figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gravrev.stages.sweep.metrics import CONTRADICTED, SUPPORTED, SweepResult, outcome
from gravrev.stats.depth import CI_LEVEL, DepthFit

NAMES = {"non_refusal_T": "non-refusal at T", "alignment_T": "alignment with v_rev at T"}
FLAG = "†"  # a cell with a unit that missed a shape check


# ----------------------------------------------------------------------------- words


def fit_sentences(result: SweepResult) -> str:
    """The two depth fits in words; a fit without an interval says so instead of 'nan'."""
    return (_fit_text(result.fits["non_refusal_T"], "Non-refusal at T (points) moves") + ". "
            + _fit_text(result.fits["alignment_T"], "Alignment with v_rev at T moves") + ".")


def _fit_text(f: DepthFit, what: str) -> str:
    if f.method == "none":
        return f"{what}: no fit (the grid has fewer than two depth ratios with data)"
    if f.method == "constant":
        return f"{what}: {f.intercept:.2f} in every unit, so no slope to fit"
    interval = (f"{CI_LEVEL:.0%} CI [{f.ci_low:+.2f}, {f.ci_high:+.2f}], p = {f.p:.3g}"
                if np.isfinite(f.ci_low) and np.isfinite(f.ci_high) and np.isfinite(f.p)
                else "no interval: too few units vary")
    return (f"{what} {f.slope * np.log(2):+.2f} per doubling of H/S (slope {f.slope:+.2f} per "
            f"unit log ratio, {interval}, {f.method}, {f.n_units} units)")


def verdict(result: SweepResult) -> str:
    """Plain words on 'deeper H relative to S -> stronger, faster reversion along v_rev'."""
    rev = _fit_text(result.fits["non_refusal_T"], "non-refusal at T (points)")
    ali = _fit_text(result.fits["alignment_T"], "alignment with v_rev at T")
    speed = result.effects["steps_to_half"]
    faster = ("" if not np.isfinite(speed.spearman_rho) else
              f" Speed, descriptively: Spearman rho of log(H/S) with steps to half-reversion is "
              f"{speed.spearman_rho:+.2f} (negative means faster when H is deeper).")
    found = outcome(result)
    if found == SUPPORTED:
        head = ("Supported by this grid: the deeper H was relative to S, the more the model "
                "stopped refusing after benign fine-tuning and the more its drift lay along v_rev.")
    elif found == CONTRADICTED:
        head = (f"Contradicted by this grid: at least one measure of reversion fell, with a "
                f"{CI_LEVEL:.0%} interval below zero, as H deepened relative to S.")
    else:
        open_ = [NAMES[o] for o, f in result.fits.items() if not f.ci_low > 0]
        head = (f"Not resolved by this grid: no positive depth slope with a {CI_LEVEL:.0%} "
                f"interval above zero for {' nor '.join(open_)}, and none below zero either, so "
                "the grid neither shows nor rules out the claim.")
    return f"{head} Fits: {rev}; {ali}.{faster}"


def _robustness(result: SweepResult, n_bad: int) -> str:
    n, passing = len(result.units), result.fits_passing["non_refusal_T"]
    if n_bad == 0:
        return "Every unit passed the shape checks, so no fit rests on a misshapen history."
    if n_bad == n:
        return ("No unit passed the shape checks: every fit here rests on histories without the "
                "pre-registered shape, so none speaks for the paper's picture.")
    return ("Over the units that passed the shape checks only, "
            f"{_fit_text(passing, 'non-refusal at T (points)')}.")


def _components(result: SweepResult) -> str:
    comp = result.components["non_refusal_T"]
    if comp.method in ("none", "constant"):
        why = "non-refusal at T does not vary" if comp.method == "constant" else "too few depths"
        return f"The grid cannot take the ratio apart into the depths of H and of S ({why})."
    opposite = np.sign(comp.helpful_slope) == -np.sign(comp.safe_slope)
    return (f"Taken apart ({comp.method}), non-refusal at T moves {comp.helpful_slope:+.2f} points "
            f"per unit log of H steps and {comp.safe_slope:+.2f} per unit log of S steps: "
            f"{'opposite' if opposite else 'not opposite'} signs, where a pure depth-ratio effect "
            "would give opposite ones.")


def _mediation(units: pd.DataFrame) -> str:
    refusing = units[units["refusal_S"].astype(float) > 0]
    if not len(refusing):
        return ("No unit's θ_S refused any held-out harmful request, so ablating v_rev had "
                "no refusal to remove: the mediation check is empty here.")
    share = (refusing["ablation_refusal_drop"] / refusing["refusal_S"]).astype(float)
    return (f"Ablating each unit's own v_rev from θ_S removed {100 * share.mean():.0f}% of its "
            f"refusal on average (from {100 * share.min():.0f}% to {100 * share.max():.0f}%, over "
            f"the {len(refusing)} units whose θ_S refuses at all).")


def findings(result: SweepResult) -> list[str]:
    """The six sentences of 'What this shows', worded from the measurements."""
    u = result.units
    n, n_bad, n_reused = len(u), int((~u["shape_ok"].astype(bool)).sum()), int(u["reused"].sum())
    reached = int(np.isfinite(u["steps_to_half"].astype(float)).sum())
    return [
        f"The grid: {u['cell'].nunique()} depth cells x {u['seed'].nunique()} history seed(s) = "
        f"{n} units. Reusing the main history's own runs: {n_reused}. Missing at least one "
        f"pre-registered shape check: {n_bad} (flagged, kept in every fit).",
        verdict(result),
        _robustness(result, n_bad),
        _components(result),
        f"Units whose refusal fell to half of θ_S's within the {result.final_step} "
        f"fine-tuning steps: {reached} of {n}.",
        _mediation(u),
    ]


# ----------------------------------------------------------------------------- figures


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
