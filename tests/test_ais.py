"""RBM partition functions: exact enumeration (both layers, chunked) against brute force,
AIS against exact within its own standard errors, AIS exact at zero weights, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from scorejax.rbm import (
    RBM,
    ais_betas,
    base_rate_visible_bias,
    rbm_ais,
    rbm_log_likelihood,
    rbm_log_partition_exact,
)


def random_rbm(key, num_visible, num_hidden, scale=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    return RBM(
        scale * jax.random.normal(k1, (num_visible, num_hidden)),
        0.5 * jax.random.normal(k2, (num_visible,)),
        0.5 * jax.random.normal(k3, (num_hidden,)),
    )


def binary_states(n):
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=n)), jnp.float32)


def brute_force_log_partition(params):
    vs, hs = binary_states(params.W.shape[0]), binary_states(params.W.shape[1])
    neg_e = jax.vmap(lambda v: jax.vmap(lambda h: -params.energy(v, h))(hs))(vs)
    return logsumexp(neg_e)


@pytest.mark.parametrize(("num_visible", "num_hidden"), [(7, 4), (4, 7)])
def test_exact_log_partition_matches_brute_force(num_visible, num_hidden):
    # (7, 4) sums out the visibles and enumerates h; (4, 7) enumerates v; chunk of 4 states
    params = random_rbm(jax.random.key(0), num_visible, num_hidden)
    expected = brute_force_log_partition(params)
    np.testing.assert_allclose(rbm_log_partition_exact(params), expected, rtol=1e-6)
    np.testing.assert_allclose(rbm_log_partition_exact(params, chunk_bits=2), expected, rtol=1e-6)


def test_log_likelihood_of_the_base_rate_model_is_the_bernoulli_likelihood():
    data = jax.random.bernoulli(jax.random.key(1), 0.3, (50, 6)).astype(jnp.float32)
    b = base_rate_visible_bias(data)
    params = RBM(jnp.zeros((6, 5)), b, jnp.zeros(5))
    p = jax.nn.sigmoid(b)
    expected = jnp.mean(jnp.sum(data * jnp.log(p) + (1 - data) * jnp.log1p(-p), axis=1))
    ll = rbm_log_likelihood(params, data, rbm_log_partition_exact(params))
    np.testing.assert_allclose(ll, expected, rtol=1e-5)


def test_ais_matches_exact_within_three_standard_errors():
    # a deliberately hard-ish tiny RBM (unit-scale weights): AIS's log Z estimate agrees
    # with enumeration within 3 of its own reported standard errors, and the error is small
    params = random_rbm(jax.random.key(2), 12, 6, scale=1.0)
    exact = rbm_log_partition_exact(params)
    data = jax.random.bernoulli(jax.random.key(3), 0.4, (100, 12)).astype(jnp.float32)
    result = rbm_ais(
        jax.random.key(4),
        params,
        num_runs=200,
        betas=ais_betas(100, 400, 500),
        base_visible_bias=base_rate_visible_bias(data),
    )
    se = float(result.standard_error)
    assert 0.0 < se < 0.1
    assert abs(float(result.log_partition) - float(exact)) < 3 * se
    assert result.log_weights.shape == (200,)
    # same key, same estimate
    again = rbm_ais(
        jax.random.key(4),
        params,
        num_runs=200,
        betas=ais_betas(100, 400, 500),
        base_visible_bias=base_rate_visible_bias(data),
    )
    assert float(again.log_partition) == float(result.log_partition)


def test_ais_is_exact_when_weights_are_zero():
    # W = 0 and base b_A = b: every run carries the same weight, so log Z is exact (the
    # hidden biases contribute sum_j softplus(c_j) deterministically) and the error is 0
    b = jnp.array([0.3, -1.0, 2.0, 0.0, -0.5])
    c = jnp.array([1.0, -2.0, 0.5])
    params = RBM(jnp.zeros((5, 3)), b, c)
    result = rbm_ais(jax.random.key(0), params, num_runs=16, betas=ais_betas(10, 10, 10),
                     base_visible_bias=b)  # fmt: skip
    expected = jnp.sum(jax.nn.softplus(b)) + jnp.sum(jax.nn.softplus(c))
    np.testing.assert_allclose(result.log_partition, expected, rtol=1e-6)
    np.testing.assert_allclose(rbm_log_partition_exact(params), expected, rtol=1e-6)
    assert float(result.standard_error) < 1e-6


def test_salakhutdinov_murray_schedule():
    betas = np.asarray(ais_betas())
    assert betas.shape == (14501,)
    assert betas[0] == 0.0 and betas[-1] == 1.0
    np.testing.assert_allclose(np.diff(betas)[:500], 1e-3, rtol=1e-3)
    np.testing.assert_allclose(np.diff(betas)[-10000:], 1e-5, rtol=2e-2)


def test_bad_input_raises():
    params = random_rbm(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="betas"):
        rbm_ais(jax.random.key(0), params, betas=jnp.array([0.1, 0.5, 1.0]))
    with pytest.raises(ValueError, match="base_visible_bias"):
        rbm_ais(jax.random.key(0), params, base_visible_bias=jnp.zeros(3))
    with pytest.raises(ValueError, match="num_runs"):
        rbm_ais(jax.random.key(0), params, num_runs=0)
    with pytest.raises(ValueError, match="max_units"):
        rbm_log_partition_exact(RBM(jnp.zeros((30, 30)), jnp.zeros(30), jnp.zeros(30)))
    with pytest.raises(ValueError, match="params"):
        rbm_log_partition_exact((jnp.zeros((3, 2)), jnp.zeros(3), jnp.zeros(2)))
    with pytest.raises(ValueError, match="data"):
        rbm_log_likelihood(params, jnp.zeros((5, 3)), 0.0)


def test_float64_is_honoured_when_enabled():
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64), random_rbm(jax.random.key(0), 5, 3)
        )
        exact = rbm_log_partition_exact(params)
        assert exact.dtype == jnp.float64 and ais_betas(5, 5, 5).dtype == jnp.float64
        w, b, c = (np.asarray(a, np.float64) for a in params)
        vs = np.asarray(list(itertools.product([0.0, 1.0], repeat=5)))
        hs = np.asarray(list(itertools.product([0.0, 1.0], repeat=3)))
        neg_e = vs @ b[:, None] + (hs @ c)[None, :] + vs @ w @ hs.T
        np.testing.assert_allclose(float(exact), np.logaddexp.reduce(neg_e.ravel()), rtol=1e-12)
        result = rbm_ais(jax.random.key(1), params, num_runs=4, betas=ais_betas(5, 5, 5))
        assert result.log_partition.dtype == jnp.float64
        assert result.log_weights.dtype == jnp.float64
