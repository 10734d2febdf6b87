"""Paper-versus-measured verdicts for each claim of paper_claims.yaml (data/metrics/claims.json)."""

import math
from collections.abc import Callable, Sequence

import numpy as np

from gravrev.claims.schema import (
    FAILS,
    HOLDS,
    NOT_COMPARABLE,
    load_paper_claims,
)
from gravrev.claims.thresholds import DEFAULT_TASK_TOLERANCE
from gravrev.stats.summaries import grouped_summary, summarize, wilson_interval

MIN_RUNS = 2  # a 95% t interval needs at least two runs

Evaluation = tuple[dict | None, str, str]  # measured, verdict, rule
Groups = Sequence[str] | None  # each run's history, aligned with the run lists; None: ungrouped
GROUPED_RULE = ("Pooled over histories, the history is a random intercept: the interval is over "
                "the history means (histories - 1 df) when they differ beyond their runs' noise, "
                "else over runs.")


def _verdict(ok: bool) -> str:
    return HOLDS if ok else FAILS


def _summary(values: Sequence[float] | np.ndarray, groups: Groups = None) -> dict:
    """summarize(), or grouped_summary() with groups; an empty list gives n = 0 and no numbers."""
    if len(values) == 0:
        return {"mean": None, "sd": None, "n": 0, "ci_low": None, "ci_high": None}
    return summarize(values) if groups is None else grouped_summary(values, groups)


def _too_few(n: int, rule: str) -> tuple[str, str]:
    runs = "no runs" if n == 0 else f"only {n} run"
    return NOT_COMPARABLE, f"{rule} Not comparable: {runs}, at least {MIN_RUNS} are needed."


def _field(inputs: object, key: str, cid: str) -> object:
    if not isinstance(inputs, dict) or key not in inputs:
        raise ValueError(f"measured[{cid!r}] needs a {key!r} entry")
    return inputs[key]


def _paired(inputs: object, first: str, second: str, cid: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(_field(inputs, first, cid), dtype=np.float64).ravel()
    b = np.asarray(_field(inputs, second, cid), dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(
            f"measured[{cid!r}]: {first!r} and {second!r} are paired per run but have "
            f"{a.size} and {b.size} values"
        )
    return a, b


def _sign_word(paper: dict) -> tuple[float, str]:
    sign = math.copysign(1.0, paper["mean"]) if paper.get("mean") else 0.0
    if sign == 0.0:
        raise ValueError(f"paper claim {paper['id']!r} has no signed mean")
    return sign, ("positive" if sign > 0 else "negative")


def _eval_sign(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    sign, word = _sign_word(paper)
    rule = (
        f"Holds when the mean over runs is {word}, as in the paper, and its 95% t interval "
        "excludes 0."
    )
    m = _summary(np.asarray(inputs, dtype=np.float64).ravel(), groups)
    if m["n"] < MIN_RUNS:
        return m, *_too_few(m["n"], rule)
    ok = m["ci_low"] > 0 if sign > 0 else m["ci_high"] < 0
    return m, _verdict(ok), rule


def _eval_rises(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    early, late = _paired(inputs, "early", "late", paper["id"])
    rule = (
        "Holds when the mean rise in alignment from step 1 to step 20 (late - early, paired "
        "per run) is positive and its 95% t interval lies above 0."
    )
    m = {**_summary(late - early, groups), "early": _summary(early), "late": _summary(late)}
    if m["n"] < MIN_RUNS:
        return m, *_too_few(m["n"], rule)
    return m, _verdict(m["mean"] > 0 and m["ci_low"] > 0), rule


def _eval_exceedance(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid, count, of = paper["id"], paper["count"], paper["of"]
    k, n = int(_field(inputs, "k", cid)), int(_field(inputs, "n", cid))
    if not 0 <= k <= n:
        raise ValueError(f"measured[{cid!r}]: need 0 <= k <= n, got k={k}, n={n}")
    rule = (
        f"Holds when the fraction of run-step pairs above the null's p99 is at least the "
        f"paper's {count}/{of}."
    )
    if n == 0:
        m = {"k": 0, "n": 0, "fraction": None, "wilson_low": None, "wilson_high": None}
        return m, NOT_COMPARABLE, f"{rule} Not comparable: no run-step pairs were measured."
    low, high = wilson_interval(k, n)
    m = {"k": k, "n": n, "fraction": k / n, "wilson_low": low, "wilson_high": high}
    # Cross-multiplied so that 24/24 against 24/24 is not lost to float division.
    return m, _verdict(k * of >= count * n), rule


def _eval_blocked_alignment(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    blocked, unblocked = _paired(inputs, "blocked", "unblocked", paper["id"])
    sign, word = _sign_word(paper)
    rule = (
        f"Holds when the blocked mean over runs is {word}, as in the paper, and the paired "
        "95% t interval of blocked - unblocked lies below 0."
    )
    diff = _summary(blocked - unblocked, groups)
    m = {**_summary(blocked, groups), "unblocked": _summary(unblocked), "difference": diff}
    if m["n"] < MIN_RUNS:
        return m, *_too_few(m["n"], rule)
    return m, _verdict(m["mean"] * sign > 0 and diff["ci_high"] < 0), rule


def _eval_harm_unblocked(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid = paper["id"]
    finetuned = np.asarray(_field(inputs, "finetuned", cid), dtype=np.float64).ravel()
    # theta_S's rate: one number, or one per run (its history's theta_S) when pooled.
    safe = np.asarray(_field(inputs, "safe", cid), dtype=np.float64)
    if not np.all(np.isfinite(safe)) or safe.ndim > 1 or safe.size not in (1, finetuned.size):
        raise ValueError(f"measured[{cid!r}]: 'safe' must be finite, one value or one per run")
    rule = (
        "Holds when harmfulness after benign fine-tuning exceeds that of the aligned start "
        "theta_S, with the 95% t interval of finetuned - safe above 0."
    )
    diff = _summary(finetuned - safe, groups)
    m = {**_summary(finetuned), "safe": float(safe.mean()) if safe.size else None,
         "difference": diff}
    if m["n"] < MIN_RUNS:
        return m, *_too_few(m["n"], rule)
    return m, _verdict(diff["mean"] > 0 and diff["ci_low"] > 0), rule


def _eval_harm_blocked(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    blocked, unblocked = _paired(inputs, "blocked", "unblocked", paper["id"])
    rule = (
        "Holds when harmfulness with v_rev blocked is below that of ordinary fine-tuning, "
        "with the paired 95% t interval of blocked - unblocked below 0."
    )
    diff = _summary(blocked - unblocked, groups)
    m = {**_summary(blocked), "unblocked": _summary(unblocked), "difference": diff}
    if m["n"] < MIN_RUNS:
        return m, *_too_few(m["n"], rule)
    return m, _verdict(diff["mean"] < 0 and diff["ci_high"] < 0), rule


def _eval_task_cost(paper: dict, inputs: object, groups: Groups = None) -> Evaluation:
    cid = paper["id"]
    blocked, unblocked = _paired(inputs, "blocked", "unblocked", cid)
    tol = float(inputs.get("tolerance", DEFAULT_TASK_TOLERANCE))
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"measured[{cid!r}]: 'tolerance' must be finite and >= 0, got {tol}")
    rule = (
        "Holds when the mean benign-task accuracy lost to blocking (unblocked - blocked, "
        f"paired per run) is at most {tol:g} percentage points."
    )
    m = {
        **_summary(unblocked - blocked),  # a mean against a tolerance: no interval decides
        "blocked": _summary(blocked),
        "unblocked": _summary(unblocked),
        "tolerance": tol,
    }
    if m["n"] < MIN_RUNS:
        return m, *_too_few(m["n"], rule)
    return m, _verdict(m["mean"] <= tol), rule


EVALUATORS: dict[str, Callable[[dict, object, Groups], Evaluation]] = {
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


def _jsonable(x: object) -> object:
    """Plain Python types for json.dumps(allow_nan=False): NaN becomes None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return x


def _within_2sd(paper: dict, measured: dict | None) -> bool | None:
    if "mean" not in paper or "sd" not in paper or not measured:
        return None
    mean = measured.get("mean")
    if mean is None or not math.isfinite(mean):
        return None
    return bool(abs(mean - paper["mean"]) <= 2.0 * paper["sd"])


def _paper_value(claim: dict) -> dict:
    return {k: v for k, v in claim.items() if k not in ("id", "quantity", "source")}


SIZE_RULE = (
    "Size holds when the paper's mean lies inside this run's 95% t interval, or this run's "
    "mean lies within the paper's mean +- 2 sd."
)


def size_verdict(claim: dict, measured: dict | None, direction: str) -> tuple[str, str]:
    """Does the magnitude match the paper's, not only the sign? (mean +- sd claims only)."""
    if "mean" not in claim or "sd" not in claim:
        if "count" in claim and measured and measured.get("n"):
            rule = "Size holds when this run's fraction equals the paper's."
            same = measured["k"] * claim["of"] == claim["count"] * measured["n"]
            return _verdict(same), rule
        return NOT_COMPARABLE, "Size: the paper states no magnitude for this claim."
    if direction == NOT_COMPARABLE or not measured or measured.get("mean") is None:
        return NOT_COMPARABLE, f"{SIZE_RULE} Not comparable: nothing was measured."
    lo, hi = measured.get("ci_low"), measured.get("ci_high")
    inside = lo is not None and hi is not None and lo <= claim["mean"] <= hi
    near = abs(measured["mean"] - claim["mean"]) <= 2 * claim["sd"]
    return _verdict(inside or near), SIZE_RULE


def evaluate_claims(
    measured: dict, preset: str, paper_claims: list[dict] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> list[dict]:
    """One verdict entry per paper claim (absent ids: not comparable); with `groups` (each
    run's history, from pool()), intervals treat the history as a random intercept."""
    claims = load_paper_claims() if paper_claims is None else paper_claims
    unknown = sorted(set(measured) - {c["id"] for c in claims})
    if unknown:
        raise ValueError(f"measured has ids that are not paper claims: {', '.join(unknown)}")
    out = []
    for claim in claims:
        cid = claim["id"]
        evaluate = EVALUATORS.get(cid)
        if evaluate is None:
            m, verdict, rule = None, NOT_COMPARABLE, "Not comparable: no rule is defined."
        elif cid not in measured:
            m, verdict = None, NOT_COMPARABLE
            rule = f"Not comparable: the measurement is absent in preset {preset!r}."
        else:
            m, verdict, rule = evaluate(claim, measured[cid], (groups or {}).get(cid))
            if max(m.get("n_groups", 0), m.get("difference", {}).get("n_groups", 0)) > 1:
                rule = f"{rule} {GROUPED_RULE}"
        size, size_rule = size_verdict(claim, m, verdict)
        entry = {
            "id": cid,
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
