"""A unit's own v_rev, from its theta_H and theta_S activations: what runs and metrics share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gravrev.config.load import Config
from gravrev.interp.direction import v_rev_checkpoint_diff
from gravrev.interp.steering import reversion_norms
from gravrev.store.atomic import read_npz


def unit_direction(cfg: Config, folder: Path, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The unit's own v_rev (L, d) from its theta_H and theta_S, and |v_rev| at the layer."""
    pos = cfg.analysis.position
    helpful, safe = (read_npz(folder / f"acts_{n}.npz")[pos] for n in ("helpful", "safe"))
    norm = float(reversion_norms(helpful, safe, mask)[cfg.layer])
    return v_rev_checkpoint_diff(helpful, safe, mask), norm
