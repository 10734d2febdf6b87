"""Stage 05's measurements, from its saved runs: per-arm summaries over T and over the logged
steps, strength, paired effects and the ordering block < baseline < push."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import drift, probe_mask, refusal_direction
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stages.blocking.shock import shock_arm
from gravrev.stats.nulls import cosine
from gravrev.stats.summaries import paired_test, summarize, wilson_interval
from gravrev.stats.trajectories import at_bound, cumulative_reversion
from gravrev.store.atomic import atomic_dir, read_json, read_npz, write_csv, write_json
from gravrev.store.paths import Paths

MEASURES = ("alignment", "non_refusal", "harmful_compliance", "prefilled_content",
            "benign_accuracy", "new_task_accuracy", "cumulative_reversion", "area_non_refusal")
AREAS = ("cumulative_reversion", "area_non_refusal")  # absent from metrics before issue 22
# The ordering block < baseline < push is judged on these; the percentages can sit at a bound.
ORDER_MEASURES = ("alignment", "non_refusal", "harmful_compliance", "cumulative_reversion",
                  "area_non_refusal")
BASELINE = "unblocked"
ORDERED = ("block", BASELINE, "push")


@dataclass(frozen=True)
class Summary:
    """summarize()'s mean, sd, n and 95% t interval of one measure over runs (NaN: undefined)."""

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float

    @classmethod
    def from_json(cls, d: dict) -> Summary:
        return cls(**{k: float("nan") if v is None else v for k, v in d.items()})

    @property
    def excludes_zero(self) -> int:
        """+1 when the 95% interval lies above 0, -1 below, 0 otherwise (the one sign rule)."""
        return 1 if self.ci_low > 0 else -1 if self.ci_high < 0 else 0


def finite(values) -> list[float]:
    """The values that were measured: None and NaN (a measure the setting lacks) dropped."""
    return [float(x) for x in values if x is not None and math.isfinite(x)]


def summary(values) -> Summary:
    """summarize() over the measured values; all NaN (n = 0) where none was measured."""
    kept = finite(values)
    if not kept:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    return Summary(**summarize(kept))


@dataclass(frozen=True)
class ArmMetrics:
    """One arm at T (and over the logged steps: the areas) over histories and seeds."""

    alignment: Summary
    non_refusal: Summary
    harmful_compliance: Summary
    prefilled_content: Summary
    benign_accuracy: Summary
    new_task_accuracy: Summary
    cumulative_reversion: Summary | None  # None in metrics written before issue 22
    area_non_refusal: Summary | None
    non_refusal_pooled_wilson: tuple[float, float]  # percent, refusals pooled over runs
    task_cost_not_block: bool  # every run failed to learn the new task
    per_run: dict[str, dict[str, float]]  # measure -> "history/seed" -> value

    def to_json(self) -> dict:
        return {**{m: asdict(getattr(self, m)) for m in MEASURES},
                "non_refusal_pooled_wilson": list(self.non_refusal_pooled_wilson),
                "task_cost_not_block": self.task_cost_not_block, "per_run": self.per_run}

    @classmethod
    def from_json(cls, d: dict) -> ArmMetrics:
        return cls(**{m: Summary.from_json(d[m]) if m in d else None for m in MEASURES},
                   non_refusal_pooled_wilson=tuple(d["non_refusal_pooled_wilson"]),
                   task_cost_not_block=d["task_cost_not_block"], per_run=d["per_run"])


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
class HistoryOrder:
    """One history's means over its seeds of block, baseline and push."""

    block: float
    baseline: float
    push: float

    @property
    def ordered(self) -> bool:
        return self.block < self.baseline < self.push


@dataclass(frozen=True)
class Ordering:
    """block < baseline < push on one measure: per history, and pooled with the history as
    the unit (paired differences averaged per history, t interval over histories)."""

    per_history: dict[str, HistoryOrder]
    baseline_minus_block: Summary
    push_minus_baseline: Summary
    at_bound: bool  # the measure sits at its floor or ceiling in most runs of the three arms

    @property
    def ordered(self) -> bool:
        """Both pooled intervals exclude 0 above it."""
        return (self.baseline_minus_block.excludes_zero == 1
                and self.push_minus_baseline.excludes_zero == 1)

    def to_json(self) -> dict:
        return {"per_history": {h: asdict(o) for h, o in self.per_history.items()},
                "baseline_minus_block": asdict(self.baseline_minus_block),
                "push_minus_baseline": asdict(self.push_minus_baseline),
                "at_bound": self.at_bound, "ordered": self.ordered}

    @classmethod
    def from_json(cls, d: dict) -> Ordering:
        return cls({h: HistoryOrder(**o) for h, o in d["per_history"].items()},
                   Summary.from_json(d["baseline_minus_block"]),
                   Summary.from_json(d["push_minus_baseline"]), d["at_bound"])


@dataclass(frozen=True)
class ShockMetrics:
    """The claim arms in the shock regime (stages.blocking.shock): each arm, the ordering."""

    lr: float
    warmup: int
    steps: int
    arms: dict[str, ArmMetrics]  # unblocked and the shock regime's arms
    ordering: dict[str, Ordering]

    def to_json(self) -> dict:
        return {"lr": self.lr, "warmup": self.warmup, "steps": self.steps,
                "arms": {a: m.to_json() for a, m in self.arms.items()},
                "ordering": {m: o.to_json() for m, o in self.ordering.items()}}

    @classmethod
    def from_json(cls, d: dict) -> ShockMetrics:
        return cls(d["lr"], d["warmup"], d["steps"],
                   {a: ArmMetrics.from_json(m) for a, m in d["arms"].items()},
                   {m: Ordering.from_json(o) for m, o in d["ordering"].items()})


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


def history_means(per_run: dict[str, float]) -> dict[str, float]:
    """Per-run values keyed "history/seed" -> each history's mean over its measured seeds."""
    groups: dict[str, list[float]] = {}
    for key, value in per_run.items():
        if finite([value]):
            groups.setdefault(key.rsplit("/", 1)[0], []).append(value)
    return {h: float(np.mean(v)) for h, v in groups.items()}


def paired_by_history(a: dict[str, float], b: dict[str, float]) -> Summary:
    """a - b paired by run, averaged within each history, then a 95% t interval over the
    history means (histories - 1 df): the history is the unit of replication."""
    diff = {k: a[k] - b[k] for k in sorted(a) if k in b and len(finite([a[k], b[k]])) == 2}
    return summary(history_means(diff).values())


def percent_level(measure: str, value: float, span: float) -> float | None:
    """A run's value as a percentage that can sit at 0 or 100 (an area: its mean level over
    the span of logged steps); None for a measure without a floor or ceiling."""
    if measure in ("non_refusal", "harmful_compliance"):
        return value
    return value / span if measure == "area_non_refusal" else None


def ordering(arms: dict[str, ArmMetrics], span: float) -> dict[str, Ordering]:
    """block < baseline < push per measure, per history and pooled; {} without block or push.

    `span`: the logged steps' span (T), which turns the area under non-refusal into a level.
    """
    if not all(a in arms for a in ORDERED):
        return {}
    out = {}
    for m in ORDER_MEASURES:
        runs = {a: arms[a].per_run.get(m, {}) for a in ORDERED}
        if not all(finite(r.values()) for r in runs.values()):
            continue  # not measured in this setting: no ordering to judge
        means = {a: history_means(r) for a, r in runs.items()}
        level = [percent_level(m, v, span) for r in runs.values() for v in r.values()]
        out[m] = Ordering(
            per_history={h: HistoryOrder(means["block"][h], means[BASELINE][h], means["push"][h])
                         for h in means[BASELINE]},
            baseline_minus_block=paired_by_history(runs[BASELINE], runs["block"]),
            push_minus_baseline=paired_by_history(runs["push"], runs[BASELINE]),
            at_bound=None not in level and at_bound(level),
        )
    return out


def arm_metrics(f: pd.DataFrame) -> ArmMetrics:
    """One arm's runs (rows of final.csv with their areas), summarised."""
    k, n = int(f["refusals"].sum()), int(f["n_harmful"].sum())
    lo, hi = wilson_interval(n - k, n)
    return ArmMetrics(
        **{m: summary(f[m].to_numpy()) for m in MEASURES},
        non_refusal_pooled_wilson=(100 * lo, 100 * hi),
        task_cost_not_block=bool(f["task_cost_not_block"].all()),
        per_run={m: {f"{r.history}/{r.seed}": getattr(r, m) for r in f.itertuples()
                     if finite([getattr(r, m)])} for m in MEASURES},
    )


def blocking_metrics(cfg: Config, final: pd.DataFrame, lam: float, check: str,
                     matched: dict[str, Matched] | None = None) -> BlockingMetrics:
    """Every arm of final.csv (with its areas) at the chosen lambda; the ordering."""
    arms = {arm: arm_metrics(f) for arm, f in final.groupby("arm", sort=False)}
    return BlockingMetrics(cfg.preset, lam, check, cfg.layer, cfg.blocking.claim_arm, arms,
                           dict(matched or {}), ordering(arms, cfg.finetune.steps))


def run_curve(cfg: Config, acts: dict, log: pd.DataFrame, v: np.ndarray,
              mask: np.ndarray) -> pd.DataFrame:
    """One run over its logged steps (0 included): the harmful probes' drift's projection on
    and alignment with v_rev at the analysed cell, and its judged behaviour at each step."""
    a = acts[cfg.analysis.position][:, cfg.layer]  # (S, N, d), row 0 theta_S
    d = drift(a, a[0], mask)  # (S, d); step 0's is 0
    steps = acts["steps"].astype(int)
    rows = log.set_index("step").loc[steps]
    new = f"{cfg.finetune.new_task}_accuracy"
    if new not in rows:  # a setting without a new task (hf)
        rows = rows.assign(**{new: math.nan})
    return pd.DataFrame({
        "step": steps, "projection": d @ v,
        "alignment": [cosine(x, v) if np.linalg.norm(x) > 0 else math.nan for x in d],
        "non_refusal": 100 - rows["refusal_rate"].to_numpy(),
        "harmful_compliance": rows["harmful_compliance"].to_numpy(),
        "new_task_accuracy": rows[new].to_numpy(),
    })


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


def areas(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run: cumulative reversion and the area under non-refusal over its logged steps."""
    rows = []
    for (arm, h, seed), c in curve.groupby(["arm", "history", "seed"], sort=False):
        a = cumulative_reversion(c["step"], c["projection"], c["non_refusal"])
        rows.append({"arm": arm, "history": h, "seed": seed, "cumulative_reversion": a.reversion,
                     "area_non_refusal": a.non_refusal})
    return pd.DataFrame(rows)


def shock_curves(cfg: Config, paths: Paths, final: pd.DataFrame) -> pd.DataFrame:
    """Every shock-regime run over its logged steps (stages.blocking.shock)."""
    mask = probe_selection(cfg, paths)
    v = {h: load_v_rev(cfg, paths, h)[cfg.layer] for h in final["history"].unique()}
    folder = paths.stage("blocking")
    logs = pd.read_csv(folder / "shock_log.csv").set_index(["arm", "history", "seed"])
    rows = []
    for r in final[["arm", "history", "seed"]].itertuples(index=False):
        acts = read_npz(folder / "shock" / r.history / f"{shock_arm(r.arm)}_seed{r.seed}.npz")
        c = run_curve(cfg, acts, logs.loc[(r.arm, r.history, r.seed)], v[r.history], mask)
        rows.append(c.assign(arm=r.arm, history=r.history, seed=r.seed))
    return pd.concat(rows, ignore_index=True)


def shock_metrics(cfg: Config, final: pd.DataFrame) -> ShockMetrics:
    """The shock regime's arms (final rows with their areas) and their ordering."""
    sc = cfg.regime.shock
    arms = {arm: arm_metrics(f) for arm, f in final.groupby("arm", sort=False)}
    return ShockMetrics(sc.lr, sc.warmup, sc.steps, arms, ordering(arms, sc.steps))


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
        shock=shock_metrics(cfg, shock))
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
