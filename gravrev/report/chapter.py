"""What a chapter notebook opens with: the validated config, the paths and its stage's result.

The same call works in a render (papermill, cwd = repo root) and in Jupyter opened anywhere
inside the repository (e.g. cwd = notebooks/): the root is found from the working directory.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from gravrev.config.load import Config
from gravrev.config.validate import validated_config
from gravrev.report.publish import set_figure_style
from gravrev.store.paths import Paths


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) that holds dvc.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise FileNotFoundError(f"{here}: not inside the gravrev repository (no dvc.yaml above it)")


def stage_loader(stage: str):
    """The stage's `load(cfg, paths)`: from its metrics step where it has one, else compute."""
    for step in ("metrics", "compute"):
        try:
            module = importlib.import_module(f"gravrev.stages.{stage}.{step}")
        except ModuleNotFoundError:
            continue
        return module.load
    raise ModuleNotFoundError(f"gravrev.stages.{stage} has neither metrics nor compute")


def open_chapter(stage: str | None, params_path: str | Path = "params.yaml",
                 ) -> tuple[Config, Paths, Any]:
    """(cfg, paths, result) for a chapter; the config is always validated.

    `stage` None opens a chapter of no stage (provenance, budget): the result is None.
    A relative params_path is read from the repository root.
    """
    root = repo_root()
    params = Path(params_path)
    cfg = validated_config(params if params.is_absolute() else root / params)
    paths = Paths(Path(os.path.relpath(root)))  # '.' in a render: no machine's path in a page
    set_figure_style()
    return cfg, paths, stage_loader(stage)(cfg, paths) if stage else None
