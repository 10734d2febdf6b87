"""The provenance page: what produced this book, on what, from which checkout.

Functions that read the machine or the repository are thin; the ones that interpret what they
read (cpu_model, parse_porcelain, lock_hashes, ...) take plain values, so tests can give them
known answers. This run's metrics against the commit's: gravrev.report.metrics_diff.
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
    """The numeric pins in force (gravrev.runtime.numerics.pins_in_force()), one row each."""
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


# Where a run step records its training runs' own seconds (summed over the runs, so over the
# workers that ran them in parallel); a step timing with "run_seconds" takes precedence.
RUN_RECORDS = {
    "history": "history_phases.json",
    "finetune": "finetune_runs.json",
    "sweep": "sweep_units.json",
}
PROFILE_COLUMNS = ["step", "kind", "seconds", "training_seconds", "training_share"]


def step_kind(label: str) -> str:
    """A timing record's dvc.yaml step kind: render (a chapter), metrics, or run."""
    if label[:2].isdigit():
        return "render"
    return "metrics" if label.endswith("_metrics") else "run"


def training_seconds(timings_dir: Path, label: str, record: dict) -> float | None:
    """The seconds a run step's training runs took, summed over runs; None where not recorded."""
    if "run_seconds" in record:
        return float(record["run_seconds"])
    path = Path(timings_dir) / RUN_RECORDS.get(label, "")
    if label not in RUN_RECORDS or not path.is_file():
        return None
    return float(sum(json.loads(path.read_text()).values()))


def step_stage(label: str) -> str:
    """The stage a timing label belongs to: "01_history", "history_metrics" -> "history"."""
    kind = step_kind(label)
    if kind == "render":
        return label.partition("_")[2]
    return label.removesuffix("_metrics") if kind == "metrics" else label


def pipeline_profile(timings_dir: Path, workers: int, stages: list[str]) -> pd.DataFrame:
    """Each dvc.yaml step's wall seconds, in pipeline order (`stages`, then the rest), and its
    training runs' share of the step's core-seconds (wall x workers) where recorded."""
    rows = []
    for path in sorted(Path(timings_dir).glob("*.json")):
        record = json.loads(path.read_text())
        if not (isinstance(record, dict) and {"stage", "seconds"} <= record.keys()):
            continue
        label, seconds = record["stage"], float(record["seconds"])
        kind = step_kind(label)
        train = training_seconds(timings_dir, label, record) if kind == "run" else None
        share = train / (seconds * workers) if train is not None and seconds > 0 else None
        rows.append((label, kind, seconds, train, share))
    kinds = {"run": 0, "metrics": 1, "render": 2}
    position = {stage: i for i, stage in enumerate(stages)}
    rows.sort(key=lambda r: (position.get(step_stage(r[0]), len(stages)), kinds[r[1]]))
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


@dataclass(frozen=True)
class ProfileShares:
    """The whole pipeline's wall time by step kind, and training's share where recorded."""

    total_seconds: float
    run_share: float  # of the total wall time: run steps (training stages and analyses)
    metrics_share: float
    render_share: float
    training_share: float | None  # of the recorded run steps' core-seconds: training runs
    recorded_steps: tuple[str, ...]  # the run steps that record their training runs


def profile_shares(profile: pd.DataFrame, workers: int) -> ProfileShares | None:
    """The pipeline's shares from a pipeline_profile table; None when nothing was timed."""
    total = float(profile["seconds"].sum())
    if profile.empty or total <= 0:
        return None
    by_kind = profile.groupby("kind")["seconds"].sum()
    recorded = profile[profile["training_seconds"].notna()]
    core_seconds = float(recorded["seconds"].sum()) * workers
    return ProfileShares(
        total_seconds=total,
        run_share=float(by_kind.get("run", 0.0)) / total,
        metrics_share=float(by_kind.get("metrics", 0.0)) / total,
        render_share=float(by_kind.get("render", 0.0)) / total,
        training_share=(
            float(recorded["training_seconds"].sum()) / core_seconds if core_seconds > 0 else None
        ),
        recorded_steps=tuple(recorded["step"]),
    )


def shares_text(shares: ProfileShares | None) -> str:
    """The pipeline's shares in words, for the scale page and `make benchmark`."""
    if shares is None:
        return "not measured: data/timings holds no step times (run the pipeline first)"
    text = (
        f"run steps {shares.run_share:.0%} of the {shares.total_seconds:.0f} s, metrics steps "
        f"{shares.metrics_share:.0%}, rendering {shares.render_share:.0%}"
    )
    if shares.training_share is None:
        return text + "; no run step records its training runs' seconds"
    return text + (
        f"; training runs filled {shares.training_share:.0%} of the core-seconds of the run steps"
        f" that record them ({', '.join(shares.recorded_steps)})"
    )
