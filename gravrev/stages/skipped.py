"""Stages that do not apply to a setting: which, why, and the record they leave instead.

A skipped stage still writes its outputs (DVC needs them): data/<stage>/skipped.json and a
metrics file holding `skipped` (the reason), which the claims read as "did not run" and the
chapter shows in place of its analyses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gravrev.config.load import Config
from gravrev.store.atomic import atomic_dir, read_json, write_json
from gravrev.store.paths import Paths

MARKER = "skipped.json"
# stage -> why the hf preset (given checkpoints, no world to train in) cannot run it
NOT_FOR_HF = {
    "mediation": ("it ablates and steers θ_H and θ_S loaded as the organism's own checkpoints "
                  "and judges them with the organism's world, and it re-runs the fine-tuning "
                  "in the organism's model class; the hf preset gives neither"),
    "sweep": ("it trains new histories (θ_P → θ_H → θ_S at other depths), which the hf preset "
              "cannot: its checkpoints are given, not trained"),
}


def skip_reason(cfg: Config, stage: str) -> str | None:
    """Why `stage` does not run in this config's setting, or None when it runs."""
    if cfg.is_hf and stage in NOT_FOR_HF:
        return f"preset hf: {NOT_FOR_HF[stage]}"
    return None


def write_skipped(cfg: Config, paths: Paths, stage: str) -> None:
    """The run step of a skipped stage: data/<stage>/skipped.json in place of its runs."""
    with atomic_dir(paths.stage(stage)) as out:
        write_json(out / MARKER, {"preset": cfg.preset, "skipped": skip_reason(cfg, stage)})


def skipped_metrics(cfg: Config, paths: Paths, stage: str, measures: Path | None = None) -> None:
    """The metrics step of a skipped stage: data/metrics/<stage>.json says why (and so does
    `measures`, the step's folder of tables, when it has one)."""
    record = {"preset": cfg.preset, "skipped": read_json(paths.stage(stage) / MARKER)["skipped"]}
    if measures is not None:
        with atomic_dir(measures) as out:
            write_json(out / MARKER, record)
    write_json(paths.metrics_file(stage), record)


def ran(metrics: dict[str, Any]) -> bool:
    """Whether a stage's metrics JSON holds results (not a skipped stage's reason)."""
    return "skipped" not in metrics
