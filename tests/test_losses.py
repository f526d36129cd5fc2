"""DSM and NCSN losses: closed-form optimum on Gaussian data, finite gradients, errors."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import nets

MEAN = jnp.array([1.0, -0.5])
COV = jnp.array([[1.0, 0.3], [0.3, 0.5]])
DATA = sj.Gaussian(MEAN, COV)


def exact_noised_score(params, x, sigma=None):
    return DATA.noised(params if sigma is None else sigma).score(x)


def dsm_minimum(sigma):
    """1/2 (D / sigma^2 - tr((Sigma + sigma^2 I)^{-1})): DSM at the exact noised score."""
    return 0.5 * (2 / sigma**2 - np.trace(np.linalg.inv(np.asarray(COV) + sigma**2 * np.eye(2))))


def _mc(loss, num_batches=200, batch=1000):
    keys = jax.random.split(jax.random.key(0), num_batches)

    def one(k):
        k_data, k_loss = jax.random.split(k)
        return loss(k_loss, DATA.sample(k_data, batch))

    values = np.asarray(jax.lax.map(one, keys), np.float64)
    return values.mean(), values.std() / np.sqrt(num_batches)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_dsm_at_the_exact_noised_score_equals_its_closed_form_minimum(sigma):
    """Vincent 2011: the optimum is grad log q_sigma; the loss there is known in closed form.
    Monte Carlo mean within 4.5 standard errors (false-alarm rate ~7e-6)."""
    loss = lambda k, b: sj.dsm_loss(sigma, k, b, score_fn=exact_noised_score, sigma=sigma)
    mean, se = _mc(loss)
    assert abs(mean - dsm_minimum(sigma)) < 4.5 * se


def test_dsm_excess_loss_of_a_wrong_score():
    """The DSM loss of s = c * s* exceeds the minimum by 1/2 (1 - c)^2 E|s*|^2 =
    1/2 (1 - c)^2 tr((Sigma + sigma^2 I)^{-1}). Paired Monte Carlo (same noise for both
    scores), within 4.5 standard errors of the paired differences."""
    sigma, c = 0.5, 0.8
    keys = jax.random.split(jax.random.key(0), 200)

    def difference(k):
        k_data, k_loss = jax.random.split(k)
        b = DATA.sample(k_data, 1000)
        wrong = lambda p, x: c * exact_noised_score(p, x)
        return sj.dsm_loss(sigma, k_loss, b, score_fn=wrong, sigma=sigma) - sj.dsm_loss(
            sigma, k_loss, b, score_fn=exact_noised_score, sigma=sigma
        )

    values = np.asarray(jax.lax.map(difference, keys), np.float64)
    se = values.std() / np.sqrt(values.size)
    inv = np.linalg.inv(np.asarray(COV) + sigma**2 * np.eye(2))
    assert abs(values.mean() - 0.5 * (1 - c) ** 2 * np.trace(inv)) < 4.5 * se


def test_ncsn_loss_at_the_exact_scores_is_the_weighted_average_of_minima():
    """lambda(sigma) = sigma^2 times the DSM minimum, averaged uniformly over the ladder."""
    sigmas = sj.geometric_sigmas(2.0, 0.1, 4)
    loss = lambda k, b: sj.ncsn_loss(None, k, b, score_fn=exact_noised_score, sigmas=sigmas)
    mean, se = _mc(loss)
    expected = np.mean([float(s) ** 2 * dsm_minimum(float(s)) for s in sigmas])
    assert abs(mean - expected) < 4.5 * se


@pytest.mark.parametrize("parameterisation", ["score", "energy"])
def test_gradients_are_finite_at_the_smallest_sigma(parameterisation):
    batch = DATA.sample(jax.random.key(1), 64)
    if parameterisation == "score":
        model = nets.MLPScore((32, 32))
        score_fn = nets.apply_fn(model)
    else:
        model = nets.MLPEnergy((32, 32))
        score_fn = sj.score_from_energy(nets.apply_fn(model))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    grads = jax.grad(partial(sj.dsm_loss, score_fn=score_fn, sigma=1e-3))(
        params, jax.random.key(2), batch
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))

    conditional = nets.NoiseConditionalMLP((32, 32))
    cparams = conditional.init(jax.random.key(0), jnp.zeros(2), jnp.ones(()))
    sigmas = sj.geometric_sigmas(1.0, 1e-3, 5)
    grads = jax.grad(partial(sj.ncsn_loss, score_fn=nets.apply_fn(conditional), sigmas=sigmas))(
        cparams, jax.random.key(3), batch
    )
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_geometric_sigmas():
    sigmas = np.asarray(sj.geometric_sigmas(10.0, 0.01, 4))
    np.testing.assert_allclose(sigmas, [10.0, 1.0, 0.1, 0.01], rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: sj.dsm_loss(None, jax.random.key(0), jnp.ones(2), score_fn=None, sigma=0.1),
            "batch",
        ),
        (
            lambda: sj.dsm_loss(
                None, jax.random.key(0), jnp.ones((4, 2)), score_fn=None, sigma=0.0
            ),
            "sigma",
        ),
        (
            lambda: sj.ncsn_loss(
                None,
                jax.random.key(0),
                jnp.ones((4, 2)),
                score_fn=None,
                sigmas=jnp.array([0.1, 1.0]),
            ),
            "decreasing",
        ),
        (lambda: sj.geometric_sigmas(0.1, 1.0, 3), "sigma_max must exceed"),
        (lambda: sj.geometric_sigmas(1.0, 0.1, 0), "num_levels"),
    ],
)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
