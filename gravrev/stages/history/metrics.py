"""Stage 01, history, its measurements: the shape checks and the metrics, from the saved runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gravrev.config.load import Config
from gravrev.organism.shape import shape_checks
from gravrev.stages.history.saved import hf_description
from gravrev.store.atomic import atomic_dir, read_json, write_csv, write_json
from gravrev.store.paths import Paths


def measures_dir(paths: Paths) -> Path:
    """data/measures/history: the metrics step's tables (DVC forbids two writers of a folder)."""
    return paths.data / "measures" / "history"


@dataclass(frozen=True)
class ShapeCheck:
    """One history against one pre-registered target; margin >= 0 passes."""

    history: str
    check: str
    value: float
    threshold: float
    margin: float
    passed: bool


@dataclass(frozen=True)
class HistoryMetrics:
    """data/metrics/history.json, typed: the model, every checkpoint's behaviour, the checks."""

    preset: str
    n_params: int
    vocab_size: int | None  # None for hf (the tokenizer is the checkpoint's own)
    histories: list[str]
    checkpoints: list[dict[str, Any]]  # one row per (history, checkpoint): its behaviour
    checks: list[ShapeCheck]
    all_checks_passed: bool
    judge: str | None = None  # hf only: the judge's name (the organism's judge is exact)

    def behaviour(self, checkpoint: str, history: str) -> dict[str, Any]:
        """The behaviour row of one checkpoint (theta_P's history is 'shared')."""
        for row in self.checkpoints:
            if row["checkpoint"] == checkpoint and row["history"] == history:
                return row
        raise KeyError(f"history.json: no checkpoint {checkpoint!r} of history {history!r}")

    def to_json(self) -> dict:
        out: dict[str, Any] = {"preset": self.preset, "n_params": self.n_params,
                               "vocab_size": self.vocab_size}
        if self.judge is not None:
            out["judge"] = self.judge
        out |= {"histories": list(self.histories), "checkpoints": self.checkpoints,
                "checks": [asdict(c) for c in self.checks],
                "all_checks_passed": self.all_checks_passed}
        return out

    @classmethod
    def from_json(cls, d: dict) -> HistoryMetrics:
        return cls(d["preset"], d["n_params"], d["vocab_size"], d["histories"],
                   d["checkpoints"], [ShapeCheck(**c) for c in d["checks"]],
                   d["all_checks_passed"], d.get("judge"))

    @classmethod
    def read(cls, paths: Paths) -> HistoryMetrics:
        return cls.from_json(read_json(paths.metrics_file("history")))


def history_metrics(cfg: Config, paths: Paths, table: pd.DataFrame,
                    checks: pd.DataFrame) -> HistoryMetrics:
    """The metrics of the saved runs: the model's size, the behaviour table and the checks."""
    shape = [ShapeCheck(**row) for row in checks.to_dict(orient="records")]
    rows = table.to_dict(orient="records")
    passed = bool(checks["passed"].all())
    if cfg.is_hf:
        d = read_json(hf_description(paths))
        return HistoryMetrics(cfg.preset, d["n_params"], None, [cfg.histories[0]], rows, shape,
                              passed, d["judge"])
    # Reading a checkpoint needs torch; the render reads this module's types and must not.
    from gravrev.organism.model import build_tokenizer, load_checkpoint, n_params

    model, _ = load_checkpoint(paths.pretrained, "cpu")
    return HistoryMetrics(cfg.preset, n_params(model), len(build_tokenizer(cfg.world)),
                          list(cfg.histories), rows, shape, passed)


def measure(cfg: Config, paths: Paths) -> None:
    """data/metrics/history.json and data/measures/history/checks.csv from the saved runs."""
    table = pd.read_csv(paths.history / "behaviour.csv")
    checks = shape_checks(table, cfg.history.checks)
    with atomic_dir(measures_dir(paths)) as out:
        write_csv(out / "checks.csv", checks)
    write_json(paths.metrics_file("history"), history_metrics(cfg, paths, table, checks).to_json())


@dataclass(frozen=True)
class HistorySummary:
    """The organism and the history's schedule, as chapter 01 states them."""

    n_params: int
    vocab_size: int | None
    n_layer: int
    d_model: int
    n_histories: int
    n_eval: int
    n_probes: int
    pretrain_steps: int
    helpful_steps: int
    safe_steps: int


@dataclass
class HistoryResult:
    """What chapter 01 shows."""

    summary: HistorySummary
    behaviour: pd.DataFrame  # history, checkpoint, rates
    checks: pd.DataFrame  # history, check, value, threshold, margin, passed
    curves: pd.DataFrame  # history, phase, step, loss
    examples: pd.DataFrame


def load(cfg: Config, paths: Paths) -> HistoryResult:
    """Read stage 01's runs and measurements back."""
    metrics = HistoryMetrics.read(paths)
    summary = HistorySummary(
        metrics.n_params, metrics.vocab_size, cfg.model.n_layer, cfg.model.n_embd,
        len(cfg.histories), cfg.world.n_eval, cfg.world.n_probes, cfg.history.pretrain.steps,
        cfg.history.helpful.steps, cfg.history.safe.steps,
    )
    curves = [paths.history / "curves_pretrain.csv", paths.history / "curves.csv"]
    return HistoryResult(
        summary,
        pd.read_csv(paths.history / "behaviour.csv"),
        pd.read_csv(measures_dir(paths) / "checks.csv"),
        pd.concat([pd.read_csv(p) for p in curves if p.is_file()], ignore_index=True),
        pd.read_csv(paths.history / "examples.csv"),
    )
