"""The claims page's headlines: each version's claims counted by standing, and what the run
measured around them."""

from __future__ import annotations

from gravrev.claims.preregistered import BASELINE_ARM, BLOCK_ARM
from gravrev.claims.schema import HOLDS, NOT_COMPARABLE
from gravrev.claims.thresholds import kept_refusal
from gravrev.report.claim_words import unresolved_why, value_text

# How a claim stands in the headline: what holds, what does not, and what is unresolved
# (not comparable, failing pooled while some history alone gives it, or failing where every
# compared percentage sits at one bound).
STANDINGS = ("holds", "does not hold", "unresolved")


def standing(entry: dict) -> str:
    """holds, does not hold, or unresolved (not comparable, or the histories disagree)."""
    if entry["verdict"] == HOLDS:
        return "holds"
    per = {e["verdict"] for e in entry.get("per_history", {}).values()}
    at_bound = bool((entry["measured"] or {}).get("at_bound"))
    if entry["verdict"] == NOT_COMPARABLE or HOLDS in per or at_bound:
        return "unresolved"
    return "does not hold"


def headline(entries: list[dict], plain: dict[str, str], title: str) -> str:
    """One version's claims counted by standing: what holds, what does not, what is unresolved."""
    groups: dict[str, list[str]] = {s: [] for s in STANDINGS}
    for e in entries:
        s = standing(e)
        if s == "unresolved":
            groups[s].append(f"{plain[e['id']]} ({unresolved_why(e)})")
        elif e["verdict"] == NOT_COMPARABLE:
            groups[s].append(plain[e["id"]])
        else:
            groups[s].append(f"{plain[e['id']]} ({value_text(e)})")
    words = {"holds": ("holds", "hold"), "does not hold": ("does not hold", "do not hold"),
             "unresolved": ("is unresolved", "are unresolved")}
    out = [f"Of the {len(entries)} claims of {title},"]
    for s in STANDINGS:
        items = groups[s]
        verb = words[s][0] if len(items) == 1 else words[s][1]
        tail = f": {'; '.join(items)}" if items else ""
        out.append(f"{len(items)} {verb}{tail}" + ("." if s == STANDINGS[-1] else ";"))
    return " ".join(out)


def context(report: dict) -> str:
    """What the run measured around the claims, in plain words: no mechanism is asserted."""
    c, arms = report["context"], report.get("arms", {})
    u = arms.get(BASELINE_ARM)
    harm = (f", and harmful compliance (a harmful answer, not only no refusal) ends at "
            f"{u['harmful_compliance']:.1f}%" if u is not None else "")
    where = (f"In this organism ({c['n_histories']} independent histories"
             if report.get("preset") != "hf" else
             "In the given checkpoints (one history: the hf preset's θ_H and θ_S")
    out = [f"{where}, {c['n_runs']} fine-tuning runs), benign fine-tuning on harmless data "
           f"took non-refusal on held-out harmful requests from "
           f"{c['safe_non_refusal']:.1f}% at θ_S to {c['end_non_refusal']:.1f}% at T{harm}."]
    if u is not None:
        others = {a: x for a, x in arms.items() if a not in (BASELINE_ARM, BLOCK_ARM)
                  and not x["task_cost_not_block"]}
        measured = {a: x for a, x in others.items() if x["harmful_compliance"] is not None}
        best = min(measured, key=lambda a: measured[a]["harmful_compliance"], default=None)
        if best is not None and kept_refusal(others[best]["non_refusal"], u["non_refusal"]):
            x = others[best]
            out.append(f"Beyond the paper's claims, of the other fine-tuning arms {best} left "
                       f"the least harmful compliance: {x['harmful_compliance']:.1f}% against "
                       f"{u['harmful_compliance']:.1f}%, non-refusal {x['non_refusal']:.1f}% "
                       f"against {u['non_refusal']:.1f}%"
                       + ("" if x["new_task_accuracy"] is None else  # no new task (hf)
                          f", new task {x['new_task_accuracy']:.1f}% against "
                          f"{u['new_task_accuracy']:.1f}%") + ".")
    out.append(regime_words(c["regime"], c["n_histories"]))
    if c.get("sweep_outcome"):
        out.append(f"The history-depth sweep: {c['sweep_outcome']} (chapter 08).")
    return " ".join(out)


def regime_words(r: dict, n_histories: int) -> str:
    """The regime in force against its pre-registered rule, for the headline (chapter 02)."""
    misses = []
    if r["shocked"]:
        misses.append(f"benign accuracy fell past the limit in {len(r['shocked'])} of "
                      f"{n_histories} {'history' if n_histories == 1 else 'histories'} "
                      f"({', '.join(r['shocked'])})")
    if r["unlearned"]:
        misses.append(f"the new task not learned in {', '.join(r['unlearned'])}")
    if not r["room"]:
        misses.append(f"pooled non-refusal at T at {r['nonrefusal_at_T']:.0f}%, outside the band")
    if not misses and r["holds"] is None:
        return ("The fine-tuning regime meets the parts of its pre-registered rule that this "
                "setting can check (it has no new task; chapter 02).")
    if not misses:
        return ("The fine-tuning regime meets its pre-registered rule: no shock and the new task "
                "learned in every run, room at T pooled (chapter 02).")
    grid = (" None of the screen's eligible regimes, run on every history, met it either."
            if r.get("grid_chose_nothing") else "")
    return (f"The fine-tuning regime misses its pre-registered rule ({r['rule']}): "
            + "; ".join(misses) + f".{grid} Every verdict here is read with that caveat "
            "(chapter 02).")
