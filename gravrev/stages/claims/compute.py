"""Stage 07, claims: each claim of both paper versions against this run, per history and
pooled; claims.json holds the measured fields, the report words them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gravrev.claims.inputs import Missing, pool
from gravrev.claims.preregistered import (
    BASELINE_ARM,
    BLOCK_ARM,
    HOLD_STILL_ARM,
    ORDER_MEASURES,
    PUSH_ARM,
    REHEARSAL_ARM,
)
from gravrev.claims.rules import claims_report
from gravrev.claims.schema import load_paper_claims, validate_report
from gravrev.config.load import Config
from gravrev.stages.blocking.metrics import BlockingMetrics
from gravrev.stages.finetune.metrics import FinetuneMetrics
from gravrev.store.atomic import read_json, write_json
from gravrev.store.paths import Paths

STAGES = ("history", "finetune", "alignment", "nulls", "blocking")
OPTIONAL = ("mediation", "sweep")  # the readout and the context, when their stage ran


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


def _blocked(block: BlockingMetrics, arm: str, history: str | None, tolerance: float) -> dict:
    """The first version's blocked claims, judged on `arm` against the baseline."""
    ids = ("final_alignment_blocked", "harmfulness_blocked", "task_cost")
    if arm not in block.arms or BASELINE_ARM not in block.arms:
        gone = Missing(f"blocking.json has no {arm!r} arm beside {BASELINE_ARM!r} (stage "
                       f"blocking did not run it in preset {block.preset!r}).")
        return dict.fromkeys(ids, gone)

    def pair(measure: str) -> dict:
        b = _runs(block.arms[arm].per_run[measure], history)
        u = _runs(block.arms[BASELINE_ARM].per_run[measure], history)
        keys = sorted(b)
        return {"blocked": [b[k] for k in keys], "unblocked": [u[k] for k in keys]}

    return dict(zip(ids, (pair("alignment"), pair("non_refusal"),
                          {**pair("benign_accuracy"), "tolerance": tolerance}), strict=True))


def _arm_runs(block: BlockingMetrics, arms: tuple[str, ...], measures: tuple[str, ...],
              history: str | None) -> dict | Missing:
    """Each arm's per-run values, "arm:measure" -> list over the runs every arm has."""
    absent = [a for a in arms if a not in block.arms]
    if absent:
        return Missing(f"blocking.json has no {', '.join(map(repr, absent))} arm (stage blocking "
                       f"did not run it in preset {block.preset!r}).")
    have = [x for x in measures if all(x in block.arms[a].per_run for a in arms)]
    if not have:
        return Missing(f"blocking.json's arms {', '.join(arms)} hold none of "
                       f"{', '.join(measures)} per run.")
    runs = [_runs(block.arms[a].per_run[x], history) for a in arms for x in have]
    keys = sorted(set.intersection(*(set(r) for r in runs)))
    if not keys:
        return Missing(f"the arms {', '.join(arms)} share no run"
                       + (f" in {history}." if history else "."))
    return {f"{a}:{x}": [block.arms[a].per_run[x][k] for k in keys] for a in arms for x in have}


def _revised(m: Inputs, history: str | None, span: float) -> dict:
    """The inputs of the revised version's claims, or why each is missing; `span`: the logged
    steps' span (T), which turns an area under non-refusal into its mean level."""
    block, out = m.blocking, {}
    order = _arm_runs(block, (BLOCK_ARM, BASELINE_ARM, PUSH_ARM), ORDER_MEASURES, history)
    out["block_baseline_push"] = order if isinstance(order, Missing) else {**order,
                                                                          "span": span}
    rehearsal = _arm_runs(block, (REHEARSAL_ARM, BASELINE_ARM), ("cumulative_reversion",),
                          history)
    out["rehearsal_opposes"] = rehearsal if isinstance(rehearsal, Missing) else {
        "rehearsal": rehearsal[f"{REHEARSAL_ARM}:cumulative_reversion"],
        "baseline": rehearsal[f"{BASELINE_ARM}:cumulative_reversion"]}
    hs = [history] if history else list(m.finetune.histories)
    corr = m.alignment.get("alignment_harm", {}).get("per_history", {})
    if not all(h in corr for h in hs):
        out["alignment_harm_correlation"] = Missing(
            "alignment.json has no alignment_harm correlation for every history (stage vrev "
            "did not produce it).")
    else:
        out["alignment_harm_correlation"] = {
            "rho": [corr[h]["rho_non_refusal"] for h in hs],
            "p": [corr[h].get("p_non_refusal") for h in hs],  # absent before issue 22's fix
            "rho_harmful_compliance": [corr[h]["rho_harmful_compliance"] for h in hs],
            "p_harmful_compliance": [corr[h].get("p_harmful_compliance") for h in hs],
            "at_bound_non_refusal": [corr[h]["at_bound_non_refusal"] for h in hs],
            "at_bound_harmful_compliance": [corr[h]["at_bound_harmful_compliance"] for h in hs],
            "n_steps": [corr[h]["n_steps"] for h in hs]}
    null = m.nulls.get("matched_null")
    if null is None:
        out["matched_null_every_trajectory"] = Missing(
            "nulls.json has no matched_null (stage nulls did not produce it).")
    else:
        runs = _runs(null["per_trajectory"], history)
        keys = sorted(runs)
        out["matched_null_every_trajectory"] = {
            # the nulls stage names the flag all_steps_exceed; all_exceed is the brief's name
            "all_exceed": [runs[k].get("all_steps_exceed", runs[k].get("all_exceed"))
                           for k in keys],
            "n_exceed": [runs[k]["n_exceed"] for k in keys],
            "n_steps": [runs[k]["n_steps"] for k in keys]}
    readout = m.optional.get("mediation", {}).get("readout", {}).get("per_history", {})
    if not all(h in readout for h in hs):
        out["vocabulary_readout"] = Missing(
            "mediation.json has no readout for every history (stage mediation did not "
            "produce it" + ("" if "mediation" in m.optional else ": it did not run") + ").")
    else:
        out["vocabulary_readout"] = {
            field: [readout[h][field] for h in hs]
            for field in ("lens_score", "lens_percentile", "change_score", "change_percentile",
                          "n_null")}
    return out


def gather(m: Inputs, cfg: Config, history: str | None = None, arm: str = BLOCK_ARM) -> dict:
    """The inputs of every claim's rule, for one history or pooled (None); the first
    version's blocked claims on `arm`."""
    align, nulls, fine = m.alignment, m.nulls, m.finetune
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
    out.update(_blocked(m.blocking, arm, history, cfg.blocking.task_cost_tolerance))
    out.update(_revised(m, history, float(cfg.finetune.steps)))
    return out


@dataclass
class ClaimsResult:
    """claims.json as written: every claim's measured fields and verdicts, no words."""

    report: dict


VARIANT_CLAIMS = ("final_alignment_blocked", "harmfulness_blocked", "task_cost")


def _judge(typed: Inputs, cfg: Config, arm: str) -> tuple[dict, dict[str, dict[str, dict]]]:
    """Every claim pooled over histories and per history, the blocked claims on `arm`."""
    inputs = {h: gather(typed, cfg, h, arm) for h in cfg.histories}
    measured, groups = pool(inputs)  # the history is the grouping factor of pooled verdicts
    pooled = claims_report(measured, cfg.preset, groups=groups,
                           n_runs=len(cfg.histories) * len(cfg.finetune.seeds))
    per = {h: {e["id"]: e for e in claims_report(inputs[h], cfg.preset,
                                                  n_runs=len(cfg.finetune.seeds))["claims"]}
           for h in cfg.histories}
    return pooled, per


def _per_history(per: dict[str, dict[str, dict]], cid: str) -> dict[str, dict]:
    return {h: {"verdict": e[cid]["verdict"], "size_verdict": e[cid]["size_verdict"],
                "measured": e[cid]["measured"]} for h, e in per.items()}


ARM_MEASURES = ("non_refusal", "harmful_compliance", "new_task_accuracy")


def _mean_or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def arm_means(m: Inputs) -> dict[str, dict]:
    """Each blocking arm's means at T that the reasons and the context cite."""
    return {a: {**{x: _mean_or_none(getattr(arm, x).mean) for x in ARM_MEASURES},
                "task_cost_not_block": arm.task_cost_not_block}
            for a, arm in m.blocking.arms.items()}


def context(m: Inputs) -> dict:
    """What the run measured around the claims: histories, runs, non-refusal at θ_S and at T,
    the regime against its own rule, the sweep's outcome (None when it did not run)."""
    fine = m.finetune
    hs = list(fine.histories)
    return {"n_histories": len(hs),
            "n_runs": sum(len(fine.refusal_at_T(h)) for h in hs),
            "safe_non_refusal": 100 - _mean(fine.histories[h].safe_start["refusal_rate"]
                                            for h in hs),
            "end_non_refusal": 100 - _mean(r for h in hs for r in fine.refusal_at_T(h)),
            "regime": {**fine.regime.to_json(),
                       "grid_chose_nothing": bool(fine.search.confirmed_histories)
                       and fine.search.choice is None},
            "sweep_outcome": m.optional.get("sweep", {}).get("outcome")}


def run(cfg: Config, paths: Paths) -> ClaimsResult:
    """Evaluate every claim of both versions pooled and per history; write claims.json."""
    metrics = {k: read_json(paths.metrics_file(k)) for k in STAGES}
    optional = {k: read_json(paths.metrics_file(k)) for k in OPTIONAL
                if paths.metrics_file(k).is_file()}
    typed = Inputs.from_json({**metrics, **optional})
    pooled, per = _judge(typed, cfg, BLOCK_ARM)
    validate_report(pooled)
    claims = {c["id"]: c for c in load_paper_claims()}
    for entry in pooled["claims"]:
        entry["per_history"] = _per_history(per, entry["id"])
        entry["source"] = claims[entry["id"]].get("source")
    if HOLD_STILL_ARM in typed.blocking.arms:  # the hold-still penalty, shown beside the block
        held, held_per = _judge(typed, cfg, HOLD_STILL_ARM)
        for entry, variant in zip(pooled["claims"], held["claims"], strict=True):
            if entry["id"] in VARIANT_CLAIMS:
                entry["variants"] = {HOLD_STILL_ARM: {
                    **{k: variant[k] for k in ("verdict", "size_verdict", "measured", "rule")},
                    "per_history": _per_history(held_per, entry["id"])}}
    pooled["n_histories"] = len(cfg.histories)
    pooled["context"] = context(typed)
    pooled["arms"] = arm_means(typed)
    aniso = metrics["nulls"]["exceedance"]["all"].get("anisotropic", {})
    pooled["anisotropic_exceedance"] = {k: aniso.get(k) for k in ("k", "n")}
    pooled["harm_measure"] = "non-refusal (100 - refusal rate) on held-out harmful requests"
    write_json(paths.metrics_file("claims"), pooled)
    return load(cfg, paths)


def load(cfg: Config, paths: Paths) -> ClaimsResult:
    """Read stage 07's outputs back."""
    return ClaimsResult(read_json(paths.metrics_file("claims")))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)
