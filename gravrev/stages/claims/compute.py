"""Stage 07, claims: each paper claim against this run, per history and pooled, with a why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from gravrev.claims.inputs import pool
from gravrev.claims.rules import claims_report
from gravrev.claims.schema import load_paper_claims, validate_report
from gravrev.claims.thresholds import kept_refusal
from gravrev.claims.why import fmt_measured, paper_text, why
from gravrev.config.load import Config
from gravrev.stages.blocking.metrics import BlockingMetrics
from gravrev.stages.finetune.metrics import FinetuneMetrics
from gravrev.store.atomic import read_json, write_json
from gravrev.store.paths import Paths

STAGES = ("history", "finetune", "alignment", "nulls", "blocking")
OPTIONAL = ("mediation", "sweep")  # read for the conclusion when their stage ran


@dataclass(frozen=True)
class Inputs:
    """The other stages' metrics the claims read: the training stages' typed, the analysis
    stages' (alignment, nulls) and the optional ones as their JSON."""

    alignment: dict[str, Any]
    nulls: dict[str, Any]
    finetune: FinetuneMetrics
    blocking: BlockingMetrics
    optional: dict[str, dict[str, Any]]  # mediation, sweep: those whose stage ran

    @classmethod
    def from_json(cls, metrics: dict[str, dict[str, Any]]) -> Inputs:
        return cls(metrics["alignment"], metrics["nulls"],
                   FinetuneMetrics.from_json(metrics["finetune"]),
                   BlockingMetrics.from_json(metrics["blocking"]),
                   {k: metrics[k] for k in OPTIONAL if k in metrics})


def _runs(per_run: dict, history: str | None) -> dict[str, float]:
    """The entries of a {'h/seed': value} map that belong to `history` (all when None)."""
    return {k: v for k, v in per_run.items() if history is None or k.split("/")[0] == history}


def _at(per_run: dict, steps: list[int], step: int, history: str | None) -> list[float] | None:
    if step not in steps:
        return None
    i = steps.index(step)
    return [v[i] for v in _runs(per_run, history).values()]


def gather(m: Inputs, cfg: Config, history: str | None = None) -> dict:
    """The inputs of every claim's rule, for one history or pooled (None)."""
    align, nulls, fine, block = m.alignment, m.nulls, m.finetune, m.blocking
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
    hs = [history] if history else list(fine.histories)
    finetuned = [100 - r for h in hs for r in fine.refusal_at_T(h)]
    safe = [100 - fine.histories[h].safe_start["refusal_rate"] for h in hs]
    out["harmfulness_unblocked"] = {"finetuned": finetuned, "safe": sum(safe) / len(safe)}
    arms = block.arms
    arm = cfg.blocking.claim_arm
    if arm in arms:
        def pair(measure: str) -> dict:
            b = _runs(arms[arm].per_run[measure], history)
            u = _runs(arms["unblocked"].per_run[measure], history)
            keys = sorted(b)
            return {"blocked": [b[k] for k in keys], "unblocked": [u[k] for k in keys]}

        out["final_alignment_blocked"] = pair("alignment")
        out["harmfulness_blocked"] = pair("non_refusal")
        out["task_cost"] = {**pair("benign_accuracy"),
                            "tolerance": cfg.blocking.task_cost_tolerance}
    return out


@dataclass
class ClaimsResult:
    """What chapter 07 and the claims page show."""

    report: dict
    table: pd.DataFrame  # claim, paper, this run, direction, size, why, per history
    conclusion: str


def run(cfg: Config, paths: Paths) -> ClaimsResult:
    """Evaluate every claim pooled and per history; write data/metrics/claims.json."""
    metrics = {k: read_json(paths.metrics_file(k)) for k in STAGES}
    optional = {k: read_json(paths.metrics_file(k)) for k in OPTIONAL
                if paths.metrics_file(k).is_file()}
    typed = Inputs.from_json({**metrics, **optional})
    inputs = {h: gather(typed, cfg, h) for h in cfg.histories}
    measured, groups = pool(inputs)  # the history is the grouping factor of pooled verdicts
    pooled = claims_report(measured, cfg.preset, groups=groups,
                           n_runs=len(cfg.histories) * len(cfg.finetune.seeds))
    validate_report(pooled)
    per = {h: {e["id"]: e for e in claims_report(inputs[h], cfg.preset,
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
    pooled["conclusion"] = conclusion(typed)
    pooled["harm_measure"] = "non-refusal (100 - refusal rate) on held-out harmful requests"
    write_json(paths.metrics_file("claims"), pooled)
    return load(cfg, paths)


def load(cfg: Config, paths: Paths) -> ClaimsResult:
    """Read stage 07's outputs back."""
    report = read_json(paths.metrics_file("claims"))
    rows = []
    for c in report["claims"]:
        rows.append({
            "claim": c["id"], "paper": paper_text(c["paper"]),
            "this run": fmt_measured(c["measured"]),
            "direction": c["verdict"], "size": c["size_verdict"],
            "per history": ", ".join(f"{h}: {e['verdict']}" for h, e in c["per_history"].items()),
            "why": c["why"],
        })
    return ClaimsResult(report, pd.DataFrame(rows), report["conclusion"])


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def conclusion(m: Inputs) -> str:
    """The run's answer to the paper in one paragraph; every clause chosen by a measurement."""
    fine, align, nulls, block = m.finetune, m.alignment, m.nulls, m.blocking
    hs = list(fine.histories)
    safe = _mean(fine.histories[h].safe_start["refusal_rate"] for h in hs)
    end = _mean(r for h in hs for r in fine.refusal_at_T(h))
    n_runs = sum(len(fine.refusal_at_T(h)) for h in hs)
    lost = safe - end
    reverts = lost >= 0.5 * safe if safe > 0 else False
    out = [f"In this organism ({len(hs)} independent histories, {n_runs} fine-tuning runs), "
           f"benign fine-tuning on harmless data "
           f"{'undoes' if reverts else 'partly undoes' if lost > 10 else 'does not undo'} "
           f"safety alignment: refusal falls from {safe:.0f}% at theta_S to {end:.0f}% at T."]
    e = nulls["exceedance"]["all"]
    last = str(align["steps"][-1])
    a_t = align["by_step"]["all"][last]["mean"]
    beats = e["isotropic"]["k"] == e["isotropic"]["n"]
    out.append(f"The drift {'aligns' if a_t > nulls['isotropic_closed_form'] else 'does not align'}"
               f" with v_rev ({a_t:.2f} at T; {e['isotropic']['k']} of {e['isotropic']['n']} "
               f"run-step pairs above the isotropic p99, {e['anisotropic']['k']} above the "
               "covariance-matched null)"
               + (", as the paper reports." if beats else ", less uniformly than the paper."))
    carries = None
    if "mediation" in m.optional:
        med = m.optional["mediation"]["histories"]
        before = _mean(h["refusal_safe"] for h in med.values())
        after = _mean(h["ablated_at_layer"] for h in med.values())
        carries = before - after >= 0.5 * before if before > 0 else None
        if carries is not None:
            out.append(f"v_rev {'carries' if carries else 'does not carry'} refusal: "
                       f"projecting it out of theta_S's residual stream at the analysed layer "
                       f"takes refusal from {before:.0f}% to {after:.0f}%.")
    arms = block.arms
    c, u = arms[block.claim_arm], arms["unblocked"]
    held = c.alignment.mean < u.alignment.mean - 0.1
    kept = kept_refusal(c.non_refusal.mean, u.non_refusal.mean)
    learned = not c.task_cost_not_block
    block_text = (f"Blocking motion along v_rev during fine-tuning "
                  f"{'held' if held else 'did not hold'} alignment ({c.alignment.mean:.2f} "
                  f"against {u.alignment.mean:.2f}) and "
                  f"{'kept' if kept else 'did not keep'} refusal (non-refusal "
                  f"{c.non_refusal.mean:.0f}% against {u.non_refusal.mean:.0f}%)"
                  + ("" if learned else ", and it stopped the new task being learned"))
    out.append(block_text + ".")
    aligned = a_t > nulls["isotropic_closed_form"]
    others = {a: x for a, x in arms.items() if a not in ("unblocked", block.claim_arm)
              and not x.task_cost_not_block}
    best = min(others, key=lambda a: others[a].non_refusal.mean, default=None)
    if best is not None and kept_refusal(others[best].non_refusal.mean, u.non_refusal.mean):
        out.append(f"Of the other arms, {best} kept the most refusal (non-refusal "
                   f"{others[best].non_refusal.mean:.0f}%, new task "
                   f"{others[best].new_task_accuracy.mean:.0f}%).")
    if reverts and aligned and kept and learned:
        verdict = "So the paper's mechanism is reproduced here, blocking included."
    elif reverts and aligned and not kept:
        verdict = ("So the paper's picture is reproduced in part: reversion happens, the drift "
                   "aligns with v_rev" + (" and v_rev carries refusal" if carries else "")
                   + ", but holding the drift still along v_rev at the analysed layer does not "
                   "stop reversion; chapters 05 and 06 show where it goes instead.")
    else:
        verdict = "So this organism does not reproduce the paper's mechanism as a whole."
    out.append(verdict)
    if "sweep" in m.optional:
        out.append(f"Beyond the paper, the history-depth sweep: {m.optional['sweep']['outcome']} "
                   "(chapter 08).")
    return " ".join(out)
