"""ULA and annealed Langevin: closed-form stationary laws, annealing, determinism, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import data, metrics

SIGMA = np.array([[1.0, 0.8], [0.8, 1.0]])
TARGET = sj.Gaussian(jnp.zeros(2), jnp.asarray(SIGMA, jnp.float32))


def ula_stationary_covariance(h: float) -> np.ndarray:
    """Solve C = A C A^T + 2h I with A = I - h Sigma^{-1} (vec trick, float64)."""
    a = np.eye(2) - h * np.linalg.inv(SIGMA)
    vec_c = np.linalg.solve(np.eye(4) - np.kron(a, a), (2 * h * np.eye(2)).ravel())
    return vec_c.reshape(2, 2)


def sample_covariance(h: float, n: int, num_steps: int, key) -> np.ndarray:
    x0 = jnp.zeros((n, 2))
    x = sj.run_chains(key, sj.ula(TARGET.score, h), x0, num_steps).state.x
    x = np.asarray(x, np.float64)
    return x.T @ x / n  # the mean is exactly zero by symmetry


@pytest.mark.parametrize("h", [0.2, 0.1])
def test_ula_covariance_is_the_discretised_stationary_law(h):
    """Independent chains after burn-in: each entry of the sample second-moment matrix is
    within 4.5 standard errors of the closed form (Var(x_i x_j) = C_ii C_jj + C_ij^2 for a
    Gaussian; false-alarm rate < 2e-5 for the three entries)."""
    n = 20_000
    exact = ula_stationary_covariance(h)
    # slowest contraction 1 - h * 0.556: 400 steps at h = 0.1 shrink the start by 1e-10
    emp = sample_covariance(h, n, 400, jax.random.key(0))
    se = np.sqrt((np.outer(np.diag(exact), np.diag(exact)) + exact**2) / n)
    np.testing.assert_array_less(np.abs(emp - exact), 4.5 * se)
    # the discretisation bias is real and resolved: the truth Sigma is rejected
    assert np.max(np.abs(emp - SIGMA) / se) > 4.5


def test_halving_the_step_moves_toward_sigma():
    bias = lambda h: np.linalg.norm(ula_stationary_covariance(h) - SIGMA)
    assert bias(0.05) < bias(0.1) < bias(0.2)
    # first order in h (Roberts & Tweedie 1996): the bias halves with the step
    assert bias(0.05) / bias(0.1) == pytest.approx(0.5, abs=0.05)


def _annealed(key, score_fn, x0, sigmas, **kw):
    fn = lambda k, x: sj.annealed_langevin(k, score_fn, x, sigmas, **kw)
    return jax.vmap(fn)(jax.random.split(key, x0.shape[0]), x0)


def test_annealing_recovers_unequal_weights_and_plain_langevin_does_not():
    """Song & Ermon 2019, Section 3.2: weights 0.2 / 0.8. Binomial standard errors over
    independent chains; annealed within 4 SE, plain Langevin more than 6 SE away."""
    target = data.unequal_mixture()
    n = 2000
    x0 = jax.random.uniform(jax.random.key(1), (n, 2), minval=-8.0, maxval=8.0)
    sigmas = sj.geometric_sigmas(20.0, 1.0, 10)
    exact = lambda x, sigma: target.noised(sigma).score(x)
    annealed = _annealed(
        jax.random.key(2), exact, x0, sigmas, step_size=0.05, num_steps_per_level=100
    )
    plain = sj.run_chains(jax.random.key(3), sj.ula(target.score, 0.05), x0, 1000)
    se = np.sqrt(0.2 * 0.8 / n)
    w_annealed = float(metrics.mode_weights(annealed.state.x, target.means)[0])
    w_plain = float(metrics.mode_weights(plain.state.x, target.means)[0])
    assert abs(w_annealed - 0.2) < 4 * se
    assert abs(w_plain - 0.2) > 6 * se


def test_annealed_schedule_and_denoising_step():
    sigmas = jnp.array([4.0, 2.0, 1.0])
    sigma_t, h_t = sj.samplers.annealed_step_sizes(sigmas, 0.1, 2)
    np.testing.assert_allclose(sigma_t, [4, 4, 2, 2, 1, 1])
    np.testing.assert_allclose(h_t, [1.6, 1.6, 0.4, 0.4, 0.1, 0.1], rtol=1e-6)
    # Tweedie's denoiser on a point mass at m: x + sigma^2 s(x, sigma) = m exactly
    m = jnp.array([1.0, -2.0])
    score = lambda x, sigma: -(x - m) / (sigma**2 + 0.0)
    result = sj.annealed_langevin(
        jax.random.key(0), score, jnp.zeros(2), sigmas, step_size=0.01, num_steps_per_level=3
    )
    np.testing.assert_allclose(result.state.x, m, atol=1e-5)


def test_same_key_same_samples_and_jit_matches_no_jit():
    sampler = sj.ula(TARGET.score, 0.1)
    key, x0 = jax.random.key(5), jnp.ones(2)
    a = sj.run(key, sampler, x0, 50).state.x
    b = sj.run(key, sampler, x0, 50).state.x
    np.testing.assert_array_equal(a, b)
    with jax.disable_jit():
        c = sj.run(key, sampler, x0, 50).state.x
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    different = sj.run(jax.random.key(6), sampler, x0, 50).state.x
    assert not np.allclose(a, different)


def test_no_retracing_on_second_call():
    """The first call traces the score three times (init's check of its output shape, the
    runner's eval_shape of one step to size the info accumulator, then the scan body);
    later calls must trace it no more."""
    score = chex.assert_max_traces(TARGET.score, n=3)
    sampler = sj.ula(score, 0.1)
    sj.run(jax.random.key(0), sampler, jnp.ones(2), 20)
    for seed in range(1, 3):  # new keys and x0, same trace
        sj.run(jax.random.key(seed), sampler, jnp.full(2, float(seed)), 20)

    # init's check, eval_shape, scan body, and the final denoising step: four, then none
    annealed_score = chex.assert_max_traces(lambda x, s: TARGET.noised(s).score(x), n=4)
    sigmas = sj.geometric_sigmas(2.0, 0.1, 5)
    for seed in range(3):
        sj.annealed_langevin(
            jax.random.key(seed),
            annealed_score,
            jnp.ones(2),
            sigmas,
            step_size=0.01,
            num_steps_per_level=4,
        )


def test_thinned_trace_and_info():
    result = sj.run(jax.random.key(0), sj.ula(TARGET.score, 0.1), jnp.ones(2), 100, thin=10)
    assert result.trace.x.shape == (10, 2)
    np.testing.assert_allclose(result.trace.x[-1], result.state.x)
    assert float(result.info.num_nonfinite) == 0.0


def test_divergence_is_counted_and_reported():
    """A step far beyond the stability limit h < 2 / lambda_max overflows to Inf/NaN."""
    sampler = sj.ula(TARGET.score, 50.0)
    with pytest.warns(RuntimeWarning, match="run_chains: 4 of 4 chain"):
        result = sj.run_chains(jax.random.key(0), sampler, jnp.ones((4, 2)), 300)
    assert np.all(np.asarray(result.info.num_nonfinite) > 0)
    with pytest.warns(RuntimeWarning, match="4 of 4 chain"):
        assert sj.warn_if_diverged(result.info, "test") == 4


def test_schedule_is_passed_per_step():
    """A zero step size at every step leaves the chain where it started."""
    sampler = sj.ula(TARGET.score, 0.1)
    result = sj.run(jax.random.key(0), sampler, jnp.ones(2), 10, schedule=(jnp.zeros(10),))
    np.testing.assert_array_equal(result.state.x, jnp.ones(2))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sj.ula(TARGET.score, 0.0), "step_size"),
        (lambda: sj.ula(TARGET.score, -1.0), "step_size"),
        (lambda: sj.run(jax.random.key(0), sj.ula(TARGET.score, 0.1), jnp.ones(2), 0), "num_steps"),
        (
            lambda: sj.run(jax.random.key(0), sj.ula(TARGET.score, 0.1), jnp.ones(2), 10, thin=3),
            "thin",
        ),
        (
            lambda: sj.run(
                jax.random.key(0),
                sj.ula(TARGET.score, 0.1),
                jnp.ones(2),
                10,
                schedule=(jnp.ones(9),),
            ),
            "schedule",
        ),
        (
            lambda: sj.annealed_langevin(
                jax.random.key(0),
                None,
                jnp.ones(2),
                jnp.array([0.1, 1.0]),
                step_size=0.1,
                num_steps_per_level=2,
            ),
            "decreasing",
        ),
        (
            lambda: sj.annealed_langevin(
                jax.random.key(0),
                None,
                jnp.ones(2),
                jnp.array([1.0, 0.1]),
                step_size=0.1,
                num_steps_per_level=0,
            ),
            "num_steps_per_level",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
