"""The provenance page: what produced this book, on what, from which checkout.

Functions that read the machine or the repository are thin; the ones that interpret what they
read (cpu_model, parse_porcelain, lock_hashes, ...) take plain values, so tests can give them
known answers. This run's metrics against the commit's: gravrev.metrics_diff.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
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
STATUS_WORDS = {
    "M": "modified",
    "A": "added",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type changed",
    "U": "unmerged",
}


@dataclass(frozen=True)
class Change:
    """One uncommitted change, as `git status --porcelain` lists it."""

    code: str  # git's two status letters, e.g. " M" or "??"
    path: str

    @property
    def meaning(self) -> str:
        if self.code == "??":
            return "untracked"
        staged, unstaged = self.code[0], self.code[1]
        letter = staged if staged != " " else unstaged
        where = "staged" if unstaged == " " else "not staged" if staged == " " else "partly staged"
        return f"{STATUS_WORDS.get(letter, letter)} ({where})"


def git_output(root: Path, *args: str) -> str:
    """What `git ARGS` prints in `root`; raises CalledProcessError (or OSError) on failure."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def git_revision(root: Path) -> str:
    """HEAD's commit, marked when tracked files have uncommitted changes."""
    try:
        rev = git_output(root, "rev-parse", "HEAD").strip()
        dirty = git_output(root, "status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return rev + (" (with uncommitted changes)" if dirty else "")


def run_date(now: datetime | None = None) -> str:
    """The date and time in UTC, to the minute."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model(cpuinfo: str, processor: str) -> str:
    """The "model name" of /proc/cpuinfo, else platform.processor(), else "unknown"."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return processor.strip() or "unknown"


def host_cpu() -> str:
    """This machine's CPU model."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text(errors="replace") if cpuinfo.is_file() else ""
    return cpu_model(text, platform.processor())


def stage_threads(cpu_threads: int, torch_default: int) -> str:
    """The torch thread count the stages ran with: params' cpu_threads, or torch's default."""
    if cpu_threads > 0:
        return f"{cpu_threads} (cpu_threads)"
    return f"{torch_default} (torch's default; cpu_threads is 0)"


def hardware(cpu_threads: int) -> pd.DataFrame:
    """CPU, cores, the stages' torch threads, GPU, Python and system, one row each."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    rows = [
        ("cpu", host_cpu()),
        ("machine", platform.machine()),
        ("cpu cores", str(os.cpu_count())),
        ("torch threads of the stages", stage_threads(cpu_threads, torch.get_num_threads())),
        ("gpu", gpu),
        ("python", platform.python_version()),
        ("system", platform.platform()),
    ]
    return pd.DataFrame(rows, columns=["item", "value"])


def pins_table(pins: dict[str, str]) -> pd.DataFrame:
    """The numeric pins in force (gravrev.numerics.pins_in_force()), one row each."""
    return pd.DataFrame(sorted(pins.items()), columns=["setting", "value"])


def package_versions() -> pd.DataFrame:
    rows = []
    for name in PACKAGES:
        try:
            rows.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            rows.append((name, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def lock_hashes(lock: dict) -> pd.DataFrame:
    """Every stage's data inputs and outputs with their md5, from a parsed dvc.lock.

    Code files (gravrev/) are left out: the git revision pins them.
    """
    rows = []
    for stage, info in (lock.get("stages") or {}).items():
        for kind in ("deps", "outs"):
            for item in info.get(kind, []):
                if not item["path"].startswith("gravrev/"):
                    rows.append((stage, kind, item["path"], item.get("md5", "")))
    return pd.DataFrame(rows, columns=["stage", "kind", "path", "md5"])


def read_lock(root: Path) -> dict:
    """dvc.lock as it is now (empty when there is none)."""
    path = root / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def parse_porcelain(text: str) -> list[Change]:
    """`git status --porcelain` (v1) lines as Changes; a rename keeps its new path."""
    changes = []
    for line in text.splitlines():
        if len(line) > 3:
            path = line[3:].split(" -> ")[-1]
            changes.append(Change(line[:2], path))
    return changes


def uncommitted_changes(root: Path) -> list[Change]:
    """Every uncommitted change of the checkout (untracked files included)."""
    try:
        return parse_porcelain(git_output(root, "status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError):
        return []


def changes_summary(changes: list[Change]) -> str:
    """How many uncommitted changes, in words."""
    if not changes:
        return "no uncommitted changes"
    return f"{len(changes)} uncommitted change" + ("s" if len(changes) > 1 else "")


def changes_table(changes: list[Change]) -> pd.DataFrame:
    return pd.DataFrame(
        [(c.path, c.meaning) for c in changes], columns=["path", "uncommitted change"]
    )


def stage_times(timings_dir: Path) -> pd.DataFrame:
    """Wall time of each stage's last run, from the {"stage", "seconds"} files there."""
    rows = []
    for path in sorted(Path(timings_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and {"stage", "seconds"} <= record.keys():
            rows.append((record["stage"], float(record["seconds"])))
    return pd.DataFrame(rows, columns=["stage", "seconds"])


def step_time_text(timings_dir: Path, helpful_steps: int) -> str:
    """Mean wall time of one phase-H training step (no evaluation inside it), as "33 ms"."""
    path = Path(timings_dir) / "history_phases.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    seconds = [v for k, v in times.items() if k.endswith("_helpful")]
    if not seconds or helpful_steps < 1:
        return "not measured (this run trained no history)"
    return f"{1000 * sum(seconds) / len(seconds) / helpful_steps:.0f} ms"
