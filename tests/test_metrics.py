"""Metrics against closed forms: MMD between Gaussians, Fisher divergence, mode weights."""

import jax
import jax.numpy as jnp
import numpy as np

import scorejax as sj
from scorejax import metrics


def rbf_mean(mu1, s1, mu2, s2, h, dim):
    """E exp(-|x - y|^2 / 2h^2) for x ~ N(mu1, s1^2 I), y ~ N(mu2, s2^2 I) (independent)."""
    v = h**2 + s1**2 + s2**2
    return (h**2 / v) ** (dim / 2) * np.exp(-np.sum((mu1 - mu2) ** 2) / (2 * v))


def test_unbiased_mmd_matches_the_closed_form_between_gaussians():
    """Gretton et al. 2012: the U-statistic is unbiased. Mean over 100 repeats within 4.5
    standard errors of the exact MMD^2 (false-alarm rate ~7e-6)."""
    dim, h, s = 2, 1.0, 1.0
    mu1, mu2 = np.zeros(dim), np.array([0.5, 0.0])
    exact = (
        rbf_mean(mu1, s, mu1, s, h, dim)
        + rbf_mean(mu2, s, mu2, s, h, dim)
        - 2 * rbf_mean(mu1, s, mu2, s, h, dim)
    )

    def one(key):
        k1, k2 = jax.random.split(key)
        x = jax.random.normal(k1, (200, dim))
        y = mu2 + jax.random.normal(k2, (200, dim))
        return metrics.mmd(x, y, bandwidths=h)

    values = np.asarray(jax.lax.map(one, jax.random.split(jax.random.key(0), 100)), np.float64)
    assert abs(values.mean() - exact) < 4.5 * values.std() / np.sqrt(values.size)


def test_noise_floor_is_small_and_mmd_detects_a_shift():
    sample = lambda k, n: jax.random.normal(k, (n, 2))
    floor = float(metrics.mmd_noise_floor(jax.random.key(0), sample, 500, 5))
    shifted = sample(jax.random.key(1), 500) + 1.0
    assert float(metrics.mmd(shifted, sample(jax.random.key(2), 500))) > 20 * floor


def test_energy_distance_zero_for_identical_sets_and_positive_otherwise():
    x = jax.random.normal(jax.random.key(0), (300, 2))
    assert abs(float(metrics.energy_distance(x, x))) < 1e-4
    assert float(metrics.energy_distance(x, x + 2.0)) > 1.0


def test_fisher_divergence_between_equal_variance_gaussians_is_closed_form():
    """s1 - s2 = mu1 - mu2 everywhere for unit-variance Gaussians: FD = 1/2 |mu1 - mu2|^2."""
    g1 = sj.Gaussian(jnp.zeros(2), jnp.eye(2))
    g2 = sj.Gaussian(jnp.array([1.0, 2.0]), jnp.eye(2))
    x = g1.sample(jax.random.key(0), 100)
    np.testing.assert_allclose(metrics.fisher_divergence(g1.score, g2.score, x), 2.5, rtol=1e-5)
    w = jnp.exp(jax.vmap(g1.log_prob)(x))
    np.testing.assert_allclose(metrics.fisher_divergence(g1.score, g2.score, x, w), 2.5, rtol=1e-5)


def test_mode_weights_counts_nearest_means_and_skips_non_finite_rows():
    means = jnp.array([[-1.0, 0.0], [1.0, 0.0]])
    x = jnp.array([[-0.9, 0.1], [-2.0, 0.0], [0.8, 0.0], [jnp.nan, 0.0]])
    np.testing.assert_allclose(metrics.mode_weights(x, means), [2 / 3, 1 / 3], rtol=1e-6)
