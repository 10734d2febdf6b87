"""v_rev, the witness-defined return direction, and the alignment of drift with it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gravrev.stats.nulls import cosine


def probe_mask(probes: pd.DataFrame, probe_set: str) -> np.ndarray:
    """Which probes (rows) the direction and the drift are averaged over."""
    if probe_set == "all":
        return np.ones(len(probes), dtype=bool)
    return (probes["kind"] == probe_set).to_numpy()


def mean_activation(acts: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(..., N, d) -> (..., d): the mean over the selected probes, in float64."""
    return acts[..., mask, :].astype(np.float64).mean(axis=-2)


def unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    if norm == 0:
        raise ValueError("cannot normalise a zero vector")
    return v / norm


def v_rev_checkpoint_diff(
    acts_helpful: np.ndarray, acts_safe: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """mean_x (h_helpful(x) - h_safe(x)) per layer: (L, N, d) x 2 -> (L, d) unit rows."""
    diff = mean_activation(acts_helpful, mask) - mean_activation(acts_safe, mask)
    return np.stack([unit(row) for row in diff])


def v_rev_trajectory_pca(trajectory: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """First principal component of the mean activations along the safety phase, per layer.

    trajectory: (K, L, N, d), snapshot 0 being theta_H and K-1 theta_S. Oriented toward helpful.
    """
    means = mean_activation(trajectory, mask)  # (K, L, d)
    out = []
    for layer in range(means.shape[1]):
        pts = means[:, layer]
        centred = pts - pts.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        pc = vt[0]
        if pc @ (pts[0] - pts[-1]) < 0:
            pc = -pc
        out.append(unit(pc))
    return np.stack(out)


def drift(acts_t: np.ndarray, acts_safe: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mean_x (h_t(x) - h_safe(x)): (..., N, d) -> (..., d)."""
    return mean_activation(acts_t, mask) - mean_activation(acts_safe, mask)


def alignment_trajectory(
    acts: np.ndarray, steps: np.ndarray, v_rev: np.ndarray, mask: np.ndarray
) -> pd.DataFrame:
    """cos(drift_t, v_rev) per logged step t > 0 and layer; acts is (S, L, N, d), row 0 theta_S."""
    d = drift(acts[1:], acts[0], mask)  # (S-1, L, d)
    rows = []
    for i, step in enumerate(steps[1:]):
        for layer in range(d.shape[1]):
            rows.append(
                {
                    "step": int(step),
                    "layer": layer,
                    "alignment": cosine(d[i, layer], v_rev[layer]),
                    "drift_norm": float(np.linalg.norm(d[i, layer])),
                }
            )
    return pd.DataFrame(rows)


def refusal_direction(acts_safe: np.ndarray, harmful: np.ndarray) -> np.ndarray:
    """Arditi et al.'s r: unit(mean harmful - mean benign) at theta_S, (L, N, d) -> (L, d) rows.

    `harmful` masks the harmful probes; every other probe counts as benign. r points toward
    refusal, v_rev toward the helpful checkpoint, so a v_rev that is "less refusal" has cos < 0.
    """
    harmful = np.asarray(harmful, dtype=bool)
    if harmful.all() or not harmful.any():
        raise ValueError("the refusal direction needs both harmful and benign probes")
    diff = mean_activation(acts_safe, harmful) - mean_activation(acts_safe, ~harmful)
    return np.stack([unit(row) for row in diff])


def direction_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a[l], b[l]) per layer of two (L, d) direction stacks, e.g. cos(v_rev, r)."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"directions differ in shape: {np.shape(a)} vs {np.shape(b)}")
    return np.array([cosine(x, y) for x, y in zip(a, b, strict=True)])
