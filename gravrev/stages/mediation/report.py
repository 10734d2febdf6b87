"""Chapter 06's words: the mediation and route analyses, robust over histories.

Every sentence is conditional on the measurements (HistorySummary per history): it says what
the numbers say, whichever way they go, with the mean and the per-history values.
"""

from __future__ import annotations

import numpy as np

from gravrev.claims.thresholds import READOUT_PERCENTILE, change_tolerance
from gravrev.stages.mediation.metrics import (
    HistorySummary,
    MediationMetrics,
    MediationStageResult,
    summaries,
)
from gravrev.stages.mediation.tables import LENS_CHECKPOINTS

MEASURE_LABELS = {"refusal_rate": "refusal", "harmful_compliance": "harmful compliance"}


def direction(before: np.ndarray, after: np.ndarray, tol: float) -> int:
    """-1: lower by more than tol in most histories, +1: higher in most, 0: neither."""
    d = np.asarray(after, float) - np.asarray(before, float)
    n = len(d)
    return -1 if (d < -tol).sum() > n / 2 else 1 if (d > tol).sum() > n / 2 else 0


def change_phrase(before: np.ndarray, after: np.ndarray, tol: float) -> str:
    """How refusal moves from `before` to `after` (one value per history), in words."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    d = after - before
    n, down, up = len(d), int((d < -tol).sum()), int((d > tol).sum())
    means = f"from {before.mean():.1f}% to {after.mean():.1f}%"
    details = [f"mean over {n} histor{'y' if n == 1 else 'ies'}",
               f"per-history change {d.min():+.1f} to {d.max():+.1f} points"]
    if down == n:
        verb = f"lowers refusal {means}" + (" in every history" if n > 1 else "")
    elif up == n:
        verb = f"raises refusal {means}" + (" in every history" if n > 1 else "")
    elif down == up == 0:
        verb = f"leaves refusal near {before.mean():.1f}%"
        details.insert(0, f"{after.mean():.1f}% after")
    elif up == 0 and down > n / 2:
        verb = f"lowers refusal {means} in {down} of {n} histories"
        details.insert(0, "the rest unchanged")
    elif down == 0 and up > n / 2:
        verb = f"raises refusal {means} in {up} of {n} histories"
        details.insert(0, "the rest unchanged")
    else:
        verb = f"moves refusal inconsistently, {means}"
        details.insert(0, f"lower in {down}, higher in {up} of {n} histories")
    return f"{verb} ({'; '.join(details)})"


def modal_group(groups: list[str | None]) -> tuple[str | None, int]:
    """The group named most often (ties: the first seen) and its count; None when none is."""
    named = [g for g in groups if g is not None]
    if not named:
        return None, 0
    best = max(dict.fromkeys(named), key=named.count)
    return best, named.count(best)


def best_groups(s: dict[str, HistorySummary], patch: str, tol: float
                ) -> tuple[list[str | None], np.ndarray, str]:
    """Per history, the single group that moves refusal most in `patch` (S->T restores, T->S
    removes), its share of fine-tuning's loss of refusal (NaN: no loss), and a per-history text.
    """
    groups, shares, parts = [], [], []
    for h, x in s.items():
        loss = x.refusal_safe - x.refusal_finetuned
        p = x.s_to_t if patch == "S->T" else x.t_to_s
        group = p.top_group if patch == "S->T" else p.bottom_group
        moved = p.top_refusal - p.unpatched if patch == "S->T" else p.unpatched - p.bottom_refusal
        if loss <= tol:
            groups.append(None), shares.append(np.nan), parts.append(f"{h}: no loss")
        elif moved <= tol:
            groups.append(None), shares.append(max(moved, 0) / loss)
            parts.append(f"{h}: no group above {tol:.1f} points")
        else:
            groups.append(group), shares.append(moved / loss)
            parts.append(f"{h}: {group} {moved / loss:.0%}")
    return groups, np.array(shares), ", ".join(parts)


def patch_findings(s: dict[str, HistorySummary], tol: float) -> list[str]:
    """Fine-tuning's loss of refusal, and which component groups carry it (patching)."""
    n, rows = len(s), list(s.values())
    safe = np.array([x.refusal_safe for x in rows])
    tuned = np.array([x.refusal_finetuned for x in rows])
    head = f"Unblocked fine-tuning (θ_S -> θ_T) {change_phrase(safe, tuned, tol)}"
    if direction(safe, tuned, tol) >= 0:
        return [head + ", so there is no loss of refusal for patching to locate."]
    up_groups, up, up_text = best_groups(s, "S->T", tol)
    down_groups, down, down_text = best_groups(s, "T->S", tol)
    (g_up, k_up), (g_down, k_down) = modal_group(up_groups), modal_group(down_groups)
    up_mean, down_mean = np.nanmean(up), np.nanmean(down)
    lines = [head + ".",
             "The best single component group to undo (θ_T given that group of θ_S "
             f"back) restores {up_mean:.0%} of the lost refusal on average (over histories with "
             f"a loss; per history: {up_text}).",
             "The best single group to change alone (θ_S given that group of θ_T) "
             f"removes {down_mean:.0%} of it on average (per history: {down_text})."]
    agree = g_up is not None and g_up == g_down and min(k_up, k_down) > n / 2
    if agree and up_mean >= 0.5 and down_mean >= 0.5:
        lines.append(f"{g_up} carries most of the loss of refusal: undoing its change restores "
                     "most of it, and its change alone removes most of it.")
    elif up_mean >= 0.5 > down_mean and g_up is not None and k_up > n / 2:
        lines.append(f"No single group's change removes most of the refusal on its own, but "
                     f"undoing {g_up}'s restores most of it: the loss needs several groups' "
                     f"changes together, {g_up}'s among them.")
    elif up_mean < 0.5 and down_mean < 0.5:
        lines.append("Neither undoing nor making one group's change moves most of the loss on "
                     "average, so the loss of refusal is spread over several component groups.")
    else:
        lines.append("The two patching directions do not single out one group across "
                     "histories, so no single group carries the loss of refusal on its own.")
    return lines


def lens_findings(s: dict[str, HistorySummary], n_layer: int, layer: int) -> list[str]:
    """Where in depth theta_S's refusal is decided, and the final margins, by the logit lens."""
    n = len(s)
    blocks = {h: x.decision_block.get("θ_S") for h, x in s.items()}
    per = ", ".join(f"{h}: {'never' if b is None else f'block {b}'}" for h, b in blocks.items())
    early = sum(b is not None and b < n_layer / 2 for b in blocks.values())
    late = sum(b is not None and b >= n_layer / 2 for b in blocks.values())
    if early + late == 0:
        head = ("The logit lens never shows θ_S favouring the refusal's first token over the "
                "compliant one at its last block, so it places no refusal decision")
    elif early > n / 2:
        head = ("The logit lens shows θ_S's refusal decided early: the margin turns positive, "
                f"and stays so, within the first half of the {n_layer} blocks")
    elif late > n / 2:
        head = ("The logit lens shows θ_S's refusal decided late: the margin turns positive "
                f"for good only in the second half of the {n_layer} blocks")
    else:
        head = "The logit lens places θ_S's refusal decision differently across histories"
    final = {c: np.mean([x.final_margin[c] for x in s.values()]) for c in LENS_CHECKPOINTS}
    return [f"{head} (first block of a lasting positive margin: {per}; v_rev is analysed after "
            f"block {layer}).",
            "At the last block the margin log p(refuse) - log p(comply) is "
            f"{final['θ_S']:.2f} nats in θ_S, {final['θ_T']:.2f} in θ_T and "
            f"{final['θ_H']:.2f} in θ_H (means over {n} histories)."]


def findings(result: MediationStageResult) -> list[str]:
    """The chapter's conclusions in plain words, computed from the tables, over histories."""
    s = summaries(result)
    rows, layer = list(s.values()), result.layer
    tol = change_tolerance(min(x.n for x in rows))
    safe = np.array([x.refusal_safe for x in rows])
    helpful = np.array([x.refusal_helpful for x in rows])
    out = []
    if (safe <= tol).all():
        out.append(f"θ_S refuses {safe.mean():.1f}% of held-out harmful requests (mean over "
                   f"{len(rows)} histories): there is almost no refusal to remove, so the "
                   "ablation and patching tests below cannot show anything carrying it.")
    ablated = change_phrase(safe, [x.ablated_at_layer for x in rows], tol)
    out.append(f"Ablating v_rev (its layer-{layer} row, projected out of the embeddings and "
               f"after every block) from θ_S's residual stream {ablated}.")
    sw = result.sweeps
    one_row = sw[(sw["mode"] == "ablate") & (sw["layer"] >= 0)]
    per_row = one_row.groupby("layer")["refusal_rate"].mean()
    if len(per_row) > 1:
        out.append("With one row of v_rev removed at a time, θ_S refuses " + ", ".join(
            f"{v:.1f}% (layer {k})" for k, v in per_row.items()) + f" (means over {len(rows)} "
            "histories).")
    ablated = change_phrase(safe, [x.ablated_all_layers for x in rows], tol)
    out.append(f"Ablating each block's own row of v_rev after that block {ablated}.")
    scales = sorted(rows[0].add_safe)
    for name, start, key in (("θ_S", safe, "add_safe"), ("θ_H", helpful, "add_helpful")):
        ends = dict.fromkeys(x for x in (scales[0], scales[-1]) if x != 0)
        parts = [f"at {x:+g} x it {change_phrase(start, [getattr(r, key)[x] for r in rows], tol)}"
                 for x in ends]
        if parts:
            out.append(f"Adding v_rev to {name} after block {layer} (in units of |mean h_H - "
                       f"mean h_S| there): " + "; ".join(parts) + ".")
    n_layer = int(result.lens["layer"].max()) + 1
    return out + patch_findings(s, tol) + lens_findings(s, n_layer, layer)


# ----------------------------------------------------------------------------- readout, controls

OUTCOME_WORDS = {
    "harmful": "makes θ_S harmful (harmful compliance up)",
    "refusal_lost_not_harmful": "removes refusal without harmful compliance (the answers neither "
                                "refuse nor carry the harmful content)",
    "no_effect": "changes neither refusal nor harmful compliance",
    "at_floor": "cannot show a loss of refusal: θ_S barely refuses, and harm does not rise",
    "mixed": "has no outcome shared by most histories",
}
COS_WORDS = {"same": "the refusal direction under another name",
             "overlapping": "overlapping with the refusal direction",
             "distinct": "distinct from the refusal direction", "mixed": "mixed across histories"}


def readout_findings(m: MediationMetrics) -> list[str]:
    """Whether v_rev, read through the vocabulary at theta_S, favours engaging openings."""
    out = []
    for name, score, pct in (("logit lens", "lens_score", "lens_percentile"),
                             ("steered first-token change", "change_score",
                              "change_percentile")):
        per = {h: getattr(x, pct) for h, x in m.readout.items()}
        above = sum(p > READOUT_PERCENTILE for p in per.values())
        scores = ", ".join(f"{h} {getattr(x, score):+.2f} (percentile {getattr(x, pct):.0f})"
                           for h, x in m.readout.items())
        verdict = ("favours task-engaging openings over the refusal's beyond the random null"
                   if above > len(per) / 2 else
                   "does not favour task-engaging openings beyond the random null")
        out.append(f"Through the {name}, v_rev {verdict} in {above} of {len(per)} histories "
                   f"(score, engaging minus refusal in logits: {scores}).")
    return out


def control_findings(m: MediationMetrics) -> list[str]:
    """cos(v_rev, r), the verdicts on r and on ablation, and v_rev's rank among the controls."""
    c = m.controls
    cos = ", ".join(f"{h} {x:+.2f}" for h, x in m.cos_v_rev_r.items())
    out = [f"At the analysed cell cos(v_rev, r) is {cos}: by the pre-registered cut-offs v_rev "
           f"is {COS_WORDS[c.distinct_from_r]}.",
           f"Ablating v_rev's analysed-layer row {OUTCOME_WORDS[c.v_rev_ablation]}; ablating r's "
           f"{OUTCOME_WORDS[c.refusal_ablation]} (the outcome shared by most histories)."]
    for cell, words in (("ablate_layer", "the analysed-layer row is ablated"),
                        ("ablate_every_layer", "each block's own row is ablated")):
        for measure, label in MEASURE_LABELS.items():
            ranks = {h: x.specificity[cell][measure] for h, x in c.per_history.items()}
            per = ", ".join(f"{h} rank {r.rank} of {r.n_controls + 1}"
                            + (f" ({r.n_ties} tied)" if r.n_ties else "")
                            for h, r in ranks.items())
            n_spec = sum(r.specific for r in ranks.values())
            out.append(f"When {words}, v_rev's change in {label} is larger than every "
                       f"control's in {n_spec} of {len(ranks)} histories ({per}).")
    others = sorted({d for x in c.per_history.values() for d, o in x.ablation.items()
                     if d not in ("v_rev", "refusal") and o == "harmful"})
    if others:
        out.append("Control directions whose ablation raises harmful compliance in some "
                   f"history: {', '.join(others)}.")
    return out
