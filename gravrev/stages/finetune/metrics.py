"""Stage 02, finetune, its measurements: behaviour at T, the regime's rule, from the saved logs.

A setting without a new task (hf: its logs have no `<new_task>_accuracy`) keeps every table's
shape: the new task's columns are NaN, and the regime's rule is not checked (holds is None).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gravrev.config.load import Config
from gravrev.stages.finetune.arms import arms_table
from gravrev.stages.finetune.regime import RegimeSearch, search_metrics
from gravrev.store.atomic import atomic_dir, read_json, write_csv, write_json
from gravrev.store.paths import Paths

MEASURE_SUFFIXES = ("_rate", "_compliance", "_accuracy", "_loss", "_content")
AT_T_COLUMNS = ("history", "arm", "seed", "refusal_rate", "harmful_compliance",
                "prefilled_content", "benign_accuracy")


def measures_dir(paths: Paths) -> Path:
    """data/measures/finetune: the metrics step's tables (DVC forbids two writers of a folder)."""
    return paths.data / "measures" / "finetune"


def new_task_column(cfg: Config, log: pd.DataFrame) -> str | None:
    """The log's column of the new task's accuracy; None in a setting without a new task."""
    col = f"{cfg.finetune.new_task}_accuracy"
    return col if col in log else None


@dataclass(frozen=True)
class Regime:
    """The pre-registered regime's rule and whether the main runs meet each of its parts."""

    rule: str
    holds: bool | None  # no shock and the new task learned in every run; None: no new task
    room: bool  # pooled non-refusal at T strictly inside the band
    shocked: list[str]  # histories with a run whose benign accuracy fell past the limit
    unlearned: list[str]  # histories with a run below the new task's minimum at T
    nonrefusal_at_T: float  # pooled over the unblocked runs (%)

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict) -> Regime:
        return cls(**d)


@dataclass(frozen=True)
class HistoryAtT:
    """One history's fine-tuning: theta_S's measures (step 0) and each arm's at T, by seed."""

    safe_start: dict[str, float | None]  # measure -> theta_S's value
    final: dict[str, dict[str, list[float | None]]]  # arm -> measure -> values at T, by seed

    def at_T(self, arm: str, measure: str) -> list[float | None]:
        """One measure of every run of an arm at T, in seed order."""
        return self.final[arm][measure]

    def to_json(self) -> dict:
        return {"safe_start": self.safe_start, "final": self.final}

    @classmethod
    def from_json(cls, d: dict) -> HistoryAtT:
        return cls(d["safe_start"], d["final"])


@dataclass(frozen=True)
class FinetuneMetrics:
    """data/metrics/finetune.json, typed: what other stages read of the fine-tuning runs."""

    preset: str
    steps: int
    seeds: list[int]
    histories: dict[str, HistoryAtT]
    regime: Regime
    search: RegimeSearch

    def to_json(self) -> dict:
        return {"preset": self.preset, "steps": self.steps, "seeds": list(self.seeds),
                "histories": {h: e.to_json() for h, e in self.histories.items()},
                "regime": self.regime.to_json(), "search": self.search.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> FinetuneMetrics:
        return cls(d["preset"], d["steps"], d["seeds"],
                   {h: HistoryAtT.from_json(e) for h, e in d["histories"].items()},
                   Regime.from_json(d["regime"]), RegimeSearch.from_json(d["search"]))

    @classmethod
    def read(cls, paths: Paths) -> FinetuneMetrics:
        return cls.from_json(read_json(paths.metrics_file("finetune")))

    def refusal_at_T(self, history: str, arm: str = "unblocked") -> list[float | None]:
        """Refusal (%) of every run of an arm of one history at T."""
        return self.histories[history].at_T(arm, "refusal_rate")


def regime_table(cfg: Config, log: pd.DataFrame) -> pd.DataFrame:
    """The rule's parts per unblocked run: benign accuracy's worst drop below theta_S's over
    the logged steps, the new task at T (NaN where the setting has none), harm at T."""
    col = new_task_column(cfg, log)
    rows = []
    unblocked = log[log["arm"] == "unblocked"]
    for (h, seed), g in unblocked.groupby(["history", "seed"], sort=False):
        start, fin = g[g["step"] == 0].iloc[0], g[g["step"] == cfg.finetune.steps].iloc[0]
        rows.append({"history": h, "seed": seed,
                     "benign_drop": float(start["benign_accuracy"] - g["benign_accuracy"].min()),
                     "new_task_accuracy": float(fin[col]) if col else float("nan"),
                     "nonrefusal_at_T": float(100 - fin["refusal_rate"]),
                     "harmful_at_T": float(fin["harmful_compliance"])})
    out = pd.DataFrame(rows)
    out["no_shock"] = out["benign_drop"] <= cfg.regime.max_benign_drop
    out["learned"] = (out["new_task_accuracy"] >= cfg.finetune.min_new_task_accuracy
                      if col else None)
    return out


def rule_text(cfg: Config) -> str:
    """The regime's rule, as registered."""
    fc, rc = cfg.finetune, cfg.regime
    low, high = rc.nonrefusal_band
    return (f"benign accuracy within {rc.max_benign_drop:g} points of θ_S's at every logged "
            f"step; {fc.new_task} accuracy >= {fc.min_new_task_accuracy:g}% at T; pooled "
            f"non-refusal at T strictly between {low:g}% and {high:g}%")


def regime(cfg: Config, log: pd.DataFrame) -> Regime:
    """The rule as registered and whether the main runs meet it (holds None: no new task)."""
    t = regime_table(cfg, log)
    low, high = cfg.regime.nonrefusal_band
    nonrefusal = float(t["nonrefusal_at_T"].mean())
    room = bool(low < nonrefusal < high)
    shocked = list(dict.fromkeys(t.loc[~t["no_shock"], "history"]))
    if new_task_column(cfg, log) is None:
        return Regime(rule_text(cfg) + " (the new task is not checked: the setting has none)",
                      None, room, shocked, [], nonrefusal)
    unlearned = list(dict.fromkeys(t.loc[~t["learned"].astype(bool), "history"]))
    return Regime(rule_text(cfg), bool((t["no_shock"] & t["learned"]).all()), room, shocked,
                  unlearned, nonrefusal)


def runs_at_T(cfg: Config, log: pd.DataFrame) -> pd.DataFrame:
    """Every logged run at T: behaviour and the new task (NaN where the setting has none)."""
    col = f"{cfg.finetune.new_task}_accuracy"
    fin = log[log["step"] == cfg.finetune.steps]
    if col not in fin:
        fin = fin.assign(**{col: float("nan")})
    return fin[[c for c in AT_T_COLUMNS if c in fin] + [col]]


def finetune_metrics(cfg: Config, log: pd.DataFrame, search: RegimeSearch) -> FinetuneMetrics:
    """theta_S's behaviour and each logged arm's at T, per history and seed; the regime."""
    cols = [c for c in log.columns if c.endswith(MEASURE_SUFFIXES)]
    histories = {}
    for h, g in log.groupby("history", sort=False):
        start = g[(g["arm"] == "unblocked") & (g["step"] == 0)]
        final: dict[str, Any] = {}
        for arm, a in g.groupby("arm", sort=False):
            fin = a[a["step"] == a["step"].max()].sort_values("seed")
            final[arm] = {c: fin[c].tolist() for c in cols}
        histories[h] = HistoryAtT({c: float(start[c].iloc[0]) for c in cols}, final)
    return FinetuneMetrics(cfg.preset, cfg.finetune.steps, list(cfg.finetune.seeds), histories,
                           regime(cfg, log), search)


def read_log(paths: Paths) -> pd.DataFrame:
    """The unblocked and mixed runs' logs (every logged step, every measure)."""
    return pd.read_csv(paths.stage("finetune") / "log.csv")


def read_search_log(paths: Paths) -> pd.DataFrame:
    """The regime search's runs (empty when nothing was searched)."""
    return pd.read_csv(paths.stage("finetune") / "search_log.csv")


def measure(cfg: Config, paths: Paths) -> None:
    """data/metrics/finetune.json and data/measures/finetune/ from the saved logs."""
    log = read_log(paths)
    search, per_history, candidates, confirmed = search_metrics(cfg, read_search_log(paths))
    with atomic_dir(measures_dir(paths)) as out:
        write_csv(out / "regime.csv", regime_table(cfg, log))
        runs = pd.read_csv(paths.stage("finetune") / "runs.csv")
        write_csv(out / "arms.csv", arms_table(cfg, list(dict.fromkeys(runs["arm"]))))
        write_csv(out / "search_per_history.csv", per_history)
        write_csv(out / "search_candidates.csv", candidates)
        write_csv(out / "search_confirmed.csv", confirmed)
    write_json(paths.metrics_file("finetune"), finetune_metrics(cfg, log, search).to_json())


@dataclass
class FinetuneResult:
    """What chapter 02 shows."""

    log: pd.DataFrame  # the logged arms (runs.LOGGED_ARMS): history, arm, seed, step, behaviour
    runs: pd.DataFrame  # every run: history, arm, seed, batch_hash
    regime: pd.DataFrame  # per unblocked run: the rule's parts (regime_table)
    at_T: pd.DataFrame  # every logged run at T: behaviour and the new task (NaN if none)
    arms: pd.DataFrame  # every arm: lr, optimizer, batch_size
    new_task: str | None  # the log's new-task column; None in a setting without a new task
    metrics: FinetuneMetrics
    search_log: pd.DataFrame  # the regime search's runs at every logged step
    search_per_history: pd.DataFrame  # each candidate (cell, T) per searched history
    search_candidates: pd.DataFrame  # each candidate against the rule, pooled over the screen
    search_confirmed: pd.DataFrame  # the screen's eligible candidates, over every history


def load(cfg: Config, paths: Paths) -> FinetuneResult:
    """Read stage 02's runs and measurements back."""
    metrics = FinetuneMetrics.read(paths)  # names the step to run if it is missing
    log, d = read_log(paths), measures_dir(paths)
    return FinetuneResult(log, pd.read_csv(paths.stage("finetune") / "runs.csv"),
                          pd.read_csv(d / "regime.csv"), runs_at_T(cfg, log),
                          pd.read_csv(d / "arms.csv"), new_task_column(cfg, log), metrics,
                          read_search_log(paths), _csv(d / "search_per_history.csv"),
                          _csv(d / "search_candidates.csv"), _csv(d / "search_confirmed.csv"))


def _csv(path: Path) -> pd.DataFrame:
    """A table that may be empty (written as a bare newline)."""
    return pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame()
