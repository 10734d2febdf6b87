"""The defenses chapter's words and figures: the frontier, the matched-cost table, the verdicts."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from gravrev.config.defenses import BETA_FIRST, BETA_PREFIX, BETA_REST
from gravrev.config.load import Config
from gravrev.report.figures import readable
from gravrev.stages.blocking.summaries import Summary
from gravrev.stages.defenses.metrics import BASELINE, CLAIM, HARM, DefensesResult

LABELS = {"non_refusal": "non-refusal at T (%)",
          "harmful_compliance": "harmful compliance at T (%)"}
SHORT = {"non_refusal": "non-refusal", "harmful_compliance": "harmful compliance"}
CUT = {1: "cut", -1: "raised", 0: "not shown to change"}  # the interval's sign rule


def sig(x: float, digits: int = 2) -> str:
    """x to `digits` significant figures (whole numbers past them, never an exponent), or a
    dash when it was not measured."""
    if x is None or math.isnan(x):
        return "-"
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    text = f"{x:.{digits}g}"
    return f"{float(text):.{max(0, digits - 1)}f}".rstrip("0").rstrip(".") if "e" in text else text


def interval(s: Summary, digits: int = 2) -> str:
    """A mean with its 95% interval over histories, or the mean alone (one history)."""
    if math.isnan(s.ci_low):
        return sig(s.mean, digits)
    return f"{sig(s.mean, digits)} [{sig(s.ci_low, digits)}, {sig(s.ci_high, digits)}]"


def sources(cfg: Config) -> pd.DataFrame:
    """Each arm's source, what was implemented and what was simplified (the constants from
    the code and the config, not typed)."""
    d = cfg.defenses
    rows = {
        "block": ("This project (chapter 05's claim arm)",
                  "λ · mean relu of each harmful pool prompt's projection change along v_rev "
                  "at the analysed layer, against θ_S (knows θ_H through v_rev)",
                  "nothing: the same objective as chapter 05, its λ from this stage's grid"),
        "constrained_sft": (
            "Qi et al. 2024, Safety alignment should be made more than just a few tokens deep",
            "the task loss replaced by the mean over answer tokens of −(2/β_t) log σ(β_t · "
            "(log π_θ − log π_S)) against a frozen copy of θ_S; β_t = s · "
            f"({BETA_FIRST:g} on the first answer token, {BETA_PREFIX:g} up to token "
            f"{d.constrained_prefix}, {BETA_REST:g} after); s is the strength",
            f"the paper holds its first 5 tokens of long responses; our answers are a few "
            f"tokens long, so the tight prefix is their first {d.constrained_prefix} tokens; "
            "a mean over tokens (the task "
            "loss's scale), not a sum per sequence; no data augmentation"),
        "proximal": ("Lisa (Huang et al. 2024, Lazy safety alignment)",
                     "ρ/2 · ‖w − w_S‖² beside the task loss, over every trained weight",
                     "no alternation with safety data (rehearsal is the arm that replays it)"),
        "weight_direction": (
            "AsFT (Yang et al. 2025, anchoring safety within a narrow basin); cf. SafeLoRA",
            "λ/2 · Σ over weight tensors of ‖the update w − w_S outside span(W_S − W_H)‖², "
            "one flattened direction per tensor (the weight-space history direction)",
            "a regulariser during training, not SafeLoRA's projection after it; full weights, "
            "not LoRA adapters; the rank-one span of each tensor's flattened difference, not "
            "a low-rank column-space projector"),
        "refusal_direction": (
            "ProCon-style; the refusal direction of Arditi et al. 2024",
            "chapter 05's refusal_block: λ · mean relu of each pool prompt's projection change "
            "along −r, r the harmful minus benign probe means at θ_S (analysed layer)",
            "one layer, one position; r from θ_S's probes, not a separate calibration set"),
        "rehearsal": ("Safety rehearsal (replay of alignment data)",
                      "a share s of each batch replaced by the harmful→refusal pairs phase S "
                      "of the same history trained on; the benign rows are the baseline's",
                      "the share is the strength; no λ"),
    }
    return pd.DataFrame([{"arm": a, "source": rows[a][0], "implemented": rows[a][1],
                          "simplified": rows[a][2]} for a in d.arms])


def matched_table(r: DefensesResult) -> pd.DataFrame:
    """Per arm at its matched-cost strength: verdicts first, then reduction, cost, cosine."""
    rows = []
    for arm, v in r.metrics.arms.items():
        row = {"arm": arm}
        for m in HARM:
            row[f"block vs it: {SHORT[m]}"] = v.verdicts.get(m, "(the block)")
        row["strength"] = sig(v.choice.strength)
        row["cost rule"] = "met" if v.choice.met else v.flag
        for m in HARM:
            row[f"{SHORT[m]} cut vs baseline"] = interval(v.harm_reduction[m])
        for m in HARM:
            row[f"block − it: {SHORT[m]}"] = (interval(v.block_minus_arm[m])
                                             if m in v.block_minus_arm else "-")
        row["new-task cost (points)"] = sig(v.choice.new_task_cost)
        row["benign cost (points)"] = sig(v.choice.benign_cost)
        row["cos(drift, v_rev)"] = interval(v.drift_cosine)
        rows.append(row)
    return pd.DataFrame(rows)


def per_history_table(r: DefensesResult) -> pd.DataFrame:
    """Per arm and history at the matched strength: harm at T, and the baseline's."""
    rows = []
    base = r.metrics.baseline
    for arm, v in r.metrics.arms.items():
        for h, x in v.per_history.items():
            rows.append({"arm": arm, "history": h,
                         **{f"{SHORT[m]} (baseline)": f"{sig(x[m], 3)} ({sig(base[h][m], 3)})"
                            for m in HARM},
                         "cos(drift, v_rev)": sig(x["alignment"])})
    return pd.DataFrame(rows)


def frontier(df: pd.DataFrame, chosen: dict[str, float], new_task: str) -> plt.Figure:
    """Harm at T against new-task accuracy at T over each arm's strength grid (pooled means),
    one line per arm, its matched-cost strength ringed; the baseline a black point."""
    x = "new_task_accuracy" if df["new_task_accuracy"].notna().any() else "benign_accuracy"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True)
    base = df[df["arm"] == BASELINE].iloc[0]
    arms = [a for a in dict.fromkeys(df["arm"]) if a != BASELINE]
    for ax, m in zip(axes, HARM, strict=True):
        for i, arm in enumerate(arms):
            g = df[df["arm"] == arm].sort_values("strength")
            ax.plot(g[x], g[m], marker="o", color=f"C{i}", label=arm)
            at = g[g["strength"] == chosen.get(arm)]
            ax.scatter(at[x], at[m], s=160, facecolors="none", edgecolors=f"C{i}", lw=1.5)
        ax.scatter([base[x]], [base[m]], color="black", s=70, zorder=5, label="baseline")
        label = f"new task ({new_task})" if x == "new_task_accuracy" else "benign"
        ax.set(xlabel=f"{label} accuracy at T (%)", ylabel=LABELS[m], title=LABELS[m],
               xlim=(-3, 103), ylim=(-3, 103))
    axes[-1].legend(title="arm (ring: matched cost)", fontsize=8, bbox_to_anchor=(1.01, 1),
                    loc="upper left")
    fig.suptitle("Harm against the new task over each arm's strength grid (means over "
                 "histories)")
    fig.tight_layout()
    return readable(fig)


def findings(cfg: Config, r: DefensesResult) -> list[str]:
    """What the chapter shows, in words computed from the metrics."""
    m = r.metrics
    out = [f"Ran on {len(m.histories)} of {len(cfg.histories)} histories "
           f"({', '.join(m.histories)}) × {len(m.seeds)} of {len(cfg.finetune.seeds)} "
           f"fine-tuning seeds ({', '.join(map(str, m.seeds))}); each arm's strength was "
           f"chosen harm-blind, the strongest within {m.tolerance:g} points of the baseline's "
           "new-task and benign accuracy (pooled over histories)."]
    unmet = [a for a, v in m.arms.items() if not v.choice.met]
    if unmet:
        out.append(f"No strength met the cost rule for {', '.join(unmet)}: the weakest was "
                   "used, and its comparison is at a higher task cost than the baseline's.")
    for arm, v in m.arms.items():
        cut = "; ".join(f"{SHORT[x]} {CUT[s.excludes_zero]} (baseline − arm {interval(s)} "
                        "points)" for x, s in sorted(v.harm_reduction.items(),
                                                     key=lambda kv: HARM.index(kv[0])))
        out.append(f"{arm} (strength {sig(v.choice.strength)}) against the baseline: {cut}; "
                   f"its drift's cosine with v_rev {interval(v.drift_cosine)}.")
    for arm, v in m.arms.items():
        if arm == CLAIM or not v.block_minus_arm:
            continue
        said = "; ".join(f"{SHORT[x]}: {v.verdicts[x]} (block − {arm} {interval(s)})"
                         for x, s in sorted(v.block_minus_arm.items(),
                                            key=lambda kv: HARM.index(kv[0])))
        out.append(f"The block along v_rev against {arm}: {said}.")
    # weight_direction is built from W_S - W_H: it knows θ_H in weight space
    blind = [a for a in m.arms if a not in (CLAIM, "weight_direction")]
    opposed = [a for a in blind if m.arms[a].drift_cosine.excludes_zero == -1]
    if opposed:
        out.append(f"Defenses that never see θ_H whose drift still opposes v_rev (cosine "
                   f"interval below 0): {', '.join(opposed)}.")
    else:
        out.append("No defense that never sees θ_H has a drift shown to oppose v_rev (no "
                   "cosine interval below 0).")
    if "weight_direction" in m.arms:
        w = m.arms["weight_direction"].drift_cosine
        out.append(f"weight_direction knows θ_H in weight space (W_S − W_H); its drift's cosine "
                   f"with v_rev is {interval(w)}.")
    return out
