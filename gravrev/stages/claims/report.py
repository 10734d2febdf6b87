"""Stage 07, claims, its report: the verdicts counted in words, one line per claim."""

from __future__ import annotations

from gravrev.claims.schema import HOLDS
from gravrev.stages.claims.compute import ClaimsResult


def findings(r: ClaimsResult) -> list[str]:
    """The claims in one paragraph, counted from the pooled and per-history verdicts."""
    t = r.table
    holds = t[t["direction"] == HOLDS]["claim"].tolist()
    fails = t[t["direction"] != HOLDS]["claim"].tolist()
    sized = t[(t["size"] == HOLDS) & (t["direction"] == HOLDS)]["claim"].tolist()
    out = [f"Of {len(t)} claims, {len(holds)} hold in direction over histories"
           + (f" ({', '.join(holds)})" if holds else "")
           + f" and {len(fails)} do not" + (f" ({', '.join(fails)})" if fails else "") + "."]
    out.append(f"Of those that hold, {len(sized)} match{'es' if len(sized) == 1 else ''} the "
               "paper's size as well"
               + (f" ({', '.join(sized)})." if sized else "."))
    each = {c["id"]: {e["verdict"] for e in c["per_history"].values()} for c in r.report["claims"]}
    pooled = {c["id"]: c["verdict"] for c in r.report["claims"]}
    split = [c for c in t["claim"] if len(each[c]) > 1 and pooled[c] != HOLDS]
    if split:
        out.append(f"The histories disagree on {', '.join(split)}: what holds in one history "
                   "fails in another, so these are not findings.")
    weak = [c for c in t["claim"] if len(each[c]) > 1 and pooled[c] == HOLDS]
    if weak:
        out.append(f"{', '.join(weak)} hold{'s' if len(weak) == 1 else ''} over histories, though "
                   "not in every history on its own few runs.")
    every = [c for c in t["claim"] if each[c] == {HOLDS} and pooled[c] != HOLDS]
    if every:
        out.append(f"{', '.join(every)} hold{'s' if len(every) == 1 else ''} in every history "
                   "but not over histories: they differ too much in size for "
                   f"{r.report['n_histories']} histories to pin down the mean over histories.")
    return out


def finding_lines(r: ClaimsResult) -> dict[str, str]:
    """Per claim one line: paper, this run, both verdicts and the why (the intro's box)."""
    return {row.claim: f"paper {row.paper}; this run {row._3}; direction {row.direction}, "
                       f"size {row.size}. {row.why}" for row in r.table.itertuples()}
