"""Null distributions for the cosine between a drift and a direction in R^d."""

from collections.abc import Iterator

import numpy as np
from scipy import stats

# Samples are drawn in chunks of at most this many floats, so n * d never sits in memory at once.
_CHUNK_FLOATS = 1 << 22


def _as_vector(x: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} has non-finite entries")
    return v


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    v = _as_vector(x, name)
    norm = np.linalg.norm(v)
    if norm == 0.0:
        raise ValueError(f"{name} has zero norm")
    return v / norm


def _check_dim(d: int) -> None:
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 2:
        raise ValueError(f"d must be an integer >= 2, got {d!r}")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")


def _check_q(q: float) -> None:
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie strictly between 0 and 1, got {q!r}")


def _chunks(n: int, d: int) -> Iterator[int]:
    size = max(1, _CHUNK_FLOATS // d)
    for start in range(0, n, size):
        yield min(size, n - start)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors, in float64."""
    ua, ub = _unit(a, "a"), _unit(b, "b")
    if ua.shape != ub.shape:
        raise ValueError(f"a and b differ in shape: {ua.shape} vs {ub.shape}")
    return float(np.clip(ua @ ub, -1.0, 1.0))


def cosines(matrix: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Cosine between each row of matrix (n, d) and v (d,); rows of zero norm raise."""
    m = np.asarray(matrix, dtype=np.float64)
    u = _unit(v, "v")
    if m.ndim != 2 or m.shape[1] != u.size:
        raise ValueError(f"matrix must have shape (n, {u.size}), got {m.shape}")
    norms = np.linalg.norm(m, axis=1)
    if np.any(norms == 0.0):
        raise ValueError("matrix has rows of zero norm")
    return np.clip((m @ u) / norms, -1.0, 1.0)


def isotropic_quantile(d: int, q: float = 0.99) -> float:
    """Quantile q of the cosine to a uniform direction in R^d: (c+1)/2 ~ Beta((d-1)/2, (d-1)/2)."""
    _check_dim(d)
    _check_q(q)
    a = (d - 1) / 2.0
    return float(2.0 * stats.beta.ppf(q, a, a) - 1.0)


def isotropic_samples(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Cosines between e_1 and n uniform directions (normalised Gaussians) in R^d."""
    _check_dim(d)
    _check_n(n)
    out = []
    for m in _chunks(n, d):
        z = rng.standard_normal((m, d))
        out.append(z[:, 0] / np.linalg.norm(z, axis=1))
    return np.concatenate(out)


def monte_carlo_quantile(samples: np.ndarray, q: float = 0.99) -> tuple[float, float]:
    """Empirical quantile q and its standard error from the binomial order-statistic interval.

    The rank of x_q among n draws is Binomial(n, q); the order statistics at ranks
    nq +- sqrt(nq(1-q)) bracket one sd, so se = half their spread (no density estimate needed).
    """
    _check_q(q)
    x = np.sort(_as_vector(samples, "samples"))
    n = x.size
    if n < 2:
        raise ValueError(f"samples must hold at least 2 values, got {n}")
    spread = np.sqrt(n * q * (1.0 - q))
    lo = int(np.clip(np.floor(n * q - spread), 0, n - 1))
    hi = int(np.clip(np.ceil(n * q + spread), 0, n - 1))
    return float(np.quantile(x, q)), float((x[hi] - x[lo]) / 2.0)


def covariance(acts: np.ndarray) -> np.ndarray:
    """Sample covariance (ddof=1) of activations (N, d) as a float64 (d, d) matrix."""
    x = np.asarray(acts, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"acts must have shape (N, d) with N >= 2, got {x.shape}")
    x = x - x.mean(axis=0)
    return (x.T @ x) / (x.shape[0] - 1)


def _factor(cov: np.ndarray) -> np.ndarray:
    """L with L L^T = cov, from the eigendecomposition (negative eigenvalues clipped to 0)."""
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"cov must be a square (d, d) matrix with d >= 2, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("cov has non-finite entries")
    scale = max(float(np.abs(c).max()), np.finfo(np.float64).tiny)
    if not np.allclose(c, c.T, rtol=0.0, atol=1e-8 * scale):
        raise ValueError("cov must be symmetric")
    w, vecs = np.linalg.eigh((c + c.T) / 2.0)
    if w.max() <= 0.0:
        raise ValueError("cov has no positive eigenvalue")
    return vecs * np.sqrt(np.clip(w, 0.0, None))


def _directions(factor: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal((n, factor.shape[0])) @ factor.T
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def gaussian_directions(cov: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n unit directions z/|z| with z ~ N(0, cov), shape (n, d)."""
    _check_n(n)
    return _directions(_factor(cov), n, rng)


def anisotropic_samples(
    vector: np.ndarray, cov: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Cosines between vector and n directions drawn from N(0, cov)."""
    _check_n(n)
    factor = _factor(cov)
    u = _unit(vector, "vector")
    if u.size != factor.shape[0]:
        raise ValueError(f"vector has length {u.size} but cov is {factor.shape[0]}-dimensional")
    out = [np.clip(_directions(factor, m, rng) @ u, -1.0, 1.0) for m in _chunks(n, u.size)]
    return np.concatenate(out)


def random_direction(d: int, rng: np.random.Generator) -> np.ndarray:
    """A unit vector drawn uniformly on the sphere in R^d."""
    _check_dim(d)
    z = rng.standard_normal(d)
    return z / np.linalg.norm(z)


def covariance_direction(
    cov: np.ndarray, rng: np.random.Generator, orthogonal_to: np.ndarray | None = None
) -> np.ndarray:
    """One unit direction from N(0, cov), its component along orthogonal_to removed first."""
    factor = _factor(cov)
    d = factor.shape[0]
    z = factor @ rng.standard_normal(d)
    if orthogonal_to is None:
        return z / np.linalg.norm(z)
    u = _unit(orthogonal_to, "orthogonal_to")
    if u.size != d:
        raise ValueError(f"orthogonal_to has length {u.size} but cov is {d}-dimensional")
    c = factor @ factor.T
    # Variance left outside u is trace(P cov P) = trace(cov) - u^T cov u; none left means no
    # direction to draw, and normalising the round-off would fake one.
    if np.trace(c) - u @ c @ u <= 1e-12 * np.trace(c):
        raise ValueError("cov has no variance orthogonal to orthogonal_to")
    z = z - (z @ u) * u
    return z / np.linalg.norm(z)


def exceedance(values: np.ndarray, threshold: float) -> tuple[int, int]:
    """How many values strictly exceed threshold, and how many values there are."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    return int(np.count_nonzero(v > threshold)), int(v.size)
