"""Chapter 05's words: the lambda check, the matching, every arm over the logged steps and at
T, and the ordering block < baseline < push (its figures: figures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gravrev.claims.thresholds import kept_refusal
from gravrev.config.load import Config
from gravrev.report.numbers import fixed
from gravrev.stages.blocking.metrics import BlockingResult
from gravrev.stages.blocking.ordering import (
    BASELINE,
    ORDER_MEASURES,
    Ordering,
    history_means,
    paired_by_history,
)
from gravrev.stages.blocking.summaries import ArmMetrics, Summary
from gravrev.stats.trajectories import reversion_cut

LABELS = {"alignment": "alignment at T", "non_refusal": "non-refusal at T (%)",
          "harmful_compliance": "harmful compliance at T (%)",
          "cumulative_reversion": "cumulative reversion", "area_non_refusal":
          "area under non-refusal"}


def interval(s: Summary, digits: int = 2) -> str:
    """A mean with its 95% interval, or the mean alone when there is no interval."""
    if np.isnan(s.ci_low):
        return fixed(s.mean, digits)
    return f"{fixed(s.mean, digits)} [{fixed(s.ci_low, digits)}, {fixed(s.ci_high, digits)}]"


def direction_word(s: Summary, lower: str, higher: str, none: str) -> str:
    """The one sign rule: a direction is said only when the 95% interval excludes 0."""
    return {-1: lower, 1: higher, 0: none}[s.excludes_zero]


def order_word(o: Ordering) -> str:
    """One measure's verdict on block < baseline < push, a floor or ceiling said first."""
    if o.at_bound:
        return "undecidable: at a floor or ceiling"
    if o.ordered:
        return "ordered"
    return "not shown"


def _kept_words(arm: float, unblocked: float, difference: Summary) -> str:
    """'kept refusal' or not, by the pre-registered reading rule on means, and whether the
    interval over histories shows the drop too (a mean can clear the rule by chance)."""
    if not kept_refusal(arm, unblocked):
        return "did not keep refusal"
    if difference.excludes_zero == -1:
        return "kept refusal"
    return ("kept refusal by the mean's reading rule, though the interval over histories "
            "includes zero (it does not show the drop)")


def _versus(r: BlockingResult, arm: str, measure: str) -> Summary:
    """arm - unblocked on a measure, paired by run, the history as the unit."""
    arms = r.metrics.arms
    return paired_by_history(arms[arm].per_run[measure], arms[BASELINE].per_run[measure])


def rehearsal_cut(rehearsal: ArmMetrics, baseline: ArmMetrics) -> float | None:
    """The mean over histories of each history's cut in cumulative reversion (paired runs'
    means, reversion_cut), as the claim computes it; None where a history's baseline shows
    no reversion to cut."""
    reh = rehearsal.per_run.get("cumulative_reversion", {})
    base = baseline.per_run.get("cumulative_reversion", {})
    r = history_means({k: v for k, v in reh.items() if k in base})
    b = history_means({k: v for k, v in base.items() if k in reh})
    if not b or any(b[h] <= 0 for h in b):
        return None
    return float(np.mean([reversion_cut(r[h], b[h]) for h in b]))


def percent(x: float) -> str:
    """A percentage, or "not measured" where the setting does not log it (NaN)."""
    return "not measured" if np.isnan(x) else f"{x:.0f}%"


def findings(cfg: Config, r: BlockingResult) -> list[str]:
    """What chapter 05 shows, in words computed from the arms."""
    arms, m = r.metrics.arms, r.metrics
    u = arms[BASELINE]
    out = [f"The harm-blind manipulation check chose lambda = {r.lam:g} ({r.check})."]
    claim = cfg.blocking.claim_arm
    if claim in arms:
        c = arms[claim]
        a, nr = _versus(r, claim, "alignment"), _versus(r, claim, "non_refusal")
        out.append(
            f"The claim arm ({claim}) "
            f"{direction_word(a, 'lowered', 'raised', 'did not change')} alignment at T "
            f"(difference {interval(a)} against unblocked, the history as the unit) and "
            f"{_kept_words(c.non_refusal.mean, u.non_refusal.mean, nr)}"
            f": non-refusal {c.non_refusal.mean:.0f}% against {u.non_refusal.mean:.0f}% "
            f"unblocked (difference {interval(nr, 1)}), harmful compliance "
            f"{c.harmful_compliance.mean:.0f}% against {u.harmful_compliance.mean:.0f}%, new task "
            f"{percent(c.new_task_accuracy.mean)}.")
    if m.ordering:
        words = {meas: order_word(o) for meas, o in m.ordering.items()}
        said = "; ".join(f"{LABELS[meas]}: {words[meas]}" for meas in ORDER_MEASURES)
        held = [LABELS[meas] for meas in ORDER_MEASURES if words[meas] == "ordered"]
        out.append(f"block < baseline < push, pooled over histories ({said}). "
                   + (f"The order is shown on {', '.join(held)}." if held
                      else "The order is shown on no measure."))
    if "rehearsal" in arms and "cumulative_reversion" in arms[BASELINE].per_run:
        reh = arms["rehearsal"]
        a = _versus(r, "rehearsal", "alignment")
        cut = _versus(r, "rehearsal", "cumulative_reversion")
        pct = rehearsal_cut(reh, u)
        pct = "-" if pct is None else f"{pct:.0f}%"
        out.append(
            f"Rehearsal, built without v_rev, "
            f"{direction_word(a, 'lowered', 'raised', 'did not change')} the drift's alignment "
            f"with v_rev at T ({reh.alignment.mean:.2f} against {u.alignment.mean:.2f}) and "
            f"{direction_word(cut, 'cut', 'raised', 'did not change')} cumulative reversion "
            f"(by {pct} of the baseline's, mean over histories of each history's cut; "
            f"difference {interval(cut)}); non-refusal at T "
            f"{reh.non_refusal.mean:.0f}%, harmful compliance {reh.harmful_compliance.mean:.0f}%.")
    if "refusal_block" in arms and claim in arms:
        rb = arms["refusal_block"]
        at = m.matched.get("refusal_block")
        lam = f"lambda {at.lam:g}, matched on reduction along -r" if at else "its lambda"
        out.append(
            f"Blocking along the refusal direction (-r, at {lam}) ends at alignment "
            f"{rb.alignment.mean:.2f} with v_rev and non-refusal {rb.non_refusal.mean:.0f}%, "
            f"against {arms[claim].alignment.mean:.2f} and {arms[claim].non_refusal.mean:.0f}% "
            f"for the block along v_rev.")
    short = [f"{c} (reduction {x.reduction:.2f} against {x.target:.2f})"
             for c, x in m.matched.items() if not x.reached]
    undefined = [c for c, x in m.matched.items() if np.isnan(x.target) or np.isnan(x.reduction)]
    if undefined:
        out.append("The reduction is undefined where the unblocked drift has no projection on "
                   f"the direction; these controls' targets were undefined: "
                   f"{', '.join(undefined)}.")
    if short:
        out.append("These controls could not reach the reduction of the arm they control on "
                   f"the lambda grid; their closest lambda was used: {', '.join(short)}.")
    costly = [a for a, x in arms.items() if x.task_cost_not_block and a != BASELINE]
    if costly:
        out.append(f"Arms that stopped the new task being learned ({', '.join(costly)}) count as "
                   "task cost, not as blocks.")
    best = min((a for a in arms if a != BASELINE), key=lambda a: arms[a].non_refusal.mean)
    out.append(f"The lowest non-refusal of any arm at T is {arms[best].non_refusal.mean:.0f}% "
               f"({best}).")
    return out


def ordering_table(r: BlockingResult) -> pd.DataFrame:
    """Per measure: each history's means of block, baseline and push, the pooled paired
    differences with their 95% intervals over histories, the bound flag and the verdict."""
    rows = []
    for meas, o in r.metrics.ordering.items():
        row = {"measure": LABELS.get(meas, meas)}
        for h, x in o.per_history.items():
            row[f"{h}: block / baseline / push"] = " / ".join(
                fixed(v, 2) for v in (x.block, x.baseline, x.push))
        row["baseline - block"] = interval(o.baseline_minus_block)
        row["push - baseline"] = interval(o.push_minus_baseline)
        row["at a bound"] = o.at_bound
        row["verdict"] = order_word(o)
        rows.append(row)
    return pd.DataFrame(rows)


def matching_table(r: BlockingResult) -> pd.DataFrame:
    """Each control's matched lambda, its reduction and the target it was matched to."""
    return pd.DataFrame([{"control": c, "lambda": x.lam, "reduction": x.reduction,
                          "target": x.target, "reached": x.reached}
                         for c, x in r.metrics.matched.items()],
                        columns=["control", "lambda", "reduction", "target", "reached"])


def _regimes(r: BlockingResult) -> dict[str, tuple[dict[str, ArmMetrics], dict[str, Ordering]]]:
    """Each regime's arms and ordering, the main regime first; the shock's only if it ran."""
    m = r.metrics
    out = {"main": (m.arms, m.ordering)}
    if m.shock is not None:
        out["shock"] = (m.shock.arms, m.shock.ordering)
    return out


def regime_table(r: BlockingResult) -> pd.DataFrame:
    """The claim arms in both regimes: means at T over histories and seeds."""
    rows = []
    for name, (arms, _) in _regimes(r).items():
        shown = [BASELINE, *(a for a in ("block", "push", "rehearsal") if a in arms)]
        if r.metrics.shock is not None:
            shown = [a for a in shown if a in r.metrics.shock.arms]
        for a in shown:
            x = arms[a]
            rows.append({"regime": name, "arm": "baseline" if a == BASELINE else a,
                         "alignment": round(x.alignment.mean, 2),
                         "non-refusal (%)": round(x.non_refusal.mean, 1),
                         "harmful compliance (%)": round(x.harmful_compliance.mean, 1),
                         "new task (%)": round(x.new_task_accuracy.mean, 1),
                         "cumulative reversion": (None if x.cumulative_reversion is None
                                                  else round(x.cumulative_reversion.mean, 0))})
    return pd.DataFrame(rows)


def regime_order_table(r: BlockingResult) -> pd.DataFrame:
    """block < baseline < push per measure in each regime: the verdict and both differences."""
    rows = []
    for name, (_, order) in _regimes(r).items():
        for meas, o in order.items():
            rows.append({"verdict": order_word(o), "regime": name,
                         "measure": LABELS.get(meas, meas),
                         "baseline - block": interval(o.baseline_minus_block),
                         "push - baseline": interval(o.push_minus_baseline)})
    return pd.DataFrame(rows)


def regime_findings(r: BlockingResult) -> list[str]:
    """How the conclusions depend on the regime: the orderings that agree and that differ."""
    regimes = _regimes(r)
    if "shock" not in regimes:
        return ["The shock regime did not run in this setting."]
    main, shock = regimes["main"][1], regimes["shock"][1]
    same = [LABELS.get(m, m) for m in main
            if m in shock and order_word(main[m]) == order_word(shock[m])]
    differ = [f"{LABELS.get(m, m)} ({order_word(main[m])} in the main regime, "
              f"{order_word(shock[m])} in the shock)"
              for m in main if m in shock and order_word(main[m]) != order_word(shock[m])]
    b_main, b_shock = regimes["main"][0][BASELINE], regimes["shock"][0][BASELINE]
    n_main = len(next(iter(main.values())).per_history) if main else 0
    n_shock = len(next(iter(shock.values())).per_history) if shock else 0
    out = [f"The main regime's ordering pools {n_main} histories, the shock regime's {n_shock}: "
           "a verdict that differs between them may differ for power as well as for the "
           "regime."]
    out += [f"Unblocked, the main regime ends at non-refusal {b_main.non_refusal.mean:.0f}% and "
           f"harmful compliance {b_main.harmful_compliance.mean:.0f}%, the shock regime at "
           f"{b_shock.non_refusal.mean:.0f}% and {b_shock.harmful_compliance.mean:.0f}%."]
    out.append("The ordering block < baseline < push gets the same verdict in both regimes on "
               + (", ".join(same) if same else "no measure") + "; "
               + ("it differs on " + "; ".join(differ) + "." if differ
                  else "no verdict depends on the regime."))
    return out
