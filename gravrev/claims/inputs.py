"""Claim inputs over several histories: the runs joined, each run's history kept beside them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Missing:
    """A claim's input that no stage produced, and why: its verdict is "not comparable"."""

    reason: str


def pool(per_history: dict[str, dict]) -> tuple[dict, dict[str, list[str]]]:
    """One input set over all histories, and each run's history (the grouping factor).

    Run lists are joined; counts (k, n) add up, each history's kept beside them as
    k_per_history, n_per_history; a number that differs between histories
    (θ_S's rate) becomes one value per run; one they share (a tolerance) stays. An input
    missing in any history is missing pooled, with that history's reason.
    """
    inputs: dict = {}
    groups: dict[str, list[str]] = {}
    ids = list(dict.fromkeys(c for d in per_history.values() for c in d))
    for cid in ids:
        parts = {h: d[cid] for h, d in per_history.items() if cid in d}
        missing = [(h, x) for h, x in parts.items() if isinstance(x, Missing)]
        if missing:
            h, x = missing[0]
            inputs[cid] = x if len(missing) == len(parts) else Missing(f"{h}: {x.reason}")
        elif any(isinstance(x, dict) for x in parts.values()):
            inputs[cid], groups[cid] = _pool_fields(parts)
        else:
            inputs[cid] = [v for x in parts.values() for v in x]
            groups[cid] = [h for h, x in parts.items() for _ in x]
    return inputs, groups


def _pool_fields(parts: dict[str, dict]) -> tuple[dict, list[str]]:
    out: dict = {}
    lengths = {h: next((len(v) for v in d.values() if isinstance(v, list | tuple)), 0)
               for h, d in parts.items()}
    for key in next(iter(parts.values())):
        values = [d[key] for d in parts.values()]
        if key in ("k", "n"):
            out[key] = sum(values)
            out[f"{key}_per_history"] = values
        elif all(isinstance(v, list | tuple) for v in values):
            out[key] = [x for v in values for x in v]
        elif all(v == values[0] for v in values):
            out[key] = values[0]
        else:
            out[key] = [d[key] for h, d in parts.items() for _ in range(lengths[h])]
    return out, [h for h, n in lengths.items() for _ in range(n)]
