"""The rules of the paper's revised version: the matched null, the vocabulary readout, the
alignment-harm correlation, the block < baseline < push order and rehearsal."""

from collections.abc import Callable

import numpy as np

from gravrev.claims.pooling import (
    MIN_RUNS,
    Evaluation,
    Groups,
    array,
    excludes_zero,
    field,
    history_means,
    paired,
    shares,
    summary,
    too_few,
    unit_summary,
    verdict_of,
)
from gravrev.claims.preregistered import (
    AREA_MEASURES,
    BASELINE_ARM,
    BLOCK_ARM,
    BOUNDED_MEASURES,
    CORRELATION_P,
    HARM_MEASURES,
    ORDER_MEASURES,
    PUSH_ARM,
    rule_text,
)
from gravrev.claims.schema import (
    NOT_COMPARABLE,
)
from gravrev.claims.thresholds import (
    READOUT_PERCENTILE,
)
from gravrev.stats.summaries import (
    summarize,
)
from gravrev.stats.trajectories import (
    at_bound,
)


def _eval_matched_null(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, rule = paper["id"], rule_text(paper)
    every = [bool(x) for x in field(inputs, "all_exceed", cid)]
    steps = array(inputs, "n_steps", cid)
    above = array(inputs, "n_exceed", cid)
    k, n = sum(every), len(every)
    if n == 0:
        m = {"k": 0, "n": 0, "fraction": None}
        return m, NOT_COMPARABLE, f"{rule} Not comparable: no trajectory was tested."
    m = {"k": k, "n": n, "fraction": k / n, "steps_above": int(above.sum()),
         "steps": int(steps.sum())}
    if groups is not None:
        g = np.asarray(groups).ravel()
        hs = list(dict.fromkeys(g.tolist()))
        hit = np.asarray(every, dtype=np.float64)
        m.update(shares(np.array([hit[g == h].sum() for h in hs]),
                         np.array([float(np.sum(g == h)) for h in hs])))
    return m, verdict_of(k == n), rule


def _eval_readout(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, rule = paper["id"], rule_text(paper)
    lens, change = paired(inputs, "lens_percentile", "change_percentile", cid)
    lens_score, change_score = paired(inputs, "lens_score", "change_score", cid)
    if lens.size == 0:
        return None, NOT_COMPARABLE, f"{rule} Not comparable: no history was read out."
    if not (np.all(np.isfinite(lens)) and np.all(np.isfinite(change))):
        return None, NOT_COMPARABLE, f"{rule} Not comparable: a readout percentile is missing."
    above = (lens > READOUT_PERCENTILE) & (change > READOUT_PERCENTILE)
    m = {"n": int(lens.size), "n_above": int(above.sum()),
         "lens_percentile": float(lens.min()), "change_percentile": float(change.min()),
         "lens_score": float(lens_score.mean()), "change_score": float(change_score.mean()),
         "n_null": int(array(inputs, "n_null", cid).min())}
    return m, verdict_of(bool(above.all())), rule


def _eval_correlation(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, rule = paper["id"], rule_text(paper)
    rho = array(inputs, "rho", cid)  # one per history
    p = array(inputs, "p", cid)
    rho_hc = array(inputs, "rho_harmful_compliance", cid)
    flags = [bool(x) for x in field(inputs, "at_bound_non_refusal", cid)]
    flags_hc = [bool(x) for x in field(inputs, "at_bound_harmful_compliance", cid)]
    steps = array(inputs, "n_steps", cid)
    if rho.size and not np.all(np.isfinite(rho)):
        undefined = int(np.sum(~np.isfinite(rho)))
        return None, NOT_COMPARABLE, (
            f"{rule} Not comparable: rho is undefined (a series constant over the steps) in "
            f"{undefined} of {rho.size} histories; non-refusal sits at 0 or 100 on most steps "
            f"in {sum(flags)} of them.")
    common = {"n_at_bound": sum(flags), "n_at_bound_harmful_compliance": sum(flags_hc),
              "n_steps": int(steps.min()) if steps.size else 0}
    if rho.size == 1:  # one history: its step-wise test, descriptive
        if not np.isfinite(p[0]):
            return None, NOT_COMPARABLE, f"{rule} Not comparable: the step-wise p is missing."
        m = {"mean": float(rho[0]), "n": 1, "p": float(p[0]), **common}
        p_hc = array({"p": inputs.get("p_harmful_compliance") or [None]}, "p", cid)
        if np.isfinite(rho_hc[0]) and np.isfinite(p_hc[0]):
            m["harmful_compliance"] = {"rho": float(rho_hc[0]), "p": float(p_hc[0])}
        return m, verdict_of(bool(rho[0] > 0 and p[0] < CORRELATION_P)), rule
    over = {"n_groups": int(rho.size), "df": int(rho.size) - 1} if groups is not None else {}
    m = {**summary(rho), **over, **common}
    if np.all(np.isfinite(rho_hc)) and rho_hc.size >= MIN_RUNS:
        m["harmful_compliance"] = summarize(rho_hc)
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule, "history")
    return m, verdict_of(excludes_zero(m, 1.0)), rule


def _eval_order(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, rule = paper["id"], rule_text(paper)
    arms = (BLOCK_ARM, BASELINE_ARM, PUSH_ARM)
    present = [x for x in ORDER_MEASURES if all(f"{a}:{x}" in inputs for a in arms)]
    measures: dict[str, dict] = {}
    for x in present:
        block, base = paired(inputs, f"{BLOCK_ARM}:{x}", f"{BASELINE_ARM}:{x}", cid)
        base, push = paired(inputs, f"{BASELINE_ARM}:{x}", f"{PUSH_ARM}:{x}", cid)
        lower, upper = unit_summary(base - block, groups), unit_summary(push - base, groups)
        scale = float(field(inputs, "span", cid)) if x in AREA_MEASURES else 1.0
        bounded = x in BOUNDED_MEASURES and any(at_bound(v / scale) for v in (block, base, push))
        measures[x] = {
            "block": float(block.mean()), "baseline": float(base.mean()),
            "push": float(push.mean()), "baseline_minus_block": lower,
            "push_minus_baseline": upper, "at_bound": bounded,
            "ordered": lower["n"] >= MIN_RUNS and excludes_zero(lower, 1.0)
            and excludes_zero(upper, 1.0),
        }
    judged = [x for x, v in measures.items() if not v["at_bound"]]
    first = measures[present[0]]["baseline_minus_block"] if present else {"n": 0}
    unit = "history" if groups is not None else "run"
    m = {"n": first["n"], "n_judged": len(judged),
         "n_ordered": sum(measures[x]["ordered"] for x in judged), "measures": measures}
    if first["n"] < MIN_RUNS:
        return m, *too_few(first["n"], rule, unit)
    if "alignment" not in judged or not set(judged) & set(HARM_MEASURES):
        stuck = [x for x, v in measures.items() if v["at_bound"]]
        return m, NOT_COMPARABLE, (
            f"{rule} Not comparable: alignment and a harm measure are needed, but "
            f"{', '.join(stuck) or 'none'} sit at a floor or ceiling and only "
            f"{', '.join(present) or 'no measure'} were measured.")
    return m, verdict_of(all(measures[x]["ordered"] for x in judged)), rule


def _eval_rehearsal(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, rule = paper["id"], rule_text(paper)
    rehearsal, base = paired(inputs, "rehearsal", "baseline", cid)
    diff = unit_summary(rehearsal - base, groups)
    r_units, b_units = history_means(rehearsal, groups), history_means(base, groups)
    m = {"difference": diff, "baseline": float(base.mean()) if base.size else None,
         "rehearsal": float(rehearsal.mean()) if rehearsal.size else None}
    unit = "history" if groups is not None else "run"
    if diff["n"] < MIN_RUNS:
        return {**summary([]), **m}, *too_few(diff["n"], rule, unit)
    if not np.all(b_units > 0):
        return {**summary([]), **m}, NOT_COMPARABLE, (
            f"{rule} Not comparable: the baseline shows no cumulative reversion to cut in "
            f"{int(np.sum(b_units <= 0))} of {b_units.size} {unit}s.")
    cut = 100.0 * (1.0 - r_units / b_units)  # gravrev.stats.trajectories.reversion_cut per unit
    over = {"n_groups": int(cut.size), "df": int(cut.size) - 1} if groups is not None else {}
    return {**summarize(cut), **over, **m}, verdict_of(excludes_zero(diff, -1.0)), rule

REVISED_EVALUATORS: dict[str, Callable[[dict, object, Groups], Evaluation]] = {
    "matched_null_every_trajectory": _eval_matched_null,
    "vocabulary_readout": _eval_readout,
    "alignment_harm_correlation": _eval_correlation,
    "block_baseline_push": _eval_order,
    "rehearsal_opposes": _eval_rehearsal,
}
