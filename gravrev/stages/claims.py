"""Stage 07, claims: each paper claim against this run, per history and pooled, with a why."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from gravrev.claims import (
    HOLDS,
    NOT_COMPARABLE,
    claims_report,
    load_paper_claims,
    validate_report,
)
from gravrev.config import Config, Paths
from gravrev.io import read_json, write_json

STAGES = ("history", "finetune", "alignment", "nulls", "blocking")


def _runs(per_run: dict, history: str | None) -> dict[str, float]:
    """The entries of a {'h/seed': value} map that belong to `history` (all when None)."""
    return {k: v for k, v in per_run.items() if history is None or k.split("/")[0] == history}


def _at(per_run: dict, steps: list[int], step: int, history: str | None) -> list[float] | None:
    if step not in steps:
        return None
    i = steps.index(step)
    return [v[i] for v in _runs(per_run, history).values()]


def gather(metrics: dict[str, dict], cfg: Config, history: str | None = None) -> dict:
    """The inputs of every claim's rule, for one history or pooled (None)."""
    align, nulls, fine, block = (metrics[k] for k in ("alignment", "nulls", "finetune",
                                                       "blocking"))
    out: dict = {}
    early, early_steps = align["early_per_run"], align["early_steps"]
    if not early:  # no early runs (e.g. hf): the main runs' logged steps
        early, early_steps = align["per_run"], align["steps"]
    for cid, step in (("alignment_step1", 1), ("alignment_step20", 20)):
        values = _at(early, early_steps, step, history)
        if values is not None:
            out[cid] = values
    if "alignment_step1" in out and "alignment_step20" in out:
        out["alignment_rises"] = {"early": out["alignment_step1"], "late": out["alignment_step20"]}
    iso = nulls["exceedance"][history or "all"]["isotropic"]
    out["null_exceedance"] = {"k": iso["k"], "n": iso["n"]}
    out["final_alignment_unblocked"] = _at(align["per_run"], align["steps"],
                                           align["steps"][-1], history)
    hs = [history] if history else list(fine["histories"])
    finetuned = [100 - r for h in hs for r in fine["histories"][h]["final"]["unblocked"][
        "refusal_rate"]]
    safe = [100 - fine["histories"][h]["safe_start"]["refusal_rate"] for h in hs]
    out["harmfulness_unblocked"] = {"finetuned": finetuned, "safe": sum(safe) / len(safe)}
    arms = block["arms"]
    arm = cfg.blocking.claim_arm
    if arm in arms:
        def pair(measure: str) -> dict:
            b = _runs(arms[arm]["per_run"][measure], history)
            u = _runs(arms["unblocked"]["per_run"][measure], history)
            keys = sorted(b)
            return {"blocked": [b[k] for k in keys], "unblocked": [u[k] for k in keys]}

        out["final_alignment_blocked"] = pair("alignment")
        out["harmfulness_blocked"] = pair("non_refusal")
        out["task_cost"] = {**pair("benign_accuracy"),
                            "tolerance": cfg.blocking.task_cost_tolerance}
    return out


def _fmt(m: dict | None) -> str:
    if not m:
        return "nothing measured"
    if "k" in m:
        return f"{m['k']} of {m['n']}"
    if m.get("mean") is None:
        return "nothing measured"
    sd = "" if m.get("sd") is None else f" ± {m['sd']:.3g}"
    return f"{m['mean']:.3g}{sd} (n = {m['n']})"


def stability(verdict: str, per_history: dict[str, dict]) -> str:
    """Whether each history alone gives the pooled verdict."""
    if all(e["verdict"] == verdict for e in per_history.values()):
        return f"the same verdict in all {len(per_history)} histories"
    each = ", ".join(f"{h}: {e['verdict']}" for h, e in per_history.items())
    return f"the verdict differs between histories ({each})"


def why(entry: dict, per_history: dict[str, dict], metrics: dict[str, dict]) -> str:
    """One sentence, generated from the measurements, on why the claim holds or not."""
    cid, m, verdict = entry["id"], entry["measured"] or {}, entry["verdict"]
    stable = stability(verdict, per_history)
    if verdict == NOT_COMPARABLE:
        return f"Not comparable: {entry['rule'].split('Not comparable: ')[-1]}"
    block = metrics["blocking"]
    if cid in ("harmfulness_blocked", "final_alignment_blocked", "task_cost"):
        arm = block["claim_arm"]
        a = block["arms"]
        nr_b, nr_u = a[arm]["non_refusal"]["mean"], a["unblocked"]["non_refusal"]["mean"]
        al_b, al_u = a[arm]["alignment"]["mean"], a["unblocked"]["alignment"]["mean"]
        acc_b = a[arm]["new_task_accuracy"]["mean"]
        held = "held" if al_b < al_u else "did not lower"
        kept = ("kept refusal" if nr_b < nr_u - 5 else "did not keep refusal")
        return (f"Blocking (lambda {block['lambda']:g}, check {block['manipulation_check']}) "
                f"{held} alignment at T ({al_b:.2f} vs {al_u:.2f} unblocked) and {kept} "
                f"(non-refusal {nr_b:.0f}% vs {nr_u:.0f}%), new task {acc_b:.0f}%; {stable}; "
                "see chapter 05.")
    if cid == "harmfulness_unblocked":
        return (f"Benign fine-tuning took non-refusal from {m['safe']:.0f}% at theta_S to "
                f"{m['mean']:.0f}% at T (harmless data only); {stable}; see chapter 02.")
    if cid == "null_exceedance":
        aniso = metrics["nulls"]["exceedance"]["all"]["anisotropic"]
        return (f"{m['k']} of {m['n']} run-step pairs exceed the isotropic p99, "
                f"{aniso['k']} of {aniso['n']} the stronger covariance-matched null; {stable}; "
                "see chapter 04.")
    if cid == "alignment_rises":
        return (f"From step 1 to step 20 alignment changes by {m['mean']:+.3f} "
                f"(95% CI {m['ci_low']:+.3f} to {m['ci_high']:+.3f}, {m['n']} early runs); "
                f"{stable}; see chapter 03.")
    size = entry["size_verdict"]
    paper = entry["paper"]
    gap = ("matches the paper's size" if size == HOLDS else
           f"is {'above' if m['mean'] > paper['mean'] else 'below'} the paper's "
           f"{paper['mean']} ± {paper['sd']}")
    return (f"Measured {_fmt(m)}: the sign {'agrees' if verdict == HOLDS else 'is not clear'}"
            f" and the value {gap}; {stable}; see chapter 03.")


@dataclass
class ClaimsResult:
    """What chapter 07 and the claims page show."""

    report: dict
    table: pd.DataFrame  # claim, paper, this run, direction, size, why, per history


def paper_text(p: dict) -> str:
    if "mean" in p:
        unit = "%" if p.get("unit") == "percent" else ""
        return f"{p['mean']}{unit} ± {p['sd']}{unit}"
    if "count" in p:
        return f"{p['count']} of {p['of']}"
    return p.get("statement", "qualitative")


def run(cfg: Config, paths: Paths) -> ClaimsResult:
    """Evaluate every claim pooled and per history; write data/metrics/claims.json."""
    metrics = {k: read_json(paths.metrics_file(k)) for k in STAGES}
    pooled = claims_report(gather(metrics, cfg), cfg.preset,
                           n_runs=len(cfg.histories) * len(cfg.finetune.seeds))
    validate_report(pooled)
    per = {h: {e["id"]: e for e in claims_report(gather(metrics, cfg, h), cfg.preset,
                                                  n_runs=len(cfg.finetune.seeds))["claims"]}
           for h in cfg.histories}
    sources = {c["id"]: c.get("source") for c in load_paper_claims()}
    for entry in pooled["claims"]:
        ph = {h: {"verdict": per[h][entry["id"]]["verdict"],
                  "size_verdict": per[h][entry["id"]]["size_verdict"],
                  "measured": per[h][entry["id"]]["measured"]} for h in cfg.histories}
        entry["per_history"] = ph
        entry["why"] = why(entry, ph, metrics)
        entry["source"] = sources[entry["id"]]
    pooled["n_histories"] = len(cfg.histories)
    pooled["harm_measure"] = "non-refusal (100 - refusal rate) on held-out harmful requests"
    write_json(paths.metrics_file("claims"), pooled)
    return load(cfg, paths)


def load(cfg: Config, paths: Paths) -> ClaimsResult:
    """Read stage 07's outputs back."""
    report = read_json(paths.metrics_file("claims"))
    rows = []
    for c in report["claims"]:
        rows.append({
            "claim": c["id"], "paper": paper_text(c["paper"]), "this run": _fmt(c["measured"]),
            "direction": c["verdict"], "size": c["size_verdict"],
            "per history": ", ".join(f"{h}: {e['verdict']}" for h, e in c["per_history"].items()),
            "why": c["why"],
        })
    return ClaimsResult(report, pd.DataFrame(rows))


def findings(r: ClaimsResult) -> list[str]:
    """The claims in one paragraph, counted from the verdicts."""
    t = r.table
    holds = t[t["direction"] == "holds"]["claim"].tolist()
    fails = t[t["direction"] == "does not hold"]["claim"].tolist()
    sized = t[t["size"] == "holds"]["claim"].tolist()
    out = [f"Of {len(t)} claims, {len(holds)} hold in direction"
           + (f" ({', '.join(holds)})" if holds else "")
           + f" and {len(fails)} do not" + (f" ({', '.join(fails)})" if fails else "") + "."]
    out.append(f"{len(sized)} match the paper's size as well"
               + (f" ({', '.join(sized)})." if sized else "."))
    unstable = t[t["per history"].str.contains("does not hold") & (t["direction"] == "holds")]
    if len(unstable):
        out.append(f"Not stable across histories: {', '.join(unstable['claim'])}.")
    return out
