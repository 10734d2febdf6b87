"""The words of the claims page, composed at report time from claims.json's measured fields:
each claim's value with its unit, its deciding interval, its reason and its plain sentence."""

from __future__ import annotations

from gravrev.claims.preregistered import CORRELATION_P, ORDER_MEASURES
from gravrev.claims.schema import HOLDS, NOT_COMPARABLE
from gravrev.report.numbers import fixed, signed

ARM_WORDS = {"block": "the blocking objective (opposing positive motion along v_rev)",
             "penalty": "the hold-still penalty (no motion along v_rev either way)"}
BOUNDED_UNITS = ("cosine", "Spearman rho")  # quantities that live in [-1, 1]


def _ci(lo: float, hi: float, digits: int = 3) -> str:
    return f"{signed(lo, digits)} to {signed(hi, digits)}"


def fmt_measured(m: dict | None) -> str:
    """This run's value in a table cell."""
    if not m:
        return "nothing measured"
    if "n_ordered" in m:
        return f"{m['n_ordered']} of {m['n_judged']} measures in order"
    if "n_above" in m:
        return f"{m['n_above']} of {m['n']} histories above the null"
    if "k" in m:
        return f"{m['k']} of {m['n']}"
    if m.get("mean") is None:
        return "nothing measured"
    sd = "" if m.get("sd") is None else f" ± {m['sd']:.3g}"
    groups = f" runs, {m['n_groups']} histories" if m.get("n_groups", 0) > 1 else ""
    return f"{m['mean']:.3g}{sd} (n = {m['n']}{groups})"


def interval_text(m: dict, digits: int = 3, of: str = "means") -> str:
    """The 95% interval that decided a verdict, and what it is taken over (`of`: what each
    history gives, e.g. its runs' means)."""
    basis = (f"over the {m['n_groups']} history {of}" if m.get("n_groups", 0) > 1
             else "over runs")
    if m.get("ci_low") is None:
        return f"no 95% CI: n = {m['n']}"
    return f"95% CI {_ci(m['ci_low'], m['ci_high'], digits)}, {basis}"


COUNT_VALUES = {  # a claim measured as a count: its value, whatever the mean
    "block_baseline_push": lambda m: f"{m['n_ordered']} of {m['n_judged']} measures",
    "vocabulary_readout": lambda m: f"{m['n_above']} of {m['n']} histories",
    "null_exceedance": lambda m: f"{m['k']} of {m['n']} run-step pairs",
    "matched_null_every_trajectory": lambda m: f"{m['k']} of {m['n']} trajectories",
}
MEAN_VALUES = {  # a claim measured as a mean, with its unit (any other: a cosine)
    "harmfulness_unblocked": lambda x: f"{fixed(x, 1)}% non-refusal",
    "harmfulness_blocked": lambda x: f"{fixed(x, 1)}% non-refusal",
    "task_cost": lambda x: f"{fixed(x, 1)} points of benign accuracy",
    "rehearsal_opposes": lambda x: f"{fixed(x, 0)}% less cumulative reversion",
    "alignment_harm_correlation": lambda x: f"rho {signed(x, 3)}",
    "alignment_rises": lambda x: f"{signed(x, 3)} in cosine",
}


def value_text(entry: dict) -> str:
    """The claim's own measured value, with its unit, as every sentence about it states it."""
    m, cid = entry["measured"] or {}, entry["id"]
    if cid in COUNT_VALUES:
        return COUNT_VALUES[cid](m)
    if m.get("mean") is None:
        return "nothing measured"
    return MEAN_VALUES.get(cid, lambda x: f"cosine {signed(x, 3)}")(m["mean"])


def stability(verdict: str, per_history: dict[str, dict]) -> str:
    """Whether each history alone gives the pooled verdict."""
    verdicts = {e["verdict"] for e in per_history.values()}
    if verdicts == {verdict}:
        return f"the same verdict in all {len(per_history)} histories"
    if verdicts == {NOT_COMPARABLE}:
        return "no history alone can decide it (one value or too few runs each)"
    if len(verdicts) == 1 and verdict == HOLDS:
        return (f"it holds over the {len(per_history)} histories, though no history alone gives "
                f"it on its own few runs ({verdicts.pop()})")
    if len(verdicts) == 1:
        return (f"each of the {len(per_history)} histories alone: {verdicts.pop()}, but their "
                "means spread too widely for the interval over histories")
    each = ", ".join(f"{h}: {e['verdict']}" for h, e in per_history.items())
    return f"the verdict differs between histories ({each})"


def _gap(entry: dict) -> str:
    """The size verdict as a clause: the value against the paper's figure."""
    m, paper, size = entry["measured"], entry["paper"], entry["size_verdict"]
    side = "above" if m["mean"] > paper["mean"] else "below"
    spread = f" ± {paper['sd']}" if "sd" in paper else ""
    if size != HOLDS:
        return f"the value lies {side} the paper's {paper['mean']}{spread}"
    if "sd" in paper and abs(m["mean"] - paper["mean"]) <= 2 * paper["sd"]:
        return f"the value matches the paper's {paper['mean']}{spread}"
    if paper.get("unit") in BOUNDED_UNITS and (m["ci_low"] < -1 or m["ci_high"] > 1):
        return (f"the interval holds the paper's {paper['mean']} only because it reaches "
                f"beyond a {paper['unit']}'s range of -1 to 1, so the size is barely "
                "constrained")
    return f"the interval holds the paper's {paper['mean']}"


def _ceiling(*percents: float) -> str:
    """Says so when every percentage compared sits at the same bound, where no change shows."""
    for bound in (0.0, 100.0):
        if all(x is not None and abs(x - bound) < 1e-9 for x in percents):
            where = "floor" if bound == 0 else "ceiling"
            return f"; all at {fixed(bound, 0)}%, a {where} where no change can show"
    return ""


def _shares_text(m: dict) -> str:
    """Pooled, the spread of the histories' shares (descriptive); empty within one history."""
    s = m.get("history_shares")
    if not s:
        return ""
    lo, hi = fixed(100 * s["ci_low"], 0), fixed(100 * s["ci_high"], 0)
    return (f"; per history the share is {fixed(100 * s['mean'], 0)}% on average (95% CI "
            f"{lo}% to {hi}% over the {s['n']} histories)")


def _decided(verdict: str) -> str:
    return "so the direction holds" if verdict == HOLDS else "so the direction does not hold"


def _arm(report: dict, arm: str, measure: str) -> float | None:
    """An arm's mean of `measure` at T, as claims.json records it (None: not measured)."""
    return report.get("arms", {}).get(arm, {}).get(measure)


def _pct(x: float | None) -> str:
    return "unmeasured" if x is None else f"{fixed(x, 1)}%"


def _cosine(entry: dict, when: str, chapter: str) -> str:
    m, v = entry["measured"], value_text(entry)
    return (f"The drift's {v} with v_rev {when} ({interval_text(m)}); the rule asks that "
            f"interval to lie above 0, {_decided(entry['verdict'])}, and {_gap(entry)}; "
            f"{{stable}}; see chapter {chapter}.")


def _reason(entry: dict, report: dict, arm: str) -> str:
    cid, m, verdict = entry["id"], entry["measured"], entry["verdict"]
    v = value_text(entry)
    if cid == "alignment_step1":
        return _cosine(entry, "after the first benign update", "03")
    if cid == "alignment_step20":
        return _cosine(entry, "at step 20 of the early runs", "03")
    if cid == "final_alignment_unblocked":
        return _cosine(entry, "at T of ordinary benign fine-tuning", "03")
    if cid == "alignment_rises":
        return (f"From step 1 to step 20 the drift's alignment with v_rev changes by {v} "
                f"({interval_text(m)}; {m['n']} early runs); the rule asks that interval to lie "
                f"above 0, {_decided(verdict)}; {{stable}}; see chapter 03.")
    if cid == "null_exceedance":
        aniso = report["anisotropic_exceedance"]
        p = entry["paper"]
        return (f"{v} lie above the isotropic null's p99{_shares_text(m)}; the rule asks "
                f"for every pair, as the paper's {p['count']} of {p['of']}; {aniso['k']} of "
                f"{aniso['n']} beat the stronger covariance-matched null; {{stable}}; see "
                "chapter 04.")
    if cid == "final_alignment_blocked":
        d = m["difference"]
        return (f"With {ARM_WORDS.get(arm, arm)} the drift's {v} with v_rev at T "
                f"({interval_text(m)}), against the baseline's "
                f"{signed(m['unblocked']['mean'], 3)} "
                f"(blocked - baseline {signed(d['mean'], 3)}, {interval_text(d)}); "
                "the rule asks both "
                f"intervals to lie below 0, {_decided(verdict)}, and {_gap(entry)}; "
                "{stable}; see chapter 05.")
    if cid == "harmfulness_unblocked":
        d = m["difference"]
        hc = _arm(report, "unblocked", "harmful_compliance")
        return (f"Benign fine-tuning took non-refusal on held-out harmful requests from "
                f"{fixed(m['safe'], 1)}% at θ_S to {v} at T "
                f"(difference {signed(d['mean'], 1)} points, "
                f"{interval_text(d, 1)}{_ceiling(m['safe'], m['mean'])}), with harmful "
                f"compliance {_pct(hc)} at T; the rule asks "
                f"that interval to lie above 0, {_decided(verdict)}; the paper counts harmful "
                f"requests answered, and {_gap(entry)}%; {{stable}}; see chapter 02.")
    if cid == "harmfulness_blocked":
        d = m["difference"]
        return (f"With {ARM_WORDS.get(arm, arm)} the model ends at {v} on held-out harmful "
                f"requests against the baseline's {fixed(m['unblocked']['mean'], 1)}% (blocked - "
                f"baseline {signed(d['mean'], 1)} points, {interval_text(d, 1)}"
                f"{_ceiling(m['mean'], m['unblocked']['mean'])}); harmful compliance "
                f"{_pct(_arm(report, arm, 'harmful_compliance'))} against "
                f"{_pct(_arm(report, 'unblocked', 'harmful_compliance'))}; the rule asks that "
                f"interval to lie below 0, {_decided(verdict)}, and {_gap(entry)}%; {{stable}}; "
                "see chapter 05.")
    if cid == "task_cost":
        new = _arm(report, arm, "new_task_accuracy")
        return (f"With {ARM_WORDS.get(arm, arm)} benign-task accuracy falls by {v} against the "
                f"baseline ({interval_text(m, 1)}); the rule compares that mean with the "
                f"tolerance of {m['tolerance']:g} points, so "
                f"{'the cost is little' if verdict == HOLDS else 'the cost is not little'}; "
                + (f"the new task reaches {_pct(new)}; " if new is not None else
                   "this setting has no new task, so benign held-out accuracy is the whole "
                   "cost; ")
                + "{stable}; see chapter 05.")
    if cid == "matched_null_every_trajectory":
        return (f"{v} beat the matched null at every logged step ({m['steps_above']} of "
                f"{m['steps']} trajectory-steps above it{_shares_text(m)}); the rule asks "
                "for every trajectory; {stable}; chapter 04 defines the matched null.")
    if cid == "vocabulary_readout":
        return (f"In {v} both readout scores of v_rev at θ_S lie above the random-direction "
                f"null's 95th percentile (lowest percentile over histories: "
                f"{fixed(m['lens_percentile'], 0)} through the vocabulary, "
                f"{fixed(m['change_percentile'], 0)} "
                f"as the logit change, against {m['n_null']} random directions); the rule asks "
                "for every history; {stable}; see chapter 06.")
    if cid == "alignment_harm_correlation" and m["n"] == 1:
        hc = m.get("harmful_compliance")
        beside = (f"harmful compliance's rho {signed(hc['rho'], 3)} (p = {hc['p']:.2g})" if hc
                  else "harmful compliance's undefined")
        flag = ("; flagged: non-refusal sits at 0 or 100 on most steps, so ties at the bound "
                "carry that rho" if m["n_at_bound"] else "")
        return (f"Spearman's {v} between alignment with v_rev and non-refusal over "
                f"{m['n_steps']} logged steps of one history (step-wise p = {m['p']:.2g}, "
                f"descriptive: the steps are not independent), {beside}; the rule asks rho > 0 "
                f"with p below {CORRELATION_P:g}, {_decided(verdict)}{flag}; {{stable}}; "
                "see chapter 03.")
    if cid == "alignment_harm_correlation":
        hc = m.get("harmful_compliance")
        beside = (f"harmful compliance's {signed(hc['mean'], 3)} (95% CI "
                  f"{_ci(hc['ci_low'], hc['ci_high'])})" if hc
                  else "harmful compliance's undefined or from one history")
        flag = (f"; flagged: non-refusal sits at 0 or 100 on most steps in {m['n_at_bound']} of "
                f"{m['n']} histories, so ties at the bound carry that rho"
                if m["n_at_bound"] else "")
        return (f"Spearman's {v} between alignment with v_rev and non-refusal over the logged "
                f"steps, the mean of {m['n']} history rhos ({interval_text(m, 3, 'rhos')}), "
                f"{beside}; the rule asks that interval to lie above 0, {_decided(verdict)}"
                f"{flag}; {_gap(entry)}; {{stable}}; see chapter 03.")
    if cid == "block_baseline_push":
        parts = []
        # claims.json stores keys sorted: the measures are named in the rule's order
        order = sorted(m["measures"], key=lambda x: (x not in ORDER_MEASURES,
                                                      ORDER_MEASURES.index(x)
                                                      if x in ORDER_MEASURES else 0, x))
        for name in order:
            x = m["measures"][name]
            lo, hi = x["baseline_minus_block"], x["push_minus_baseline"]
            if x["at_bound"]:
                parts.append(f"{name} at a floor or ceiling, not judged")
            elif lo.get("ci_low") is None or hi.get("ci_low") is None:
                parts.append(f"{name}: no interval")
            else:
                parts.append(f"{name}: baseline - block {lo['mean']:+.3g} (95% CI "
                             f"{_ci(lo['ci_low'], lo['ci_high'], 2)}), push - baseline "
                             f"{hi['mean']:+.3g} ({_ci(hi['ci_low'], hi['ci_high'], 2)})")
        unit = "history means" if m["measures"] and next(iter(m["measures"].values()))[
            "baseline_minus_block"].get("n_groups") else "runs"
        return (f"{v} are ordered block < baseline < push with both paired intervals above 0, "
                f"over {unit} ({'; '.join(parts)}); the rule asks it of every judged measure, "
                f"{_decided(verdict)}; {{stable}}; see chapter 05.")
    if cid == "rehearsal_opposes":
        d = m["difference"]
        return (f"Safety rehearsal ended with {v} than the baseline (cumulative reversion "
                f"{m['rehearsal']:.3g} against {m['baseline']:.3g}, in projection x steps; the "
                f"percent cut's {interval_text(m, 1, 'cuts')}); the rule asks the interval of "
                f"rehearsal - baseline ({_ci(d['ci_low'], d['ci_high'], 3)}) to lie below 0, "
                f"{_decided(verdict)}; against the paper's about {entry['paper']['mean']}% "
                f"cut, {_gap(entry)}; {{stable}}; see chapter 05.")
    raise ValueError(f"no reason is written for claim {cid!r}")


def why(entry: dict, per_history: dict[str, dict], report: dict, arm: str = "block") -> str:
    """One sentence, from claims.json's measured fields (`report`), on why the claim holds or
    not."""
    if entry["verdict"] == NOT_COMPARABLE:
        reason = entry["rule"].split("Not comparable: ")[-1]
        return f"Not comparable for {entry['quantity']}: {reason}"
    stable = stability(entry["verdict"], per_history)
    return _reason(entry, report, arm).replace("{stable}", stable)


def paper_text(p: dict) -> str:
    if "mean" in p:
        unit = "%" if str(p.get("unit", "")).startswith("percent") else ""
        about = "about " if p.get("approximate") else ""
        spread = f" ± {p['sd']}{unit}" if "sd" in p else ""
        return f"{about}{p['mean']}{unit}{spread}"
    if "count" in p:
        return f"{p['count']} of {p['of']}"
    return p.get("statement", "qualitative")


def unresolved_why(entry: dict) -> str:
    """Why a claim is unresolved: not comparable, at a floor or ceiling, or split by history."""
    if entry["verdict"] == NOT_COMPARABLE:
        return "not comparable: " + entry["rule"].split("Not comparable: ")[-1].rstrip(".")
    if (entry["measured"] or {}).get("at_bound"):
        return (f"{entry['verdict']} only at a floor or ceiling, {value_text(entry)}, where no "
                "change can show")
    each = ", ".join(f"{h} {e['verdict']}" for h, e in entry["per_history"].items())
    return f"the histories disagree: {each}"


def sentence(entry: dict, plain: str) -> str:
    """The claim in one plain sentence: what the paper says, this run's value with its unit."""
    p = paper_text(entry["paper"])
    if entry["verdict"] == NOT_COMPARABLE:
        return f"The paper: {plain}, reporting {p}; this run: {unresolved_why(entry)}."
    return (f"The paper: {plain}, reporting {p}; this run: {value_text(entry)}, direction "
            f"{entry['verdict']}, size {entry['size_verdict']}.")
