"""The probability-flow ODE with the exact score of a noised Gaussian mixture: its
log-likelihood equals the analytic log-density, Hutchinson's divergence is unbiased, encoding
then decoding returns the point, ODE samples recover the mixture within Monte Carlo error, and
the reported number of score evaluations is the number made. Bits per dimension: a uniform
model on the data range gives exactly log2(K) bits."""

import functools
import re

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import ode
from scorejax import sde as sdes

TARGET = sj.GaussianMixture(
    means=jnp.array([[-2.0, 0.0], [1.0, 2.0]]),
    scales=jnp.array([0.5, 0.8]),
    weights=jnp.array([0.3, 0.7]),
)
SDES = {"ve": sdes.VESDE(), "vp": sdes.VPSDE(), "subvp": sdes.SubVPSDE()}
POINTS = jnp.array([[-2.0, 0.3], [0.5, 1.5], [1.5, 3.0]])


def exact_score(sde, x, t):
    return TARGET.marginal(sde, t).score(x)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n != "vp" else n for n in SDES]
)
def test_log_likelihood_with_the_exact_score_is_the_analytic_log_density(name):
    """log p_eps(x) = log p_1(z) + delta, with p_1 the exact law at t = 1: the only error
    left is the solver's (rtol = atol = 1e-6 here; bound 1e-3 in log-density)."""
    sde = SDES[name]
    score_fn = functools.partial(exact_score, sde)
    result = jax.vmap(lambda x: ode.log_likelihood(sde, score_fn, x, rtol=1e-6, atol=1e-6))(POINTS)
    exact_p1 = jax.vmap(TARGET.marginal(sde, 1.0).log_prob)(result.z)
    expected = jax.vmap(TARGET.marginal(sde, sde.eps).log_prob)(POINTS)
    np.testing.assert_allclose(exact_p1 + result.delta_log_prob, expected, atol=1e-3)
    # with the prior in place of p_1 the answer moves by the prior's mismatch only
    np.testing.assert_allclose(
        result.log_prob - result.prior_log_prob, result.delta_log_prob, rtol=1e-6
    )


@pytest.mark.parametrize(
    "probe", [jax.random.rademacher, jax.random.normal], ids=["rademacher", "gaussian"]
)
def test_hutchinson_likelihood_is_unbiased_for_the_exact_divergence(probe):
    sde = SDES["vp"]
    score_fn = functools.partial(exact_score, sde)
    x = POINTS[1]
    exact = ode.log_likelihood(sde, score_fn, x, rtol=1e-6, atol=1e-6)
    keys = jax.random.split(jax.random.key(0), 400)
    estimates = jax.vmap(
        lambda k: (
            ode.log_likelihood(
                sde, score_fn, x, key=k, probe=probe, rtol=1e-6, atol=1e-6
            ).delta_log_prob
        )
    )(keys)
    estimates = np.asarray(estimates, np.float64)
    se = estimates.std(ddof=1) / np.sqrt(estimates.size)
    assert se > 0  # a genuine estimate, not the exact trace
    assert abs(estimates.mean() - float(exact.delta_log_prob)) < 4 * se + 1e-3


@pytest.mark.parametrize("name", SDES)
def test_encode_then_decode_returns_the_point(name):
    sde = SDES[name]
    score_fn = functools.partial(exact_score, sde)
    roundtrip = jax.vmap(
        lambda x: (
            ode.ode_sample(
                sde,
                score_fn,
                ode.encode(sde, score_fn, x, rtol=1e-6, atol=1e-6).x,
                rtol=1e-6,
                atol=1e-6,
            ).x
        )
    )(POINTS)
    np.testing.assert_allclose(roundtrip, POINTS, atol=2e-3)


@pytest.mark.parametrize("name", [pytest.param("ve", marks=pytest.mark.slow), "vp"])
def test_ode_samples_recover_the_mixture(name):
    sde, n = SDES[name], 4000
    score_fn = functools.partial(exact_score, sde)
    x_init = sde.prior_sample(jax.random.key(0), (n, 2))
    x = jax.vmap(lambda v: ode.ode_sample(sde, score_fn, v).x)(x_init)
    resp = jax.vmap(lambda v: jax.nn.softmax(TARGET.component_log_probs(v)))(x)
    stats = np.asarray(jnp.concatenate([resp, x], axis=1), np.float64)
    exact = np.concatenate([np.asarray(TARGET.weights), np.asarray(TARGET.weights @ TARGET.means)])
    se = stats.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(stats.mean(axis=0) - exact) < 4 * se)


@pytest.mark.parametrize(
    ("solver", "num_steps"),
    [(None, None), (diffrax.Dopri5(), None), (None, 20), (diffrax.Euler(), 30)],
    ids=["tsit5", "dopri5", "heun-20", "euler-30"],
)
def test_reported_evaluations_are_the_evaluations_made(solver, num_steps):
    """Each score call runs a host callback that counts it (one solve, not vmapped)."""
    sde = SDES["vp"]
    calls = []

    def counted(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return exact_score(sde, x, t)

    result = jax.jit(lambda x: ode.ode_sample(sde, counted, x, solver=solver, num_steps=num_steps))(
        jnp.array([0.5, -0.3])
    )
    jax.effects_barrier()
    assert int(result.nfe) == len(calls) > 0
    if num_steps is not None:
        assert int(result.num_steps) == num_steps


@pytest.mark.slow
def test_fixed_step_heun_converges_to_the_adaptive_solution():
    sde = SDES["vp"]
    score_fn = functools.partial(exact_score, sde)
    x = jnp.array([0.5, -0.3])
    reference = ode.ode_sample(sde, score_fn, x, rtol=1e-7, atol=1e-7).x
    errors = [
        float(jnp.linalg.norm(ode.ode_sample(sde, score_fn, x, num_steps=n).x - reference))
        for n in (50, 100, 200)
    ]
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] / errors[1] < 0.35  # second order: the error quarters as steps double


def test_bits_per_dim_of_a_uniform_model_is_log2_of_the_levels():
    """A model uniform on [low, high]^D has log p_y = -D log(high - low) at every dequantised
    point: exactly log2(K) bits per dimension whatever the range."""
    d = 64
    for low, high in ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)):
        log_prob = -d * np.log(high - low)
        bpd = ode.bits_per_dim(log_prob, d, low=low, high=high, num_levels=256)
        np.testing.assert_allclose(bpd, 8.0, rtol=1e-6)
    # a density on [-1, 1] twice as high everywhere is one bit per dimension better
    np.testing.assert_allclose(ode.bits_per_dim(-d * np.log(1.0), d), 7.0, rtol=1e-6)


def test_dequantize_stays_in_the_cell_of_each_integer():
    x = jnp.arange(256).reshape(16, 16)
    y = ode.dequantize(jax.random.key(0), x, low=-1.0, high=1.0)
    assert float(y.min()) >= -1.0 and float(y.max()) < 1.0
    cells = np.floor((np.asarray(y) + 1.0) / 2.0 * 256).astype(int)
    np.testing.assert_array_equal(cells, np.asarray(x))


BAD = [
    (
        "rtol = 0",
        lambda: ode.ode_sample(SDES["vp"], lambda x, t: x, jnp.zeros(2), rtol=0.0),
        ValueError,
        "rtol",
    ),
    (
        "num_steps = 0",
        lambda: ode.ode_sample(SDES["vp"], lambda x, t: x, jnp.zeros(2), num_steps=0),
        ValueError,
        "num_steps",
    ),
    (
        "beta_min > beta_max",
        lambda: ode.log_likelihood(sdes.VPSDE(5.0, 1.0), lambda x, t: x, jnp.zeros(2)),
        ValueError,
        "beta_min must be at most beta_max",
    ),
    (
        "solve from t0 > 1",
        lambda: ode.solve_flow(SDES["vp"], lambda x, t: x, jnp.zeros(2), 1.5, 0.5),
        ValueError,
        "t0 must lie in [0.001, 1]",
    ),
    (
        "solve to t1 below eps",
        lambda: ode.solve_flow(SDES["vp"], lambda x, t: x, jnp.zeros(2), 1.0, 0.0),
        ValueError,
        "t1 must lie in [0.001, 1]",
    ),
    (
        "score not callable",
        lambda: ode.encode(SDES["ve"], None, jnp.zeros(2)),
        TypeError,
        "score_fn",
    ),
    (
        "bits per dim, high <= low",
        lambda: ode.bits_per_dim(0.0, 4, low=1.0, high=1.0),
        ValueError,
        "high must exceed low",
    ),
    ("bits per dim, num_dims = 0", lambda: ode.bits_per_dim(0.0, 0), ValueError, "num_dims"),
]


@pytest.mark.parametrize(("what", "call", "error", "match"), BAD, ids=[row[0] for row in BAD])
def test_bad_ode_input_raises_a_clear_error(what, call, error, match):
    with pytest.raises(error, match=re.escape(match)):
        call()
