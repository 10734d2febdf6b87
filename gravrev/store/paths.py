"""Every artifact's path under the repository root: the one place a path is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Every artifact's path, derived from the repo root in one place; nothing else builds one."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def resolved_config(self) -> Path:
        return self.data / "config.json"

    def stage(self, name: str) -> Path:
        """A stage's DVC-tracked output folder: data/<name>."""
        return self.data / name

    @property
    def history(self) -> Path:
        return self.stage("history")

    @property
    def pretrained(self) -> Path:
        return self.history / "pretrained"

    def checkpoint(self, name: str, history: str) -> Path:
        """theta_H ('helpful') or theta_S ('safe') of one history; theta_P is shared."""
        return self.pretrained if name == "pretrained" else self.history / history / name

    def acts(self, name: str, history: str) -> Path:
        """Probe activations of a checkpoint: {'last'|'mean': (L, N, d)}."""
        return self.history / history / f"acts_{name}.npz"

    def safe_trajectory(self, history: str) -> Path:
        return self.history / history / "safe_trajectory.npz"

    @property
    def probes(self) -> Path:
        return self.history / "probes.csv"

    def run(self, stage: str, history: str, arm: str, seed: int) -> Path:
        """A run's activation snapshots (npz); arm names may hold dots, so no with_suffix."""
        return self.stage(stage) / history / f"{arm}_seed{seed}.npz"

    @property
    def v_rev(self) -> Path:
        return self.stage("vrev") / "v_rev.npz"

    @staticmethod
    def v_rev_key(history: str, method: str, position: str) -> str:
        return f"{history}/{method}/{position}"

    @property
    def metrics(self) -> Path:
        return self.data / "metrics"

    def metrics_file(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    @property
    def timings(self) -> Path:
        """Wall-clock figures: never DVC-hashed, never compared."""
        return self.data / "timings"
