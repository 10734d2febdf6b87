"""v_rev and alignment on synthetic activations whose answer is known by construction."""

import numpy as np
import pytest

from gravrev.interp.direction import (
    alignment_trajectory,
    drift,
    v_rev_checkpoint_diff,
    v_rev_trajectory_pca,
)

L, N, D = 3, 10, 16
STEPS = np.array([0, 1, 5, 20])


def _unit_rows(rng, k):
    v = rng.normal(size=(k, D))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _drifting(base, directions, sizes):
    """(S, L, N, d): snapshot s is `base` + sizes[s] * directions[layer], for every probe."""
    return np.stack([base + size * directions[:, None, :] for size in sizes]).astype(np.float32)


@pytest.mark.parametrize(("sign", "expected"), [(1.0, 1.0), (-1.0, -1.0), (0.0, 0.0)])
def test_alignment_of_a_drift_along_against_and_across_v_rev(sign, expected):
    rng = np.random.default_rng(0)
    v_rev = _unit_rows(rng, L)
    other = _unit_rows(rng, L)
    across = other - (other * v_rev).sum(1, keepdims=True) * v_rev  # orthogonal to v_rev
    direction = sign * v_rev if sign else across
    acts = _drifting(rng.normal(size=(L, N, D)), direction, [0.0, 0.1, 0.5, 2.0])
    table = alignment_trajectory(acts, STEPS, v_rev, np.ones(N, dtype=bool))
    assert sorted(table["step"].unique()) == [1, 5, 20]
    assert len(table) == 3 * L
    np.testing.assert_allclose(table["alignment"], expected, atol=1e-4)
    assert (table.groupby("step")["drift_norm"].mean().diff().dropna() > 0).all()


def test_alignment_averages_only_over_the_masked_probes():
    rng = np.random.default_rng(1)
    v_rev = _unit_rows(rng, L)
    noise = _unit_rows(rng, L)
    mask = np.arange(N) < N // 2
    base = rng.normal(size=(L, N, D))
    moved = base + np.where(mask[None, :, None], v_rev[:, None, :], noise[:, None, :] * 5)
    acts = np.stack([base, moved])
    table = alignment_trajectory(acts, np.array([0, 1]), v_rev, mask)
    np.testing.assert_allclose(table["alignment"], 1.0, atol=1e-9)


def test_checkpoint_diff_gives_unit_float64_rows_toward_helpful():
    rng = np.random.default_rng(2)
    safe = rng.normal(size=(L, N, D)).astype(np.float32)
    toward = _unit_rows(rng, L)
    helpful = safe + 3.0 * toward[:, None, :] + 0.01 * rng.normal(size=(L, N, D))
    v = v_rev_checkpoint_diff(helpful.astype(np.float32), safe, np.ones(N, dtype=bool))
    assert v.shape == (L, D) and v.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=0, atol=1e-12)
    assert ((v * toward).sum(1) > 0.99).all()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_trajectory_pca_points_toward_helpful(sign):
    """Snapshot 0 is theta_H: the component is oriented from safe toward it, whatever SVD's sign."""
    rng = np.random.default_rng(3)
    axis = _unit_rows(rng, L)
    base = rng.normal(size=(L, N, D))
    k = 6
    sizes = sign * np.linspace(1.0, 0.0, k)  # helpful at 0, safe at k-1
    trajectory = _drifting(base, axis, sizes) + 0.001 * rng.normal(size=(k, L, N, D))
    pc = v_rev_trajectory_pca(trajectory, np.ones(N, dtype=bool))
    assert pc.shape == (L, D)
    np.testing.assert_allclose(np.linalg.norm(pc, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose((pc * axis).sum(1), sign, atol=1e-3)
    helpful_minus_safe = drift(trajectory[0], trajectory[-1], np.ones(N, dtype=bool))
    assert ((pc * helpful_minus_safe).sum(1) > 0).all()
