"""The defenses stage's measurements: each arm's strength at matched task cost (harm-blind),
its harm reduction against baseline, the block against it, and its drift's cosine with v_rev."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.blocking.summaries import Summary, summary
from gravrev.store.atomic import atomic_dir, read_json, write_csv, write_json
from gravrev.store.paths import Paths

BASELINE = "baseline"
CLAIM = "block"
HARM = ("non_refusal", "harmful_compliance")  # harm is read twice, everywhere
COST = ("new_task_accuracy", "benign_accuracy")  # the only columns the choice reads
MEASURES = (*HARM, *COST, "alignment")
UNMET = "no strength met the cost rule"


def history_means(final: pd.DataFrame) -> pd.DataFrame:
    """Per arm, strength and history: the means over its seeds."""
    return final.groupby(["arm", "strength", "history"], sort=False)[list(MEASURES)].mean(
    ).reset_index()


@dataclass(frozen=True)
class Choice:
    """One arm's strength at matched task cost, and the pooled costs there (points lost)."""

    strength: float
    met: bool  # False: no strength met the rule, the weakest was taken
    new_task_cost: float  # NaN where the setting has no new task
    benign_cost: float


def choose_strengths(final: pd.DataFrame, tolerance: float) -> dict[str, Choice]:
    """The same harm-blind rule for every arm: the strongest strength whose pooled (mean over
    histories) new-task and benign accuracy at T each stay within `tolerance` points of the
    baseline's; if none, the weakest, flagged. Reads only COST columns (a measure the setting
    does not log, all NaN in the baseline, is no criterion)."""
    cost = final[["arm", "strength", "history", "seed", *COST]]
    means = cost.groupby(["arm", "strength", "history"], sort=False)[list(COST)].mean()
    pooled = means.groupby(level=["arm", "strength"], sort=False).mean()
    base = pooled.loc[BASELINE].iloc[0]
    out = {}
    for arm in dict.fromkeys(pooled.index.get_level_values("arm")):
        if arm == BASELINE:
            continue
        grid = pooled.loc[arm].sort_index()
        lost = base - grid  # points lost against the baseline, per cost column
        ok = pd.Series(True, index=grid.index)
        for col in COST:
            if not math.isnan(base[col]):
                ok &= lost[col] <= tolerance  # NaN (unmeasured arm) fails
        met = bool(ok.any())
        strength = float(grid.index[ok.to_numpy()].max() if met else grid.index.min())
        out[arm] = Choice(strength, met, float(lost.loc[strength, COST[0]]),
                          float(lost.loc[strength, COST[1]]))
    return out


def verdict(s: Summary) -> str:
    """block - defense on a harm measure: better (lower harm), worse, not distinguished (the
    interval holds 0: no evidence of a difference, not evidence of none) or undecided (no
    interval: fewer than two histories)."""
    if math.isnan(s.ci_low):
        return "undecided (fewer than two histories)"
    return {-1: "better", 1: "worse", 0: "not distinguished"}[s.excludes_zero]


@dataclass(frozen=True)
class ArmVerdict:
    """One arm at its matched-cost strength against the baseline and against the block."""

    choice: Choice
    per_history: dict[str, dict[str, float]]  # history -> measure -> mean over its seeds
    harm_reduction: dict[str, Summary]  # baseline - arm per history, t interval over them
    block_minus_arm: dict[str, Summary]  # empty for the block itself
    drift_cosine: Summary  # cos(drift theta_S -> theta_T, v_rev) over the history means

    @property
    def flag(self) -> str:
        return "" if self.choice.met else UNMET

    @property
    def verdicts(self) -> dict[str, str]:
        return {m: verdict(s) for m, s in self.block_minus_arm.items()}

    def to_json(self) -> dict:
        return {"choice": asdict(self.choice), "flag": self.flag,
                "per_history": self.per_history,
                "harm_reduction": {m: asdict(s) for m, s in self.harm_reduction.items()},
                "block_minus_arm": {m: asdict(s) for m, s in self.block_minus_arm.items()},
                "verdicts": self.verdicts, "drift_cosine": asdict(self.drift_cosine)}

    @classmethod
    def from_json(cls, d: dict) -> ArmVerdict:
        c = {k: math.nan if v is None else v for k, v in d["choice"].items()}
        per = {h: {m: math.nan if v is None else v for m, v in x.items()}
               for h, x in d["per_history"].items()}
        return cls(Choice(**c), per,
                   {m: Summary.from_json(s) for m, s in d["harm_reduction"].items()},
                   {m: Summary.from_json(s) for m, s in d["block_minus_arm"].items()},
                   Summary.from_json(d["drift_cosine"]))


@dataclass(frozen=True)
class DefensesMetrics:
    """data/metrics/defenses.json: the design that ran, the baseline, every arm's verdict."""

    preset: str
    layer: int
    tolerance: float
    histories: list[str]
    seeds: list[int]
    baseline: dict[str, dict[str, float]]  # history -> measure -> mean over its seeds
    arms: dict[str, ArmVerdict]

    def to_json(self) -> dict:
        return {"preset": self.preset, "layer": self.layer, "tolerance": self.tolerance,
                "histories": self.histories, "seeds": self.seeds, "baseline": self.baseline,
                "arms": {a: v.to_json() for a, v in self.arms.items()}}

    @classmethod
    def from_json(cls, d: dict) -> DefensesMetrics:
        base = {h: {m: math.nan if v is None else v for m, v in x.items()}
                for h, x in d["baseline"].items()}
        return cls(d["preset"], d["layer"], d["tolerance"], d["histories"], d["seeds"], base,
                   {a: ArmVerdict.from_json(v) for a, v in d["arms"].items()})


def _by_history(means: pd.DataFrame, arm: str, strength: float) -> dict[str, dict[str, float]]:
    rows = means[(means["arm"] == arm) & (means["strength"] == strength)]
    return {r["history"]: {m: float(r[m]) for m in MEASURES} for _, r in rows.iterrows()}


def _paired(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]],
            measure: str) -> Summary:
    """a - b per history on one measure, summarised over the histories (histories - 1 df)."""
    return summary([a[h][measure] - b[h][measure] for h in a if h in b])


def defenses_metrics(cfg: Config, final: pd.DataFrame, design: dict) -> DefensesMetrics:
    """Every arm at its matched-cost strength, from final.csv."""
    means = history_means(final)
    chosen = choose_strengths(final, cfg.blocking.task_cost_tolerance)
    base = _by_history(means, BASELINE, 0.0)
    at = {a: _by_history(means, a, c.strength) for a, c in chosen.items()}
    arms = {}
    for arm, c in chosen.items():
        arms[arm] = ArmVerdict(
            c, at[arm], {m: _paired(base, at[arm], m) for m in HARM},
            {} if arm == CLAIM or CLAIM not in at else
            {m: _paired(at[CLAIM], at[arm], m) for m in HARM},
            summary([x["alignment"] for x in at[arm].values()]))
    return DefensesMetrics(cfg.preset, cfg.layer, cfg.blocking.task_cost_tolerance,
                           design["histories"], design["seeds"], base, arms)


def frontier(final: pd.DataFrame) -> pd.DataFrame:
    """Per arm and strength (baseline: strength 0), the pooled means over histories at T."""
    means = history_means(final)
    return means.groupby(["arm", "strength"], sort=False)[list(MEASURES)].mean().reset_index()


@dataclass
class DefensesResult:
    """What the chapter shows."""

    final: pd.DataFrame  # one row per run at T
    frontier: pd.DataFrame  # arm, strength: pooled means
    metrics: DefensesMetrics


def measures_dir(paths: Paths) -> Path:
    return paths.data / "measures" / "defenses"


def measure(cfg: Config, paths: Paths) -> None:
    """data/metrics/defenses.json and data/measures/defenses/frontier.csv from the saved runs."""
    folder = paths.stage("defenses")
    final = pd.read_csv(folder / "final.csv", float_precision="round_trip")
    with atomic_dir(measures_dir(paths)) as out:
        write_csv(out / "frontier.csv", frontier(final))
    metrics = defenses_metrics(cfg, final, read_json(folder / "design.json"))
    write_json(paths.metrics_file("defenses"), metrics.to_json())


def load(cfg: Config, paths: Paths) -> DefensesResult:
    """Read the stage's runs and metrics back."""
    return DefensesResult(
        pd.read_csv(paths.stage("defenses") / "final.csv"),
        pd.read_csv(measures_dir(paths) / "frontier.csv"),
        DefensesMetrics.from_json(read_json(paths.metrics_file("defenses"))))
