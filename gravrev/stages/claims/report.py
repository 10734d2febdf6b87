"""Stage 07, claims, its report: the verdicts counted in words, one sentence and one reason
per claim, composed from claims.json's measured fields."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd

from gravrev.claims.preregistered import HOLD_STILL_ARM
from gravrev.claims.schema import HOLDS, VERSIONS, load_paper_claims, load_versions
from gravrev.report import claim_words as words
from gravrev.report import headline as headline_words
from gravrev.stages.claims.compute import ClaimsResult


@dataclass
class ClaimsPage:
    """What chapter 07, the claims page and the intro show: claims.json's entries with their
    reason ("why") and plain sentence added, the table, the headlines."""

    report: dict
    table: pd.DataFrame  # version, claim, paper, this run, direction, size, per history, why
    headline: dict[str, str]  # context, then per version: what holds, does not, is unresolved


def page(result: ClaimsResult) -> ClaimsPage:
    """Word every claim of `result` (claims.json) and count the headlines."""
    report = copy.deepcopy(result.report)
    plain = {c["id"]: c["plain"] for c in load_paper_claims()}
    for c in report["claims"]:
        c["why"] = words.why(c, c["per_history"], report)
        c["sentence"] = words.sentence(c, plain[c["id"]])
        for arm, v in c.get("variants", {}).items():
            v["why"] = words.why({**c, **v}, v["per_history"], report, arm)
    headline = {"context": headline_words.context(report), **{
        v: headline_words.headline([e for e in report["claims"] if e["version"] == v], plain,
                                   f"the paper's {v} version, {info['title']}")
        for v, info in load_versions().items()}}
    table = pd.DataFrame([{
        "version": c["version"], "claim": c["id"], "paper": words.paper_text(c["paper"]),
        "this run": words.fmt_measured(c["measured"]), "direction": c["verdict"],
        "size": c["size_verdict"],
        "per history": ", ".join(f"{h}: {e['verdict']}" for h, e in c["per_history"].items()),
        "why": c["why"]} for c in report["claims"]])
    return ClaimsPage(report, table, headline)


def _version_findings(r: ClaimsPage, version: str) -> list[str]:
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


def findings(r: ClaimsPage) -> list[str]:
    """The claims counted per version, first then revised, from the pooled and per-history
    verdicts."""
    return [line for v in VERSIONS for line in _version_findings(r, v)]


def finding_lines(r: ClaimsPage) -> dict[str, str]:
    """Per claim its one plain sentence (what the paper says, this run's value, both verdicts)."""
    return {c["id"]: c["sentence"] for c in r.report["claims"]}


def rules_table(r: ClaimsPage) -> pd.DataFrame:
    """Each claim's pre-registered rule (direction and size) and where its number comes from."""
    return pd.DataFrame([{
        "version": c["version"], "claim": c["id"], "direction rule": c["rule"],
        "size rule": c["size_rule"],
        "computed by": f"{c['source']['function']} ({c['source']['field']})"}
        for c in r.report["claims"]])


def variant_table(r: ClaimsPage) -> pd.DataFrame:
    """The first version's blocked claims on the blocking objective and on the hold-still
    penalty, side by side."""
    rows = []
    for c in r.report["claims"]:
        held = c.get("variants", {}).get(HOLD_STILL_ARM)
        if held is None:
            continue
        rows.append({"claim": c["id"], "block: this run": words.fmt_measured(c["measured"]),
                     "block: direction": c["verdict"],
                     "hold still: this run": words.fmt_measured(held["measured"]),
                     "hold still: direction": held["verdict"], "hold still: why": held["why"]})
    return pd.DataFrame(rows)



def deciding_intervals(r: ClaimsPage) -> pd.DataFrame:
    """Each claim with a paper figure: the paper's value, this run's pooled mean with the 95%
    interval that decided its verdicts, both verdicts and the claim's unit."""
    rows = []
    for c in r.report["claims"]:
        p, m = c["paper"], c["measured"] or {}
        if "mean" not in p or m.get("mean") is None or m.get("ci_low") is None:
            continue
        rows.append({"id": c["id"], "unit": p.get("unit", ""), "paper_mean": float(p["mean"]),
                     "paper_sd": float(p.get("sd", "nan")), "mean": m["mean"],
                     "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                     "direction": c["verdict"], "size": c["size_verdict"]})
    return pd.DataFrame(rows, columns=["id", "unit", "paper_mean", "paper_sd", "mean", "ci_low",
                                       "ci_high", "direction", "size"])
