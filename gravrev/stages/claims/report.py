"""Stage 07, claims, its report: the verdicts counted in words, one sentence per claim."""

from __future__ import annotations

import pandas as pd

from gravrev.claims.rules import HOLD_STILL_ARM
from gravrev.claims.schema import HOLDS, VERSIONS
from gravrev.claims.why import fmt_measured
from gravrev.stages.claims.compute import ClaimsResult


def _version_findings(r: ClaimsResult, version: str) -> list[str]:
    t = r.table[r.table["version"] == version]
    holds = t[t["direction"] == HOLDS]["claim"].tolist()
    fails = t[t["direction"] != HOLDS]["claim"].tolist()
    sized = t[(t["size"] == HOLDS) & (t["direction"] == HOLDS)]["claim"].tolist()
    out = [f"Of the {version} version's {len(t)} claims, {len(holds)} hold in direction over "
           "histories" + (f" ({', '.join(holds)})" if holds else "")
           + f" and {len(fails)} do not" + (f" ({', '.join(fails)})" if fails else "") + "."]
    out.append(f"Of those that hold, {len(sized)} match{'es' if len(sized) == 1 else ''} the "
               "paper's size as well"
               + (f" ({', '.join(sized)})." if sized else "."))
    claims = [c for c in r.report["claims"] if c["version"] == version]
    each = {c["id"]: {e["verdict"] for e in c["per_history"].values()} for c in claims}
    pooled = {c["id"]: c["verdict"] for c in claims}
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


def findings(r: ClaimsResult) -> list[str]:
    """The claims counted per version, first then revised, from the pooled and per-history
    verdicts."""
    return [line for v in VERSIONS for line in _version_findings(r, v)]


def finding_lines(r: ClaimsResult) -> dict[str, str]:
    """Per claim its one plain sentence (what the paper says, this run's value, both verdicts)."""
    return {c["id"]: c["sentence"] for c in r.report["claims"]}


def rules_table(r: ClaimsResult) -> pd.DataFrame:
    """Each claim's pre-registered rule (direction and size) and where its number comes from."""
    return pd.DataFrame([{
        "version": c["version"], "claim": c["id"], "direction rule": c["rule"],
        "size rule": c["size_rule"],
        "computed by": f"{c['source']['function']} ({c['source']['field']})"}
        for c in r.report["claims"]])


def variant_table(r: ClaimsResult) -> pd.DataFrame:
    """The first version's blocked claims on the blocking objective and on the hold-still
    penalty, side by side."""
    rows = []
    for c in r.report["claims"]:
        held = c.get("variants", {}).get(HOLD_STILL_ARM)
        if held is None:
            continue
        rows.append({"claim": c["id"], "block: this run": fmt_measured(c["measured"]),
                     "block: direction": c["verdict"],
                     "hold still: this run": fmt_measured(held["measured"]),
                     "hold still: direction": held["verdict"], "hold still: why": held["why"]})
    return pd.DataFrame(rows)

