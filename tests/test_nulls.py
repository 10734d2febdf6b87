import numpy as np
import pytest

from gravrev.stats import nulls


@pytest.mark.parametrize("d", [8, 64, 256])
def test_closed_form_p99_matches_monte_carlo(d):
    rng = np.random.default_rng(d)
    samples = nulls.isotropic_samples(d, 200_000, rng)
    est, se = nulls.monte_carlo_quantile(samples, 0.99)
    assert se > 0
    assert abs(est - nulls.isotropic_quantile(d, 0.99)) <= 4 * se


def test_closed_form_decreases_with_dimension():
    qs = [nulls.isotropic_quantile(d) for d in (2, 3, 8, 64, 256, 4096)]
    assert all(a > b for a, b in zip(qs, qs[1:], strict=False))
    assert 0 < qs[-1] < 0.05


def test_d3_cosine_is_uniform():
    # Archimedes: in R^3 the cosine to a uniform direction is uniform on [-1, 1].
    assert nulls.isotropic_quantile(3, 0.99) == pytest.approx(0.98, abs=1e-12)
    assert nulls.isotropic_quantile(3, 0.25) == pytest.approx(-0.5, abs=1e-12)


def test_isotropic_samples_shape_and_range():
    c = nulls.isotropic_samples(16, 1000, np.random.default_rng(0))
    assert c.shape == (1000,) and c.dtype == np.float64
    assert np.all(np.abs(c) <= 1)


def test_monte_carlo_se_shrinks_with_n():
    rng = np.random.default_rng(1)
    _, se_small = nulls.monte_carlo_quantile(rng.standard_normal(2_000))
    _, se_large = nulls.monte_carlo_quantile(rng.standard_normal(200_000))
    assert se_large < se_small / 5


def test_anisotropic_with_identity_matches_isotropic():
    d, n = 32, 200_000
    rng = np.random.default_rng(7)
    v = rng.standard_normal(d)
    c = nulls.anisotropic_samples(v, np.eye(d), n, rng)
    est, se = nulls.monte_carlo_quantile(c, 0.99)
    assert abs(est - nulls.isotropic_quantile(d, 0.99)) <= 4 * se


def test_anisotropic_rank_one_along_vector_is_plus_minus_one():
    rng = np.random.default_rng(3)
    v = rng.standard_normal(10)
    c = nulls.anisotropic_samples(v, np.outer(v, v), 500, rng)
    np.testing.assert_allclose(np.abs(c), 1.0, atol=1e-10)
    assert (c > 0).any() and (c < 0).any()


def test_anisotropic_concentrates_on_high_variance_axis():
    d = 16
    cov = np.diag([100.0] + [1.0] * (d - 1))
    e1 = np.eye(d)[0]
    c = nulls.anisotropic_samples(e1, cov, 20_000, np.random.default_rng(4))
    assert np.quantile(np.abs(c), 0.5) > 0.8


def test_gaussian_directions_unit_norm_and_clip_negative_eigenvalues():
    cov = np.diag([1.0, 2.0, -1e-9])  # tiny negative eigenvalue from round-off
    u = nulls.gaussian_directions(cov, 100, np.random.default_rng(0))
    assert u.shape == (100, 3)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0)
    assert np.all(np.abs(u[:, 2]) < 1e-12)


def test_covariance_matches_numpy():
    acts = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    cov = nulls.covariance(acts)
    assert cov.dtype == np.float64
    np.testing.assert_allclose(cov, np.cov(acts.astype(np.float64), rowvar=False))


def test_covariance_direction_orthogonal_and_unit():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((200, 12))
    cov = nulls.covariance(a)
    v = rng.standard_normal(12)
    for _ in range(5):
        u = nulls.covariance_direction(cov, rng, orthogonal_to=v)
        assert np.linalg.norm(u) == pytest.approx(1.0)
        assert abs(nulls.cosine(u, v)) < 1e-10
    w = nulls.covariance_direction(cov, rng)
    assert np.linalg.norm(w) == pytest.approx(1.0)


def test_covariance_direction_without_orthogonal_variance_raises():
    v = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="orthogonal_to"):
        nulls.covariance_direction(np.outer(v, v), np.random.default_rng(0), orthogonal_to=v)


def test_random_direction_is_unit():
    u = nulls.random_direction(9, np.random.default_rng(0))
    assert u.shape == (9,) and np.linalg.norm(u) == pytest.approx(1.0)


def test_cosine_and_cosines():
    assert nulls.cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(2**-0.5)
    assert nulls.cosine(np.array([1.0, 2.0]), np.array([-2.0, -4.0])) == pytest.approx(-1.0)
    m = np.array([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(nulls.cosines(m, np.array([2.0, 0.0])), [1.0, 0.0, -1.0])


def test_exceedance_is_strict():
    assert nulls.exceedance(np.array([0.1, 0.5, 0.5, 0.9]), 0.5) == (1, 4)
    assert nulls.exceedance(np.array([]), 0.5) == (0, 0)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: nulls.isotropic_quantile(1), "d"),
        (lambda: nulls.isotropic_quantile(8, q=1.0), "q"),
        (lambda: nulls.isotropic_quantile(8, q=0.0), "q"),
        (lambda: nulls.isotropic_samples(8, 0, np.random.default_rng(0)), "n"),
        (lambda: nulls.monte_carlo_quantile(np.ones(10), q=1.5), "q"),
        (lambda: nulls.cosine(np.zeros(3), np.ones(3)), "a"),
        (lambda: nulls.cosines(np.ones((2, 3)), np.zeros(3)), "v"),
        (lambda: nulls.cosines(np.ones((2, 4)), np.ones(3)), "matrix"),
        (lambda: nulls.covariance(np.ones(5)), "acts"),
        (lambda: nulls.gaussian_directions(np.ones((2, 3)), 5, np.random.default_rng(0)), "cov"),
        (lambda: nulls.gaussian_directions(np.zeros((3, 3)), 5, np.random.default_rng(0)), "cov"),
        (
            lambda: nulls.anisotropic_samples(np.ones(4), np.eye(3), 5, np.random.default_rng(0)),
            "vector",
        ),
        (lambda: nulls.random_direction(1, np.random.default_rng(0)), "d"),
        (lambda: nulls.exceedance(np.ones(3), float("nan")), "threshold"),
    ],
)
def test_bad_inputs_raise_naming_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
