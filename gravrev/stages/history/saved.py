"""What the history stage's runs save beyond Paths' layout, for its metrics step to read."""

from __future__ import annotations

from pathlib import Path

from gravrev.store.paths import Paths


def hf_description(paths: Paths) -> Path:
    """hf only: the checkpoints' size and the judge's name (reloading a real model is costly)."""
    return paths.history / "description.json"
