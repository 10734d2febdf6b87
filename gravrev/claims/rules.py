"""Paper-versus-measured verdicts for each claim of paper_claims.yaml (data/metrics/claims.json).

Every rule that decides a direction verdict is written once, in preregistered.RULES, before
any number is seen; the evaluators of each paper version (first_version, revised_version)
apply it. One sign rule holds for all: a direction verdict on a mean needs its 95% interval to
exclude 0 on the paper's side.
"""

import math
from collections.abc import Callable

import numpy as np

from gravrev.claims.first_version import FIRST_EVALUATORS
from gravrev.claims.inputs import Missing
from gravrev.claims.pooling import Evaluation, Groups, verdict_of
from gravrev.claims.preregistered import GROUPED_CLAIMS, GROUPED_RULE, rule_text
from gravrev.claims.revised_version import REVISED_EVALUATORS
from gravrev.claims.schema import NOT_COMPARABLE, load_paper_claims

EVALUATORS: dict[str, Callable[[dict, object, Groups], Evaluation]] = {
    **FIRST_EVALUATORS, **REVISED_EVALUATORS}


def _jsonable(x: object) -> object:
    """Plain Python types for json.dumps(allow_nan=False): NaN becomes None, and a float is
    rounded as write_json rounds it, so the words state the value the file holds."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return round(float(x), 6) if math.isfinite(x) else None
    return x


def _within_2sd(paper: dict, measured: dict | None) -> bool | None:
    if "mean" not in paper or "sd" not in paper or not measured:
        return None
    mean = measured.get("mean")
    if mean is None or not math.isfinite(mean):
        return None
    return bool(abs(mean - paper["mean"]) <= 2.0 * paper["sd"])


def _paper_value(claim: dict) -> dict:
    return {k: v for k, v in claim.items()
            if k not in ("id", "quantity", "source", "version", "plain")}


SIZE_RULE = (
    "Size holds when the paper's mean lies inside this run's 95% t interval, or this run's "
    "mean lies within the paper's mean +- 2 sd."
)
SIZE_RULE_NO_SD = "Size holds when the paper's value lies inside this run's 95% t interval."


def size_verdict(claim: dict, measured: dict | None, direction: str) -> tuple[str, str]:
    """Does the magnitude match the paper's, not only the sign? (claims with a figure only)."""
    if "mean" not in claim:
        if "count" in claim and measured and measured.get("n"):
            rule = "Size holds when this run's fraction equals the paper's."
            same = measured["k"] * claim["of"] == claim["count"] * measured["n"]
            return verdict_of(same), rule
        return NOT_COMPARABLE, "Size: the paper states no magnitude for this claim."
    rule = SIZE_RULE if "sd" in claim else SIZE_RULE_NO_SD
    if direction == NOT_COMPARABLE or not measured or measured.get("mean") is None:
        return NOT_COMPARABLE, f"{rule} Not comparable: nothing was measured."
    lo, hi = measured.get("ci_low"), measured.get("ci_high")
    inside = lo is not None and hi is not None and lo <= claim["mean"] <= hi
    near = "sd" in claim and abs(measured["mean"] - claim["mean"]) <= 2 * claim["sd"]
    if lo is None and not near:
        return NOT_COMPARABLE, f"{rule} Not comparable: one value, no interval."
    return verdict_of(inside or near), rule


def evaluate_claims(
    measured: dict, preset: str, paper_claims: list[dict] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> list[dict]:
    """One verdict entry per paper claim (absent ids: not comparable); with `groups` (each
    run's history, from pool()), intervals treat the history as the unit."""
    claims = load_paper_claims() if paper_claims is None else paper_claims
    unknown = sorted(set(measured) - {c["id"] for c in claims})
    if unknown:
        raise ValueError(f"measured has ids that are not paper claims: {', '.join(unknown)}")
    out = []
    for claim in claims:
        cid = claim["id"]
        evaluate = EVALUATORS.get(cid)
        inputs = measured.get(cid)
        if evaluate is None:
            m, verdict, rule = None, NOT_COMPARABLE, "Not comparable: no rule is defined."
        elif cid not in measured:
            m, verdict = None, NOT_COMPARABLE
            rule = (f"{rule_text(claim)} Not comparable: the measurement is absent in preset "
                    f"{preset!r}.")
        elif isinstance(inputs, Missing):
            m, verdict = None, NOT_COMPARABLE
            rule = f"{rule_text(claim)} Not comparable: {inputs.reason}"
        else:
            m, verdict, rule = evaluate(claim, inputs, (groups or {}).get(cid))
            spread = max((m or {}).get("n_groups", 0),
                         (m or {}).get("difference", {}).get("n_groups", 0))
            if cid in GROUPED_CLAIMS and spread > 1:  # as HISTORY_UNIT for the revised
                rule = f"{rule} {GROUPED_RULE}"
        size, size_rule = size_verdict(claim, m, verdict)
        entry = {
            "id": cid,
            "version": claim.get("version", "first"),
            "quantity": claim.get("quantity", ""),
            "paper": _paper_value(claim),
            "measured": m,
            "preset": preset,
            "verdict": verdict,
            "rule": rule,
            "within_paper_2sd": _within_2sd(claim, m),
            "size_verdict": size,
            "size_rule": size_rule,
        }
        out.append(_jsonable(entry))
    return out


def claims_report(
    measured: dict, preset: str, n_runs: int, paper_claims: list[dict] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> dict:
    """The content of data/metrics/claims.json."""
    claims = evaluate_claims(measured, preset, paper_claims, groups)
    return {"preset": preset, "n_runs": int(n_runs), "claims": claims}
