"""The words of the claims page: a measurement, its interval, and why each verdict is what it is."""

from __future__ import annotations

from gravrev.claims.schema import HOLDS, NOT_COMPARABLE
from gravrev.claims.thresholds import kept_refusal


def fmt_measured(m: dict | None) -> str:
    if not m:
        return "nothing measured"
    if "k" in m:
        return f"{m['k']} of {m['n']}"
    if m.get("mean") is None:
        return "nothing measured"
    sd = "" if m.get("sd") is None else f" ± {m['sd']:.3g}"
    groups = f" runs, {m['n_groups']} histories" if m.get("n_groups", 0) > 1 else ""
    return f"{m['mean']:.3g}{sd} (n = {m['n']}{groups})"


def interval_text(m: dict) -> str:
    """The 95% interval that decided a verdict, and what it is taken over."""
    over_histories = m.get("n_groups", 0) > 1 and m.get("df") == m["n_groups"] - 1
    basis = (f"over the {m['n_groups']} history means" if over_histories
             else "over runs" + ("; the histories agree within their runs' noise"
                                 if m.get("n_groups", 0) > 1 else ""))
    return f"95% CI {m['ci_low']:+.3f} to {m['ci_high']:+.3f}, {basis}"


def stability(verdict: str, per_history: dict[str, dict]) -> str:
    """Whether each history alone gives the pooled verdict."""
    verdicts = {e["verdict"] for e in per_history.values()}
    if verdicts == {verdict}:
        return f"the same verdict in all {len(per_history)} histories"
    if len(verdicts) == 1:
        return (f"each of the {len(per_history)} histories alone: {verdicts.pop()}, but their "
                "means spread too widely for the interval over histories")
    each = ", ".join(f"{h}: {e['verdict']}" for h, e in per_history.items())
    return f"the verdict differs between histories ({each})"


def why(entry: dict, per_history: dict[str, dict], metrics: dict[str, dict]) -> str:
    """One sentence, generated from the measurements, on why the claim holds or not."""
    cid, m, verdict = entry["id"], entry["measured"] or {}, entry["verdict"]
    stable = stability(verdict, per_history)
    if verdict == NOT_COMPARABLE:
        return f"Not comparable: {entry['rule'].split('Not comparable: ')[-1]}"
    block = metrics["blocking"]
    if cid in ("harmfulness_blocked", "final_alignment_blocked", "task_cost"):
        arm = block["claim_arm"]
        a = block["arms"]
        nr_b, nr_u = a[arm]["non_refusal"]["mean"], a["unblocked"]["non_refusal"]["mean"]
        al_b, al_u = a[arm]["alignment"]["mean"], a["unblocked"]["alignment"]["mean"]
        acc_b = a[arm]["new_task_accuracy"]["mean"]
        held = "held" if al_b < al_u else "did not lower"
        kept = ("kept refusal" if kept_refusal(nr_b, nr_u) else "did not keep refusal")
        return (f"Blocking (lambda {block['lambda']:g}, check {block['manipulation_check']}) "
                f"{held} alignment at T ({al_b:.2f} vs {al_u:.2f} unblocked) and {kept} "
                f"(non-refusal {nr_b:.0f}% vs {nr_u:.0f}%), new task {acc_b:.0f}%; {stable}; "
                "see chapter 05.")
    if cid == "harmfulness_unblocked":
        return (f"Benign fine-tuning took non-refusal from {m['safe']:.0f}% at theta_S to "
                f"{m['mean']:.0f}% at T (harmless data only); {stable}; see chapter 02.")
    if cid == "null_exceedance":
        aniso = metrics["nulls"]["exceedance"]["all"]["anisotropic"]
        return (f"{m['k']} of {m['n']} run-step pairs exceed the isotropic p99, "
                f"{aniso['k']} of {aniso['n']} the stronger covariance-matched null; {stable}; "
                "see chapter 04.")
    if cid == "alignment_rises":
        return (f"From step 1 to step 20 alignment changes by {m['mean']:+.3f} "
                f"({interval_text(m)}; {m['n']} early runs); {stable}; see chapter 03.")
    size = entry["size_verdict"]
    paper = entry["paper"]
    side = "above" if m["mean"] > paper["mean"] else "below"
    if size != HOLDS:
        gap = f"is {side} the paper's {paper['mean']} ± {paper['sd']}"
    elif abs(m["mean"] - paper["mean"]) <= 2 * paper["sd"]:
        gap = "matches the paper's size"
    else:  # the size rule holds only because the interval is wide enough to reach it
        gap = f"is {side} the paper's {paper['mean']}, but the interval is too wide to tell"
    sign = "agrees" if verdict == HOLDS else "is not established"
    return (f"Measured {fmt_measured(m)}, {interval_text(m)}: the sign {sign} and the value {gap}; "
            f"{stable}; see chapter 03.")


def paper_text(p: dict) -> str:
    if "mean" in p:
        unit = "%" if p.get("unit") == "percent" else ""
        return f"{p['mean']}{unit} ± {p['sd']}{unit}"
    if "count" in p:
        return f"{p['count']} of {p['of']}"
    return p.get("statement", "qualitative")
