"""The provenance page: git revision, params, dvc.lock hashes, packages, hardware, stage times."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

PACKAGES = (
    "gravrev",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "scipy",
    "pandas",
    "statsmodels",
    "matplotlib",
    "seaborn",
    "dvc",
    "papermill",
    "jupyter-book",
    "myst-nb",
)


def git_revision(root: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def package_versions() -> pd.DataFrame:
    rows = []
    for name in PACKAGES:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    return pd.DataFrame(rows)


def hardware() -> pd.DataFrame:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return pd.DataFrame(
        [
            {"item": "machine", "value": platform.machine()},
            {"item": "processor", "value": platform.processor() or "unknown"},
            {"item": "cpu cores", "value": str(os.cpu_count())},
            {"item": "torch threads", "value": str(torch.get_num_threads())},
            {"item": "gpu", "value": gpu},
            {"item": "python", "value": platform.python_version()},
            {"item": "system", "value": platform.platform()},
        ]
    )


def lock_hashes(root: Path) -> pd.DataFrame:
    """Every stage's outputs and their md5 as dvc.lock recorded them."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        return pd.DataFrame(columns=["stage", "kind", "path", "md5"])
    data = yaml.safe_load(lock.read_text()) or {}
    rows = []
    for stage, info in (data.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in info.get(kind, []):
                if not item["path"].startswith("gravrev/"):
                    rows.append(
                        {
                            "stage": stage,
                            "kind": kind,
                            "path": item["path"],
                            "md5": item.get("md5", ""),
                        }
                    )
    return pd.DataFrame(rows)


def stage_times(root: Path) -> pd.DataFrame:
    rows = []
    for f in sorted((root / "data" / "timings").glob("*.json")):
        rows.append(pd.read_json(f, typ="series").to_dict())
    return pd.DataFrame(rows, columns=["stage", "seconds"])
