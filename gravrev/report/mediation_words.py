"""Plain-words conclusions of the mediation and route analyses, robust over histories.

Every sentence is conditional on the measurements (HistorySummary per history): it says what
the numbers say, whichever way they go, with the mean and the per-history values.
"""

from __future__ import annotations

import numpy as np

from gravrev.stats.mediation import HistorySummary

# A change in refusal smaller than this many points, or than two prompts, is read as none:
# differences of a prompt or two are within the noise of a held-out set of this size.
MIN_CHANGE_PTS = 5.0
CHECKPOINTS = ("theta_S", "theta_H", "theta_T")


def tolerance(n: int) -> float:
    """The smallest change in refusal (percentage points) that the findings call a change."""
    return max(MIN_CHANGE_PTS, 200.0 / n)


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
    head = f"Unblocked fine-tuning (theta_S -> theta_T) {change_phrase(safe, tuned, tol)}"
    if direction(safe, tuned, tol) >= 0:
        return [head + ", so there is no loss of refusal for patching to locate."]
    up_groups, up, up_text = best_groups(s, "S->T", tol)
    down_groups, down, down_text = best_groups(s, "T->S", tol)
    (g_up, k_up), (g_down, k_down) = modal_group(up_groups), modal_group(down_groups)
    up_mean, down_mean = np.nanmean(up), np.nanmean(down)
    lines = [head + ".",
             "The best single component group to undo (theta_T given that group of theta_S "
             f"back) restores {up_mean:.0%} of the lost refusal on average (over histories with "
             f"a loss; per history: {up_text}).",
             "The best single group to change alone (theta_S given that group of theta_T) "
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
    blocks = {h: x.decision_block.get("theta_S") for h, x in s.items()}
    per = ", ".join(f"{h}: {'never' if b is None else f'block {b}'}" for h, b in blocks.items())
    early = sum(b is not None and b < n_layer / 2 for b in blocks.values())
    late = sum(b is not None and b >= n_layer / 2 for b in blocks.values())
    if early + late == 0:
        head = ("The logit lens never shows theta_S favouring the refusal's first token over the "
                "compliance's at its last block, so it places no refusal decision")
    elif early > n / 2:
        head = ("The logit lens shows theta_S's refusal decided early: the margin turns positive, "
                f"and stays so, within the first half of the {n_layer} blocks")
    elif late > n / 2:
        head = ("The logit lens shows theta_S's refusal decided late: the margin turns positive "
                f"for good only in the second half of the {n_layer} blocks")
    else:
        head = "The logit lens places theta_S's refusal decision differently across histories"
    final = {c: np.mean([x.final_margin[c] for x in s.values()]) for c in CHECKPOINTS}
    return [f"{head} (first block of a lasting positive margin: {per}; v_rev is analysed after "
            f"block {layer}).",
            "At the last block the margin log p(refuse) - log p(comply) is "
            f"{final['theta_S']:.2f} nats in theta_S, {final['theta_T']:.2f} in theta_T and "
            f"{final['theta_H']:.2f} in theta_H (means over {n} histories)."]
