"""The rules of the paper's first version: the drift's alignment with v_rev, the isotropic null,
harm with and without blocking, and the task cost."""

import math
from collections.abc import Callable

import numpy as np

from gravrev.claims.pooling import (
    MIN_RUNS,
    Evaluation,
    Groups,
    array,
    excludes_zero,
    field,
    paired,
    paper_sign,
    same_bound,
    shares,
    summary,
    too_few,
    verdict_of,
)
from gravrev.claims.preregistered import (
    rule_text,
)
from gravrev.claims.schema import (
    NOT_COMPARABLE,
)
from gravrev.claims.thresholds import (
    DEFAULT_TASK_TOLERANCE,
)


def _eval_sign(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    rule = rule_text(paper)
    m = summary(np.asarray(inputs, dtype=np.float64).ravel(), groups)
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule)
    return m, verdict_of(excludes_zero(m, paper_sign(paper))), rule


def _eval_rises(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    early, late = paired(inputs, "early", "late", paper["id"])
    rule = rule_text(paper)
    m = {**summary(late - early, groups), "early": summary(early), "late": summary(late)}
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule)
    return m, verdict_of(excludes_zero(m, 1.0)), rule


def _eval_exceedance(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, count, of = paper["id"], paper["count"], paper["of"]
    k, n = int(field(inputs, "k", cid)), int(field(inputs, "n", cid))
    if not 0 <= k <= n:
        raise ValueError(f"measured[{cid!r}]: need 0 <= k <= n, got k={k}, n={n}")
    rule = rule_text(paper)
    if n == 0:
        m = {"k": 0, "n": 0, "fraction": None}
        return m, NOT_COMPARABLE, f"{rule} Not comparable: no run-step pairs were measured."
    per_k = np.asarray(inputs.get("k_per_history", []), dtype=np.float64)
    per_n = np.asarray(inputs.get("n_per_history", []), dtype=np.float64)
    m = {"k": k, "n": n, "fraction": k / n, **shares(per_k, per_n)}
    # Cross-multiplied so that 24/24 against 24/24 is not lost to float division.
    return m, verdict_of(k * of >= count * n), rule


def _eval_blocked_alignment(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    blocked, unblocked = paired(inputs, "blocked", "unblocked", paper["id"])
    rule = rule_text(paper)
    diff = summary(blocked - unblocked, groups)
    m = {**summary(blocked, groups), "unblocked": summary(unblocked), "difference": diff}
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule)
    ok = excludes_zero(m, paper_sign(paper)) and excludes_zero(diff, -1.0)
    return m, verdict_of(ok), rule


def _eval_harm_unblocked(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid = paper["id"]
    finetuned = array(inputs, "finetuned", cid)
    # θ_S's rate: one number, or one per run (its history's θ_S) when pooled.
    safe = np.asarray(field(inputs, "safe", cid), dtype=np.float64)
    if not np.all(np.isfinite(safe)) or safe.ndim > 1 or safe.size not in (1, finetuned.size):
        raise ValueError(f"measured[{cid!r}]: 'safe' must be finite, one value or one per run")
    rule = rule_text(paper)
    diff = summary(finetuned - safe, groups)
    m = {**summary(finetuned), "safe": float(safe.mean()) if safe.size else None,
         "difference": diff, "at_bound": same_bound(finetuned, safe)}
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule)
    return m, verdict_of(excludes_zero(diff, 1.0)), rule


def _eval_harm_blocked(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    blocked, unblocked = paired(inputs, "blocked", "unblocked", paper["id"])
    rule = rule_text(paper)
    diff = summary(blocked - unblocked, groups)
    m = {**summary(blocked), "unblocked": summary(unblocked), "difference": diff,
         "at_bound": same_bound(blocked, unblocked)}
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule)
    return m, verdict_of(excludes_zero(diff, -1.0)), rule


def _eval_task_cost(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid = paper["id"]
    blocked, unblocked = paired(inputs, "blocked", "unblocked", cid)
    tol = float(inputs.get("tolerance", DEFAULT_TASK_TOLERANCE))
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"measured[{cid!r}]: 'tolerance' must be finite and >= 0, got {tol}")
    rule = rule_text(paper, tol)
    m = {
        **summary(unblocked - blocked),  # a mean against a tolerance: no interval decides
        "blocked": summary(blocked),
        "unblocked": summary(unblocked),
        "tolerance": tol,
    }
    if m["n"] < MIN_RUNS:
        return m, *too_few(m["n"], rule)
    return m, verdict_of(m["mean"] <= tol), rule

FIRST_EVALUATORS: dict[str, Callable[[dict, object, Groups], Evaluation]] = {
    "alignment_step1": _eval_sign,
    "alignment_step20": _eval_sign,
    "final_alignment_unblocked": _eval_sign,
    "alignment_rises": _eval_rises,
    "null_exceedance": _eval_exceedance,
    "final_alignment_blocked": _eval_blocked_alignment,
    "harmfulness_unblocked": _eval_harm_unblocked,
    "harmfulness_blocked": _eval_harm_blocked,
    "task_cost": _eval_task_cost,
}
