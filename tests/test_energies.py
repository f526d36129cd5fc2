"""Analytic targets: autodiff scores equal the closed forms, densities are normalised,
exact samplers have the right moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import scorejax as sj
from scorejax import data

GAUSSIAN = sj.Gaussian(jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.6], [0.6, 2.0]]))
MIXTURE_ISO = data.two_gaussians()
MIXTURE_DIAG = sj.GaussianMixture(
    jnp.array([[-1.0, 0.0], [1.5, 1.0], [0.0, -2.0]]),
    jnp.array([[0.5, 1.0], [0.8, 0.3], [1.2, 0.7]]),
    jnp.array([0.2, 0.5, 0.3]),
)
TARGETS = {
    "gaussian": GAUSSIAN,
    "mixture_iso": MIXTURE_ISO,
    "mixture_diag": MIXTURE_DIAG,
    "noised_mixture": MIXTURE_DIAG.noised(0.7),
    "double_well": sj.DoubleWell(jnp.array(3.0)),
    "rings": sj.Rings(jnp.array([1.0, 2.5]), jnp.array(0.3), jnp.array([0.4, 0.6])),
    "banana": sj.Banana(jnp.array(1.5), jnp.array(0.2)),
}
POINTS = jax.random.normal(jax.random.key(0), (16, 2)) * 2.0


def _log_partition(target):
    return target.log_partition(2) if isinstance(target, sj.DoubleWell) else target.log_partition()


def test_boltzmann_seed_example():
    p = sj.boltzmann_probs(jnp.array([3.0, 1.0, 2.0]))
    np.testing.assert_allclose(p, [0.0900, 0.6652, 0.2447], atol=1e-4)
    e = jnp.array([3.0, 1.0, 2.0])
    np.testing.assert_allclose(sj.log_partition_finite(e), np.log(np.exp(-e).sum()), rtol=1e-6)
    # high temperature flattens, T -> 0 concentrates on the lowest energy
    np.testing.assert_allclose(sj.boltzmann_probs(e, 1e4), np.full(3, 1 / 3), atol=1e-4)
    np.testing.assert_allclose(sj.boltzmann_probs(e, 1e-2), [0, 1, 0], atol=1e-6)


@pytest.mark.parametrize("name", TARGETS)
def test_autodiff_score_equals_closed_form(name):
    target = TARGETS[name]
    score = sj.score_from_energy(type(target).energy)
    auto = jax.vmap(score, in_axes=(None, 0))(target, POINTS)
    closed = jax.vmap(target.score)(POINTS)
    np.testing.assert_allclose(auto, closed, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", TARGETS)
def test_energy_gradients_pass_check_grads(name):
    target = TARGETS[name]
    check_grads(target.energy, (POINTS[3],), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("name", TARGETS)
def test_log_prob_is_normalised(name):
    """Quadrature of exp(log p) over a box holding all the mass gives 1."""
    target = TARGETS[name]
    log_z = sj.log_partition_quadrature(lambda x: -target.log_prob(x), [-9, -9], [9, 9], 901)
    assert abs(float(log_z)) < 1e-4
    # and energy / log_prob agree up to log Z
    diff = jax.vmap(lambda x: -target.energy(x) - target.log_prob(x))(POINTS)
    np.testing.assert_allclose(diff, _log_partition(target), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TARGETS)
def test_exact_sampler_moments(name):
    """Sample mean of x and x^2 match quadrature moments within 5 standard errors
    (false-alarm rate ~6e-7 per coordinate)."""
    target = TARGETS[name]
    n = 40_000
    x = np.asarray(target.sample(jax.random.key(1), n))
    assert x.shape == (n, 2)
    ticks = np.linspace(-9, 9, 541)
    xs, ys = np.meshgrid(ticks, ticks, indexing="ij")
    pts = jnp.asarray(np.stack([xs.ravel(), ys.ravel()], 1), jnp.float32)
    p = np.exp(np.asarray(jax.vmap(target.log_prob)(pts), np.float64))
    p /= p.sum()
    for f in (lambda v: v, lambda v: v**2):
        exact = f(np.asarray(pts, np.float64)).T @ p
        values = f(x.astype(np.float64))
        se = values.std(0) / np.sqrt(n)
        np.testing.assert_array_less(np.abs(values.mean(0) - exact), 5 * se)


def test_noised_mixture_is_the_convolution():
    """q_sigma(x) = E_z p(x - sigma z): Monte Carlo over z matches the closed form."""
    sigma = 0.6
    z = jax.random.normal(jax.random.key(2), (200_000, 2))
    x = jnp.array([0.3, -0.4])
    dens = jnp.exp(jax.vmap(MIXTURE_DIAG.log_prob)(x - sigma * z))
    se = float(dens.std() / np.sqrt(z.shape[0]))
    exact = float(jnp.exp(MIXTURE_DIAG.noised(sigma).log_prob(x)))
    assert abs(float(dens.mean()) - exact) < 5 * se


def test_double_well_log_partition_matches_quadrature():
    well = sj.DoubleWell(jnp.array(2.0))
    quad = sj.log_partition_quadrature(well.energy, [-5.0, -9.0], [5.0, 9.0], 1501)
    np.testing.assert_allclose(well.log_partition(2), quad, atol=1e-4)
    # the barrier: E(0) - E(+-1) = barrier
    x = jnp.zeros(3)
    assert float(well.energy(x) - well.energy(x.at[0].set(1.0))) == pytest.approx(2.0)
