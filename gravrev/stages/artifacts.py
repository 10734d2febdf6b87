"""Readers of saved artifacts that several stages share: v_rev, probe mask, analysed cell."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gravrev.config.load import Config
from gravrev.interp.direction import probe_mask
from gravrev.store.atomic import read_npz
from gravrev.store.paths import Paths


def load_v_rev(cfg: Config, paths: Paths, history: str, method: str | None = None,
               position: str | None = None) -> np.ndarray:
    """The saved v_rev (L, d) of a history, at the configured method and position by default."""
    key = Paths.v_rev_key(history, method or cfg.analysis.vrev_method,
                          position or cfg.analysis.position)
    saved = read_npz(paths.v_rev)
    if key not in saved:
        raise KeyError(f"{paths.v_rev}: no {key!r}; analysis.vrev_method needs data this "
                       "preset did not save")
    return saved[key]


def probe_selection(cfg: Config, paths: Paths) -> np.ndarray:
    """The probes (rows) that directions and drifts average over: analysis.probe_set."""
    return probe_mask(pd.read_csv(paths.probes), cfg.analysis.probe_set)


def analysed_cell(df: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The rows of the analysed cell: the configured method, layer and position."""
    keep = (df["layer"] == cfg.layer) & (df["position"] == cfg.analysis.position)
    if "method" in df:
        keep &= df["method"] == cfg.analysis.vrev_method
    return df[keep]
