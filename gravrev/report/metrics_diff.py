"""This run's metrics against a commit's: identical, or each key path that differs.

Values are compared exactly, as written (gravrev.store.atomic.write_json rounds them to six
decimals, so runs on the same numerics compare equal).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gravrev.report.provenance import git_output

METRICS_DIR = "data/metrics"
ABSENT = "(absent)"


@dataclass(frozen=True)
class MetricDifference:
    """One key path whose value differs between the committed metrics and this run's."""

    file: str
    key: str
    committed: str  # the value as JSON text, or ABSENT
    this_run: str


@dataclass(frozen=True)
class MetricsComparison:
    """One metrics file of this run against the same file in the commit."""

    file: str
    verdict: str  # identical | differs | new in this run | missing from this run
    differences: tuple[MetricDifference, ...]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested dicts and lists by key path: {"a": {"b": [1]}} -> {"a.b[0]": 1}."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out |= flatten(item, f"{prefix}[{i}]")
        return out or {prefix: []}
    return {prefix: value}


def metric_differences(file: str, committed: Any, this_run: Any) -> list[MetricDifference]:
    """Each key path whose leaf differs (or exists on one side only), sorted by path."""
    a, b = flatten(committed), flatten(this_run)
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a or key not in b or a[key] != b[key]:
            out.append(
                MetricDifference(
                    file,
                    key,
                    json.dumps(a[key]) if key in a else ABSENT,
                    json.dumps(b[key]) if key in b else ABSENT,
                )
            )
    return out


def committed_metrics(root: Path, ref: str = "HEAD") -> dict[str, Any]:
    """The metrics files of commit `ref`, parsed, by file name (empty outside git)."""
    try:
        names = git_output(root, "ls-tree", "--name-only", f"{ref}:{METRICS_DIR}").split()
        return {
            n: json.loads(git_output(root, "show", f"{ref}:{METRICS_DIR}/{n}"))
            for n in names
            if n.endswith(".json")
        }
    except (OSError, subprocess.CalledProcessError):
        return {}


def run_metrics(root: Path) -> dict[str, Any]:
    """This run's metrics files, parsed, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted((root / METRICS_DIR).glob("*.json"))}


def compare_metrics(committed: dict[str, Any], this_run: dict[str, Any]) -> list[MetricsComparison]:
    """Every metrics file of either side: identical, differs (with its keys), new or missing."""
    out = []
    for name in sorted(committed.keys() | this_run.keys()):
        if name not in committed:
            out.append(MetricsComparison(name, "new in this run", ()))
        elif name not in this_run:
            out.append(MetricsComparison(name, "missing from this run", ()))
        else:
            diffs = tuple(metric_differences(name, committed[name], this_run[name]))
            out.append(MetricsComparison(name, "differs" if diffs else "identical", diffs))
    return out


def metrics_verdict(comparisons: list[MetricsComparison]) -> str:
    """One phrase for the page: identical, different in k of n files, or not compared."""
    if not comparisons:
        return "not compared: this run wrote no metrics"
    if all(c.verdict == "new in this run" for c in comparisons):
        return "not compared: the commit holds no metrics files"
    differing = [c for c in comparisons if c.verdict != "identical"]
    if not differing:
        return "identical to the committed ones"
    return f"different from the committed ones in {len(differing)} of {len(comparisons)} files"


def comparison_summary(comparisons: list[MetricsComparison]) -> pd.DataFrame:
    return pd.DataFrame(
        [(c.file, c.verdict, len(c.differences)) for c in comparisons],
        columns=["file", "against the commit", "keys that differ"],
    )


def differences_table(comparisons: list[MetricsComparison]) -> pd.DataFrame:
    return pd.DataFrame(
        [(d.file, d.key, d.committed, d.this_run) for c in comparisons for d in c.differences],
        columns=["file", "key", "committed", "this run"],
    )
