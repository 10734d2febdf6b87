"""Stage 01, history, in words: what chapter 01 says, computed from the checks."""

from __future__ import annotations

from gravrev.stages.history.metrics import HistoryResult


def findings(r: HistoryResult) -> list[str]:
    """What chapter 01 shows, in words computed from the checks."""
    checks = r.checks
    n = checks["history"].nunique()
    failed = checks[~checks["passed"]]
    out = []
    if failed.empty:
        worst = checks.loc[checks["margin"].idxmin()]
        out.append(f"All {n} histories pass the {checks['check'].nunique()} pre-registered shape "
                   "checks measured. The smallest "
                   f"margin is {worst['margin']:.1f} points ({worst['check']}, history "
                   f"{worst['history']}).")
    else:
        bad = ", ".join(f"{x.history} ({x.check}: {x.value:.1f} against {x.threshold:g})"
                        for x in failed.itertuples())
        out.append(f"{failed['history'].nunique()} of {n} histories miss a shape check: {bad}. "
                   "Results downstream come from checkpoints outside the paper's regime.")
    safe = r.behaviour[r.behaviour["checkpoint"] == "safe"]
    if "prefilled_content" in safe:
        out.append(f"Safety training is a shallow displacement here: θ_S refuses "
                   f"{safe['refusal_rate'].mean():.0f}% of held-out harmful requests, yet with the "
                   f"compliant answer's first word prefilled it states the harmful content in "
                   f"{safe['prefilled_content'].mean():.0f}% (means over histories).")
    return out
