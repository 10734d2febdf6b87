"""Stage 05's measurements, from its saved runs: each arm summarised at T and over the logged
steps, strength, paired effects, the ordering (ordering) and the shock regime (shock.metrics)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import probe_mask, refusal_direction
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stages.blocking.curves import areas, run_curve
from gravrev.stages.blocking.ordering import BASELINE, Ordering, ordering
from gravrev.stages.blocking.shock.metrics import ShockMetrics, shock_curves, shock_metrics
from gravrev.stages.blocking.summaries import MEASURES, ArmMetrics, Summary, finite, summary
from gravrev.stats.nulls import cosine
from gravrev.stats.summaries import paired_test, summarize, wilson_interval
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json
from gravrev.store.paths import Paths


@dataclass(frozen=True)
class Matched:
    """A control's lambda, matched on achieved reduction to the arm it controls."""

    lam: float
    reduction: float  # the control's mean reduction at lam (first seed, every history)
    target: float  # the controlled arm's (same runs' design)
    reached: bool  # within MATCH_TOLERANCE of the target

    def to_json(self) -> dict:
        return {"lambda": self.lam, "reduction": self.reduction, "target": self.target,
                "reached": self.reached}

    @classmethod
    def from_json(cls, d: dict) -> Matched:
        def num(x: float | None) -> float:
            return math.nan if x is None else x

        return cls(d["lambda"], num(d["reduction"]), num(d["target"]), d["reached"])


@dataclass(frozen=True)
class BlockingMetrics:
    """data/metrics/blocking.json: the chosen lambdas, every arm, the ordering."""

    preset: str
    lam: float
    manipulation_check: str  # "passed", or "failed: ..." with the reason
    layer: int
    claim_arm: str
    arms: dict[str, ArmMetrics]  # in the order of final.csv, unblocked last
    matched: dict[str, Matched]  # control -> its matched lambda
    ordering: dict[str, Ordering]  # measure -> block < baseline < push; empty without both
    shock: ShockMetrics | None = None  # the claim arms in the shock regime

    def to_json(self) -> dict:
        return {"preset": self.preset, "lambda": self.lam,
                "manipulation_check": self.manipulation_check, "layer": self.layer,
                "claim_arm": self.claim_arm,
                "arms": {a: m.to_json() for a, m in self.arms.items()},
                "matched": {c: m.to_json() for c, m in self.matched.items()},
                "ordering": {m: o.to_json() for m, o in self.ordering.items()},
                "shock": None if self.shock is None else self.shock.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> BlockingMetrics:
        shock = d.get("shock")
        return cls(d["preset"], d["lambda"], d["manipulation_check"], d["layer"], d["claim_arm"],
                   {a: ArmMetrics.from_json(m) for a, m in d["arms"].items()},
                   {c: Matched.from_json(m) for c, m in d.get("matched", {}).items()},
                   {m: Ordering.from_json(o) for m, o in d.get("ordering", {}).items()},
                   None if shock is None else ShockMetrics.from_json(shock))


@dataclass
class BlockingResult:
    """What chapter 05 shows."""

    calibration: pd.DataFrame  # lambda, history: alignment at T, new-task cost
    matching: pd.DataFrame  # arm (a control), lambda, history: achieved reduction
    lam: float
    check: str
    final: pd.DataFrame  # arm, history, seed at T: the measures, projections, task-cost flag
    strength: pd.DataFrame  # arm: achieved projection reduction along its own direction
    effects: pd.DataFrame  # arm, measure: paired difference against unblocked
    curves: pd.DataFrame  # arm, history, seed, step: projection, alignment, behaviour
    directions: pd.DataFrame  # history: cos(v_rev, -r), the push's bound along v_rev
    metrics: BlockingMetrics
    shock_final: pd.DataFrame  # the shock regime's runs at T, with their areas
    shock_curves: pd.DataFrame  # the shock regime's runs over their logged steps


def measures_dir(paths: Paths) -> Path:
    """data/measures/blocking: the metrics step's tables (DVC forbids two writers of a folder)."""
    return paths.data / "measures" / "blocking"


def strength_table(final: pd.DataFrame) -> pd.DataFrame:
    """Achieved reduction along each arm's own direction(s), vs unblocked (runs.reduction)."""
    df = final.dropna(subset=["reduction"])
    return df.groupby("arm", sort=False)["reduction"].agg(["mean", "std", "count"]).reset_index()


def paired_effects(final: pd.DataFrame) -> pd.DataFrame:
    """Each arm against unblocked, the history as the unit: per history the mean over its
    seeds of the paired (same seed) differences, then the paired t test (histories - 1 df),
    its 95% interval and the exact sign-flip test over the histories; an unmeasured measure
    is skipped."""
    base = final[final["arm"] == BASELINE].set_index(["history", "seed"]).sort_index()
    rows = []
    for arm, g in final[final["arm"] != BASELINE].groupby("arm", sort=False):
        cur = g.set_index(["history", "seed"]).sort_index().loc[base.index]
        for m in MEASURES:
            if m not in cur:
                continue
            pairs = pd.DataFrame({"arm": cur[m], "base": base[m]}).dropna()
            if pairs.empty:
                continue
            by = pairs.groupby(level="history").mean()  # equal seeds: the mean difference
            diff = (by["arm"] - by["base"]).to_numpy()
            s = summarize(diff)
            rows.append({"arm": arm, "measure": m,
                         **paired_test(by["arm"].to_numpy(), by["base"].to_numpy()),
                         "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                         "n_runs": len(pairs)})
    return pd.DataFrame(rows)


def by_history(f: pd.DataFrame, measure: str) -> Summary:
    """One measure of an arm with the history as the unit: over the history means (histories
    - 1 df) with two histories or more, over the runs of the one history otherwise."""
    kept = f[[np.isfinite(float(x)) if x is not None else False for x in f[measure]]]
    if kept["history"].nunique() < 2:
        return summary(kept[measure].to_numpy())
    return summary(kept.groupby("history", sort=True)[measure].mean().to_numpy())


def arm_metrics(f: pd.DataFrame) -> ArmMetrics:
    """One arm's runs (rows of final.csv with their areas), summarised, the history the unit;
    the pooled Wilson interval over prompts and runs beside them is descriptive only."""
    k, n = int(f["refusals"].sum()), int(f["n_harmful"].sum())
    lo, hi = wilson_interval(n - k, n)
    return ArmMetrics(
        **{m: by_history(f, m) for m in MEASURES},
        non_refusal_pooled_wilson=(100 * lo, 100 * hi),
        task_cost_not_block=bool(f["task_cost_not_block"].all()),
        per_run={m: {f"{r.history}/{r.seed}": getattr(r, m) for r in f.itertuples()
                     if finite([getattr(r, m)])} for m in MEASURES},
    )


def arm_summaries(final: pd.DataFrame) -> dict[str, ArmMetrics]:
    """arm_metrics of every arm of final rows (with their areas), in their order."""
    return {arm: arm_metrics(f) for arm, f in final.groupby("arm", sort=False)}


def blocking_metrics(cfg: Config, final: pd.DataFrame, lam: float, check: str,
                     matched: dict[str, Matched] | None = None) -> BlockingMetrics:
    """Every arm of final.csv (with its areas) at the chosen lambda; the ordering."""
    arms = arm_summaries(final)
    return BlockingMetrics(cfg.preset, lam, check, cfg.layer, cfg.blocking.claim_arm, arms,
                           dict(matched or {}), ordering(arms, cfg.finetune.steps))


def curves(cfg: Config, paths: Paths, final: pd.DataFrame) -> pd.DataFrame:
    """Every run of final.csv over its logged steps (the unblocked runs' from stage finetune)."""
    mask = probe_selection(cfg, paths)
    v = {h: load_v_rev(cfg, paths, h)[cfg.layer] for h in final["history"].unique()}
    logs = pd.concat([pd.read_csv(paths.stage("blocking") / "log.csv"),
                      pd.read_csv(paths.stage("finetune") / "log.csv")], ignore_index=True)
    logs = logs.set_index(["arm", "history", "seed"]).sort_index()
    rows = []
    for r in final[["arm", "history", "seed"]].itertuples(index=False):
        stage = "finetune" if r.arm == BASELINE else "blocking"
        acts = read_npz(paths.run(stage, r.history, r.arm, r.seed))
        c = run_curve(cfg, acts, logs.loc[(r.arm, r.history, r.seed)], v[r.history], mask)
        rows.append(c.assign(arm=r.arm, history=r.history, seed=r.seed))
    cols = ["arm", "history", "seed", "step", "projection", "alignment", "non_refusal",
            "harmful_compliance", "new_task_accuracy"]
    return pd.concat(rows, ignore_index=True)[cols]


def measure(cfg: Config, paths: Paths) -> None:
    """data/metrics/blocking.json and data/measures/blocking/ (curves of both regimes)."""
    folder = paths.stage("blocking")
    chosen = read_json(folder / "lambda.json")
    final = pd.read_csv(folder / "final.csv", float_precision="round_trip")  # the run's floats
    shock = pd.read_csv(folder / "shock_final.csv", float_precision="round_trip")
    curve, shock_curve = curves(cfg, paths, final), shock_curves(cfg, paths, shock)
    with atomic_dir(measures_dir(paths)) as out:
        write_csv(out / "curves.csv", curve)
        write_csv(out / "shock_curves.csv", shock_curve)
    final = final.merge(areas(curve), on=["arm", "history", "seed"], how="left", sort=False)
    shock = shock.merge(areas(shock_curve), on=["arm", "history", "seed"], how="left",
                        sort=False)
    matched = {c: Matched.from_json(m) for c, m in chosen.get("matched", {}).items()}
    metrics = dataclasses.replace(
        blocking_metrics(cfg, final, chosen["lambda"], chosen["check"], matched),
        shock=shock_metrics(cfg, arm_summaries(shock)))
    write_json(paths.metrics_file("blocking"), metrics.to_json())


def load(cfg: Config, paths: Paths) -> BlockingResult:
    """Read stage 05's runs and metrics back."""
    metrics = BlockingMetrics.from_json(read_json(paths.metrics_file("blocking")))
    folder = paths.stage("blocking")
    curve = pd.read_csv(measures_dir(paths) / "curves.csv")
    final = pd.read_csv(folder / "final.csv").merge(
        areas(curve), on=["arm", "history", "seed"], how="left", sort=False)
    shock_curve = pd.read_csv(measures_dir(paths) / "shock_curves.csv")
    shock_final = pd.read_csv(folder / "shock_final.csv").merge(
        areas(shock_curve), on=["arm", "history", "seed"], how="left", sort=False)
    return BlockingResult(
        pd.read_csv(folder / "calibration.csv"), pd.read_csv(folder / "matching.csv"),
        metrics.lam, metrics.manipulation_check, final, strength_table(final),
        paired_effects(final), curve,
        directions(cfg, paths, read_json(folder / "lambda.json").get("push_targets", {})),
        metrics, shock_final, shock_curve,
    )


def directions(cfg: Config, paths: Paths, push_targets: dict[str, float]) -> pd.DataFrame:
    """Per history at the analysed cell: cos(v_rev, -r), r the refusal direction at theta_S
    (refusal_block's direction), and the push's bound (theta_H's displacement along v_rev)."""
    harmful = probe_mask(pd.read_csv(paths.probes), "harmful")
    rows = []
    for h in cfg.histories:
        safe = read_npz(paths.acts("safe", h))[cfg.analysis.position]
        r = refusal_direction(safe, harmful)[cfg.layer]
        rows.append({"history": h,
                     "cos_v_rev_minus_r": cosine(load_v_rev(cfg, paths, h)[cfg.layer], -r),
                     "push_target": push_targets.get(h, math.nan)})
    return pd.DataFrame(rows)
