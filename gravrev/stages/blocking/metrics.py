"""Stage 05's measurements, from its saved runs: per-arm summaries, strength, paired effects."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import alignment_trajectory
from gravrev.stages.artifacts import load_v_rev, probe_selection
from gravrev.stats.summaries import paired_test, summarize, wilson_interval
from gravrev.store.atomic import read_json, read_npz, write_json
from gravrev.store.paths import Paths

MEASURES = ("alignment", "non_refusal", "harmful_compliance", "prefilled_content",
            "benign_accuracy", "new_task_accuracy")


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


@dataclass(frozen=True)
class ArmMetrics:
    """One arm at T over histories and seeds."""

    alignment: Summary
    non_refusal: Summary
    harmful_compliance: Summary
    prefilled_content: Summary
    benign_accuracy: Summary
    new_task_accuracy: Summary
    non_refusal_pooled_wilson: tuple[float, float]  # percent, refusals pooled over runs
    task_cost_not_block: bool  # every run failed to learn the new task
    per_run: dict[str, dict[str, float]]  # measure -> "history/seed" -> value

    def to_json(self) -> dict:
        return {**{m: asdict(getattr(self, m)) for m in MEASURES},
                "non_refusal_pooled_wilson": list(self.non_refusal_pooled_wilson),
                "task_cost_not_block": self.task_cost_not_block, "per_run": self.per_run}

    @classmethod
    def from_json(cls, d: dict) -> ArmMetrics:
        return cls(**{m: Summary.from_json(d[m]) for m in MEASURES},
                   non_refusal_pooled_wilson=tuple(d["non_refusal_pooled_wilson"]),
                   task_cost_not_block=d["task_cost_not_block"], per_run=d["per_run"])


@dataclass(frozen=True)
class BlockingMetrics:
    """data/metrics/blocking.json: the chosen lambda and every arm at T."""

    preset: str
    lam: float
    manipulation_check: str  # "passed", or "failed: ..." with the reason
    layer: int
    claim_arm: str
    arms: dict[str, ArmMetrics]  # in the order of final.csv, unblocked last

    def to_json(self) -> dict:
        return {"preset": self.preset, "lambda": self.lam,
                "manipulation_check": self.manipulation_check, "layer": self.layer,
                "claim_arm": self.claim_arm,
                "arms": {a: m.to_json() for a, m in self.arms.items()}}

    @classmethod
    def from_json(cls, d: dict) -> BlockingMetrics:
        return cls(d["preset"], d["lambda"], d["manipulation_check"], d["layer"], d["claim_arm"],
                   {a: ArmMetrics.from_json(m) for a, m in d["arms"].items()})


@dataclass
class BlockingResult:
    """What chapter 05 shows."""

    calibration: pd.DataFrame  # lambda, history: alignment at T, new-task cost
    lam: float
    check: str
    final: pd.DataFrame  # arm, history, seed at T: the measures, projections, task-cost flag
    strength: pd.DataFrame  # arm: achieved projection reduction along its own direction
    effects: pd.DataFrame  # arm, measure: paired difference against unblocked
    trajectories: pd.DataFrame  # arm, history, seed, step: alignment (analysed cell)
    metrics: BlockingMetrics


def strength_table(final: pd.DataFrame) -> pd.DataFrame:
    """Achieved reduction of the drift's projection on each arm's own direction, vs unblocked."""
    df = final.dropna(subset=["projection"]).copy()
    df["reduction"] = 1 - df["projection"].abs() / df["projection_unblocked"].abs()
    return df.groupby("arm", sort=False)["reduction"].agg(["mean", "std", "count"]).reset_index()


def paired_effects(final: pd.DataFrame) -> pd.DataFrame:
    """Each arm against unblocked, paired by history and seed."""
    base = final[final["arm"] == "unblocked"].set_index(["history", "seed"]).sort_index()
    rows = []
    for arm, g in final[final["arm"] != "unblocked"].groupby("arm", sort=False):
        cur = g.set_index(["history", "seed"]).sort_index().loc[base.index]
        for m in MEASURES:
            rows.append({"arm": arm, "measure": m,
                         **paired_test(cur[m].to_numpy(), base[m].to_numpy())})
    return pd.DataFrame(rows)


def arm_metrics(f: pd.DataFrame) -> ArmMetrics:
    """One arm's runs at T (rows of final.csv), summarised."""
    k, n = int(f["refusals"].sum()), int(f["n_harmful"].sum())
    lo, hi = wilson_interval(n - k, n)
    return ArmMetrics(
        **{m: Summary(**summarize(f[m].to_numpy())) for m in MEASURES},
        non_refusal_pooled_wilson=(100 * lo, 100 * hi),
        task_cost_not_block=bool(f["task_cost_not_block"].all()),
        per_run={m: {f"{r.history}/{r.seed}": getattr(r, m) for r in f.itertuples()}
                 for m in MEASURES},
    )


def blocking_metrics(cfg: Config, final: pd.DataFrame, lam: float, check: str
                     ) -> BlockingMetrics:
    """Every arm of final.csv at the chosen lambda."""
    arms = {arm: arm_metrics(f) for arm, f in final.groupby("arm", sort=False)}
    return BlockingMetrics(cfg.preset, lam, check, cfg.layer, cfg.blocking.claim_arm, arms)


def measure(cfg: Config, paths: Paths) -> None:
    """data/metrics/blocking.json from the saved runs' state at T and the chosen lambda."""
    folder = paths.stage("blocking")
    chosen = read_json(folder / "lambda.json")
    final = pd.read_csv(folder / "final.csv", float_precision="round_trip")  # the run's floats
    metrics = blocking_metrics(cfg, final, chosen["lambda"], chosen["check"])
    write_json(paths.metrics_file("blocking"), metrics.to_json())


def load(cfg: Config, paths: Paths) -> BlockingResult:
    """Read stage 05's runs and metrics back."""
    metrics = BlockingMetrics.from_json(read_json(paths.metrics_file("blocking")))
    folder = paths.stage("blocking")
    final = pd.read_csv(folder / "final.csv")
    return BlockingResult(
        pd.read_csv(folder / "calibration.csv"), metrics.lam, metrics.manipulation_check, final,
        strength_table(final), paired_effects(final), _trajectories(cfg, paths, final), metrics,
    )


def _trajectories(cfg: Config, paths: Paths, final: pd.DataFrame) -> pd.DataFrame:
    mask = probe_selection(cfg, paths)
    pos = cfg.analysis.position
    v_rev = {h: load_v_rev(cfg, paths, h) for h in final["history"].unique()}
    rows = []
    for r in final[["arm", "history", "seed"]].drop_duplicates().itertuples():
        stage = "finetune" if r.arm == "unblocked" else "blocking"
        acts = read_npz(paths.run(stage, r.history, r.arm, r.seed))
        df = alignment_trajectory(acts[pos], acts["steps"], v_rev[r.history], mask)
        rows.append(df[df["layer"] == cfg.layer].assign(arm=r.arm, history=r.history,
                                                          seed=r.seed))
    return pd.concat(rows, ignore_index=True)
