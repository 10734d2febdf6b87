"""Stage 08, sweep, its report: the verdict and findings in words, and the sweep's figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gravrev.stages.sweep.metrics import (
    CONTRADICTED,
    DEPTHS,
    EXPECTED,
    SUPPORTED,
    VERDICT_OUTCOME,
    SweepResult,
    outcome,
    rank_key,
)
from gravrev.stats.depth import CI_LEVEL, DepthFit, RankEffect

NAMES = {"non_refusal_T": "non-refusal at T", "alignment_T": "alignment with v_rev at T",
         "non_refusal_auc": "the area under non-refusal over the logged steps / T (%)",
         "half_time": "steps to half-reversion (censored at T)"}
DEPTH_NAMES = {"safe_steps": "S depth", "helpful_steps": "H depth"}
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
    interval = (f"{CI_LEVEL:.0%} CI [{f.ci_low:+.2f}, {f.ci_high:+.2f}] over {f.n_seeds} "
                f"history seeds, {f.n_seeds - 1} df, p = {f.p:.3g}"
                if np.isfinite(f.ci_low) and np.isfinite(f.ci_high) and np.isfinite(f.p)
                else _no_interval(f.n_seeds))
    return (f"{what} {f.slope * np.log(2):+.2f} per doubling of H/S (slope {f.slope:+.2f} per "
            f"unit log ratio, {interval}, {f.method}, {f.n_units} units)")


def _no_interval(n_seeds: int) -> str:
    if n_seeds < 2:
        return ("no interval or p: one history seed, and the seed is the unit (its units share "
                "its draws), so the slope is descriptive")
    return "no interval: the seeds' estimates do not vary, or too few seeds have one"


def degenerate(r: RankEffect) -> bool:
    """A zero-width interval: the seeds' rhos agree exactly (ranks are discrete, so a small grid
    ties often); the t interval then shows agreement, not precision."""
    return bool(np.isfinite(r.ci_low) and r.ci_low == r.ci_high)


def rank_text(r: RankEffect) -> str:
    """One rank effect in words: each seed's rho, their mean and the interval over seeds."""
    per = ", ".join(f"seed {k} {v:+.2f}" if np.isfinite(v) else f"seed {k} undefined"
                    for k, v in r.per_seed.items())
    if degenerate(r):
        over = (f"mean {r.rho:+.2f}, and the {CI_LEVEL:.0%} interval over {r.n_seeds} seeds is "
                "degenerate: the seeds agree exactly, so it has zero width, which shows "
                f"agreement of {r.n_seeds} seeds, not precision")
    elif np.isfinite(r.ci_low):
        over = (f"mean {r.rho:+.2f}, {CI_LEVEL:.0%} CI [{r.ci_low:+.2f}, {r.ci_high:+.2f}] over "
                f"{r.n_seeds} seeds, {r.n_seeds - 1} df")
    elif np.isfinite(r.rho):
        over = f"mean {r.rho:+.2f}, {_no_interval(r.n_seeds)}"
    else:
        over = "undefined (too few units, or the outcome does not vary)"
    return f"with {DEPTH_NAMES[r.depth]}: {over}" + (f" ({per})" if per else "")


def verdict(result: SweepResult) -> str:
    """Plain words on 'deeper H relative to S -> stronger, faster reversion', from the
    pre-registered outcome's rank correlations over the verdict's units."""
    u = result.units
    never = int((u["refusal_S"].astype(float) <= 0).sum())
    bad = int((~u["shape_ok"].astype(bool)).sum())
    found = outcome(result)
    signs = ", ".join(f"{'negative' if EXPECTED[VERDICT_OUTCOME, d] < 0 else 'positive'} with "
                      f"{DEPTH_NAMES[d]}" for d in DEPTHS)
    if found == SUPPORTED:
        head = (f"Supported by this grid: {NAMES[VERDICT_OUTCOME]} is ranked as the claim "
                f"predicts ({signs}), each {CI_LEVEL:.0%} interval over the history seeds on "
                "that side of 0.")
    elif found == CONTRADICTED:
        head = (f"Contradicted by this grid: {NAMES[VERDICT_OUTCOME]} is ranked against the claim "
                f"(which predicts {signs}), a {CI_LEVEL:.0%} interval over the history seeds on "
                "the other side of 0.")
    else:
        head = (f"Not resolved by this grid: the claim predicts {NAMES[VERDICT_OUTCOME]} "
                f"{signs}, and no {CI_LEVEL:.0%} interval over the history seeds decides it "
                "either way.")
    counted = (f"Counted: {result.n_verdict} of {len(u)} units (the rest missed a shape check "
               f"({bad}) or their θ_S never refused ({never}); those are flagged and kept in the "
               "tables, and a never-refusing unit is not ranked as slowest to revert, since it "
               "had nothing to revert).")
    ranks = "; ".join(
        f"{NAMES[o]} {rank_text(result.ranks[rank_key(o, d)])}"
        for o in (VERDICT_OUTCOME, "half_time") for d in DEPTHS)
    return f"{head} {counted} Spearman's rho, within each history seed: {ranks}."


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
            f"refusal on average (between {100 * share.min():.0f}% and {100 * share.max():.0f}% "
            f"per unit, over the {len(refusing)} units whose θ_S refuses at all).")


def room_sentence(units: pd.DataFrame, band: tuple[float, ...], min_task: float) -> str:
    """Which units leave the room at T that chapter 02's regime rule asks for, and at what depth."""
    nr = units["non_refusal_T"].astype(float)
    task = units["new_task_accuracy_T"].astype(float)
    if units.empty:
        return "The sweep ran no unit, so it says nothing of room at T."
    room = units[(nr > band[0]) & (nr < band[1]) & (task >= min_task)]
    rule = (f"non-refusal at T strictly inside {band[0]:g}–{band[1]:g}% with the new task at "
            f"{min_task:g}% or more: two of chapter 02's three parts, per unit; the shock part is "
            "not checked here")
    if room.empty:
        return (f"No unit leaves room at T ({rule}): the depth grid does not find the history "
                "change that the regime rule asks for.")
    listed = "; ".join(
        f"{u.unit} (non-refusal {u.non_refusal_T:.1f}%, new task {u.new_task_accuracy_T:.1f}%"
        + ("" if u.shape_ok else ", missed a shape check") + ")" for u in room.itertuples())
    cells = sorted({(int(u.helpful_steps), int(u.safe_steps)) for u in room.itertuples()})
    depths = ", ".join(f"H {h} / S {s}" for h, s in cells)
    verb = "leaves" if len(room) == 1 else "leave"
    return (f"{len(room)} of {len(units)} units {verb} room at T ({rule}): {listed}, at "
            f"{depths}. The main histories keep their depth: a choice of depth made on these "
            "units after seeing them would not be pre-registered.")


def findings(result: SweepResult) -> list[str]:
    """The six sentences of 'What this shows', worded from the measurements."""
    u = result.units
    n, n_bad, n_reused = len(u), int((~u["shape_ok"].astype(bool)).sum()), int(u["reused"].sum())
    reached = int(np.isfinite(u["steps_to_half"].astype(float)).sum())
    refusing = int((u["refusal_S"].astype(float) > 0).sum())
    return [
        f"The grid: {u['cell'].nunique()} depth cells x {u['seed'].nunique()} history seed(s) = "
        f"{n} units. Reusing the main history's own runs: {n_reused}. Missing at least one "
        f"pre-registered shape check: {n_bad} (flagged, kept in every fit).",
        verdict(result),
        _robustness(result, n_bad),
        _components(result),
        f"Units whose refusal fell to half of θ_S's within the {result.final_step} "
        f"fine-tuning steps: {reached} of the {refusing} whose θ_S refuses at all "
        f"({refusing - reached} censored at T = {result.final_step}); {n - refusing} unit(s) "
        "never refused and have no half time. Fits at T: "
        + fit_sentences(result),
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


def rank_table(result: SweepResult) -> pd.DataFrame:
    """One row per outcome and depth: each seed's rho, the mean and its interval over seeds."""
    rows = []
    for r in result.ranks.values():
        rows.append({"outcome": r.outcome, "depth": r.depth, "rho (mean over seeds)": r.rho,
                     "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p, "n_seeds": r.n_seeds,
                     "n_units": r.n_units, "rho over units (descriptive)": r.rho_units,
                     **{f"rho seed {k}": v for k, v in r.per_seed.items()}})
    return pd.DataFrame(rows)
