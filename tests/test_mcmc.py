"""RWM, MALA, HMC, leapfrog, step-size adaptation and SGLD schedules.

Statistical checks: chains start from exact samples (so there is no burn-in bias) and
every estimate must lie within k * MCSE of the truth, the MCSE being sd / sqrt(ESS) with
the ESS from ``scorejax.diagnostics`` (Geyer's initial monotone sequence). k is the
two-sided normal quantile for a family-wise false-alarm rate of 1e-3 over all the
comparisons of the invariance test (Bonferroni), not a tuned number.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import scorejax as sj
from scorejax import diagnostics
from scorejax.samplers import (
    HMC_TARGET_ACCEPTANCE,
    MALA_TARGET_ACCEPTANCE,
    adapt_step_size,
    adapt_step_size_chains,
    constant_schedule,
    cube_root_decay,
    hmc,
    inverse_sqrt_decay,
    kinetic_energy,
    leapfrog,
    mala,
    polynomial_decay,
    run,
    run_chains,
    rwm,
    ula,
)

MEAN = jnp.array([1.0, -2.0])
STD = jnp.array([1.0, 2.0])
RHO = 0.8
TARGET = sj.Gaussian(MEAN, jnp.array([[1.0, RHO * 2.0], [RHO * 2.0, 4.0]]))

KERNELS = {
    "rwm": rwm(TARGET.energy, 0.4),
    "mala": mala(TARGET.energy, 0.15),
    "hmc": hmc(TARGET.energy, 0.25, 6),
    "hmc_diag_mass": hmc(TARGET.energy, 0.4, 6, inverse_mass=STD**2),
    # M^-1 = the target's covariance: HMC on a whitened target (Neal 2011, Section 5.4.1)
    "hmc_dense_mass": hmc(TARGET.energy, 0.4, 6, inverse_mass=TARGET.cov),
}
NUM_SEEDS, NUM_CHAINS, NUM_STEPS = 2, 8, 4000
X0 = TARGET.sample(jax.random.key(0), NUM_CHAINS)
NUM_COMPARISONS = 5 * len(KERNELS)  # means (2), variances (2), correlation, per kernel
K_SIGMA = norm.isf(1e-3 / (2 * NUM_COMPARISONS))  # two-sided, Bonferroni: about 4.06


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernels_leave_correlated_gaussian_invariant(name):
    # jitted and vmapped over seeds (outer) and chains (inner, run_chains)
    sampler = KERNELS[name]
    over_seeds = jax.jit(jax.vmap(lambda k: run_chains(k, sampler, X0, NUM_STEPS, thin=1)))
    keys = jax.random.split(jax.random.key(1), NUM_SEEDS)
    result = over_seeds(keys)
    again = over_seeds(keys)  # same key, same result
    np.testing.assert_array_equal(result.state.x, again.state.x)
    assert not np.allclose(result.state.x[0], result.state.x[1])  # seeds differ
    x = result.trace.x.reshape(NUM_SEEDS * NUM_CHAINS, NUM_STEPS, 2)
    assert np.all(np.asarray(result.info.num_nonfinite) == 0)
    z = (x - MEAN) / STD  # standardised with the known moments
    statistics = {
        "mean_0": z[..., 0],
        "mean_1": z[..., 1],
        "var_0": z[..., 0] ** 2,
        "var_1": z[..., 1] ** 2,
        "corr": z[..., 0] * z[..., 1],
    }
    truth = {"mean_0": 0.0, "mean_1": 0.0, "var_0": 1.0, "var_1": 1.0, "corr": RHO}
    for stat, values in statistics.items():
        estimate = float(jnp.mean(values))
        error = float(diagnostics.mcse(values))
        assert abs(estimate - truth[stat]) < K_SIGMA * error, (name, stat, estimate, error)
    assert 0.0 < float(jnp.mean(result.info.acceptance_rate)) < 1.0
    # enough effective draws for the normal approximation behind k (and a real test)
    assert np.all(np.asarray(diagnostics.effective_sample_size(x)) > 200)


def test_step_size_override_matches_rebuilt_kernel():
    state = jax.jit(KERNELS["mala"].init)(MEAN)
    key = jax.random.key(3)
    a, _ = jax.jit(KERNELS["mala"].step)(key, state, 0.3)
    b, _ = jax.jit(mala(TARGET.energy, 0.3).step)(key, state)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-6)


def test_mala_acceptance_matches_exact_hastings_ratio():
    # one step from x with a given key: recompute the proposal and the ratio by hand
    h, x = 0.2, jnp.array([0.3, -1.0])
    sampler = mala(TARGET.energy, h)
    key = jax.random.key(11)
    _, info = jax.jit(sampler.step)(key, jax.jit(sampler.init)(x))
    key_proposal, _ = jax.random.split(key)
    z = jax.random.normal(key_proposal, x.shape)
    y = x + h * TARGET.score(x) + jnp.sqrt(2 * h) * z
    log_q = lambda a, b: -jnp.sum((a - b - h * TARGET.score(b)) ** 2) / (4 * h)
    log_ratio = TARGET.energy(x) - TARGET.energy(y) + log_q(x, y) - log_q(y, x)
    np.testing.assert_allclose(info.acceptance_rate, min(1.0, float(jnp.exp(log_ratio))), 1e-4)


def test_nonfinite_proposals_are_rejected():
    energy_fn = lambda x: jnp.where(x[0] > 0.5, jnp.nan, 0.5 * jnp.sum(x**2))
    with pytest.warns(RuntimeWarning, match="divergent transitions"):
        result = run(jax.random.key(0), rwm(energy_fn, 0.5), jnp.array([-1.0, 0.0]), 300, thin=1)
    assert np.all(np.asarray(result.trace.x[:, 0]) <= 0.5)
    assert float(result.info.num_nonfinite) == 0.0  # the chain itself stayed finite
    assert float(result.info.is_divergent) > 0.0  # its NaN proposals are reported
    assert 0.0 < float(result.info.acceptance_rate) < 1.0


# --- leapfrog ------------------------------------------------------------------------


def _quartic(x):
    return 0.25 * jnp.sum(x**4) + 0.5 * jnp.sum(x**2) + 0.3 * x[0] * x[1]


def test_leapfrog_is_reversible():
    x, p = jnp.array([0.7, -0.4]), jnp.array([0.3, 1.1])
    x1, p1 = leapfrog(_quartic, x, p, 0.05, 40)
    x2, p2 = leapfrog(_quartic, x1, -p1, 0.05, 40)
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(-p2, p, atol=1e-5)


def test_leapfrog_energy_error_shrinks_as_step_squared():
    x, p = jnp.array([0.7, -0.4]), jnp.array([0.3, 1.1])
    hamiltonian = lambda x, p: _quartic(x) + kinetic_energy(p)
    h0 = hamiltonian(x, p)
    step_sizes = [0.1, 0.05, 0.025]
    errors = []
    for h in step_sizes:
        x1, p1 = leapfrog(_quartic, x, p, h, round(1.0 / h))  # integrate to time 1
        errors.append(abs(float(hamiltonian(x1, p1) - h0)))
    slope = np.polyfit(np.log(step_sizes), np.log(errors), 1)[0]
    # a second-order integrator: halving h divides the error by 4 (+- O(h^2) corrections)
    assert abs(slope - 2.0) < 0.15, (errors, slope)


def test_leapfrog_harmonic_oscillator():
    # H = q^2/2 + p^2/2 from (0, 1): exact flow q = sin t, p = cos t; leapfrog's error at
    # t = 1 with h = 0.01 is O(h^2) = 1e-4 relative
    energy_fn = lambda q: 0.5 * jnp.sum(q**2)
    q, p = leapfrog(energy_fn, jnp.array([0.0]), jnp.array([1.0]), 0.01, 100)
    np.testing.assert_allclose(q, [math.sin(1.0)], atol=1e-4)
    np.testing.assert_allclose(p, [math.cos(1.0)], atol=1e-4)


def test_hmc_reports_energy_error_consistent_with_acceptance():
    sampler = KERNELS["hmc"]
    _, info = jax.jit(sampler.step)(jax.random.key(2), jax.jit(sampler.init)(MEAN + 1.0))
    expected = min(1.0, float(jnp.exp(-info.energy_error)))
    np.testing.assert_allclose(info.acceptance_rate, expected, rtol=1e-5)


# --- adaptation ----------------------------------------------------------------------

DIM = 100  # high enough for the optimal-scaling limits (errors O(d^-1/3) for MALA)


def _standard_gaussian(x):
    return 0.5 * jnp.sum(x**2)


@pytest.mark.parametrize(
    ("name", "target"),
    [("mala", MALA_TARGET_ACCEPTANCE), ("hmc", HMC_TARGET_ACCEPTANCE)],
)
def test_adapted_acceptance_near_optimum(name, target):
    """Warm-up by dual averaging, then sample with the frozen step size.

    Tolerance: the sampling-phase acceptance is a mean over 8 chains; its standard error
    comes from the spread of the per-chain means (k = 4, false alarm < 1e-4), plus 0.03 for
    dual averaging itself, whose averaged step size still carries the noise of the
    last warm-up iterates (t^-kappa weights, kappa = 0.75). An error of 0.03 in the
    acceptance rate costs under 1% of MALA's efficiency l^2 a(l) at the optimum
    (Roberts & Rosenthal 1998, a(l) = 2 Phi(-l^3 / 8) for a standard Gaussian), so it is
    the precision that matters in practice.
    """
    sampler = (
        mala(_standard_gaussian, 0.05) if name == "mala" else hmc(_standard_gaussian, 0.05, 10)
    )
    x0 = jax.random.normal(jax.random.key(0), (8, DIM))
    warm = adapt_step_size_chains(
        jax.random.key(1), sampler, x0, 600, initial_step_size=0.05, target_acceptance=target
    )
    num_steps = 400
    steps = constant_schedule(float(warm.step_size), num_steps)
    result = run_chains(jax.random.key(2), sampler, warm.state.x, num_steps, schedule=(steps,))
    per_chain = np.asarray(result.info.acceptance_rate)
    standard_error = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
    assert abs(per_chain.mean() - target) < 4 * standard_error + 0.03, (per_chain, target)
    if name == "mala":
        # Roberts & Rosenthal 1998: a = 2 Phi(-l^3/8) with proposal variance 2h = l^2 d^-1/3
        ell = (8 * norm.isf(target / 2)) ** (1 / 3)
        optimal_h = ell**2 * DIM ** (-1 / 3) / 2
        # a 0.03 error in acceptance moves h by about 5% (da/dlog h = -0.57 at the
        # optimum); add O(d^-1/3) finite-d corrections to the limit: allow 10%
        assert abs(float(warm.step_size) / optimal_h - 1) < 0.10, (warm.step_size, optimal_h)


def test_adapt_single_chain_and_jit_determinism():
    sampler = mala(_standard_gaussian, 0.1)
    x0 = jnp.zeros(DIM)
    a = adapt_step_size(
        jax.random.key(0), sampler, x0, 50, initial_step_size=0.1, target_acceptance=0.574
    )
    b = adapt_step_size(
        jax.random.key(0), sampler, x0, 50, initial_step_size=0.1, target_acceptance=0.574
    )
    assert a.state.x.shape == (DIM,) and a.acceptance_rate.shape == (50,)
    np.testing.assert_array_equal(a.step_size, b.step_size)
    assert float(a.step_size) > 0


# --- schedules -----------------------------------------------------------------------


def test_schedules_closed_forms():
    t = np.arange(1, 11)
    np.testing.assert_allclose(inverse_sqrt_decay(0.1, 10), 0.1 / np.sqrt(t), rtol=1e-6)
    np.testing.assert_allclose(cube_root_decay(0.1, 10), 0.1 / t ** (1 / 3), rtol=1e-6)
    np.testing.assert_allclose(polynomial_decay(2.0, 10, 0.55, 3.0), 2 * (3 + t) ** -0.55, 1e-6)
    np.testing.assert_allclose(constant_schedule(0.3, 10), np.full(10, 0.3), rtol=1e-6)


def test_sgld_schedule_drives_ula():
    # a schedule is data: one compiled run serves any schedule of its length, and a
    # constant schedule reproduces the fixed step exactly (same keys, same moves)
    sampler = ula(lambda x: -x, 0.5)
    steps = inverse_sqrt_decay(0.5, 200)
    a = run(jax.random.key(0), sampler, jnp.ones(2), 200, schedule=(steps,))
    b = run(jax.random.key(0), sampler, jnp.ones(2), 200, schedule=(constant_schedule(0.5, 200),))
    # the runner feeds h_t to step t: replay x <- x + h_t s(x) + sqrt(2 h_t) z_t by hand
    noise = np.asarray(jax.vmap(lambda k: jax.random.normal(k, (2,)))(
        jax.random.split(jax.random.key(0), 200)
    ))  # fmt: skip
    x = np.ones(2)
    for h, z in zip(np.asarray(steps), noise, strict=True):
        x = x - h * x + np.sqrt(2 * h) * z
    np.testing.assert_allclose(a.state.x, x, rtol=1e-4, atol=1e-5)
    assert not np.allclose(a.state.x, b.state.x)


# --- bad input -----------------------------------------------------------------------


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="step_size"):
        mala(TARGET.energy, 0.0)
    with pytest.raises(ValueError, match="step_size"):
        rwm(TARGET.energy, -1.0)
    with pytest.raises(ValueError, match="num_leapfrog_steps"):
        hmc(TARGET.energy, 0.1, 0)
    with pytest.raises(ValueError, match="inverse_mass"):
        hmc(TARGET.energy, 0.1, 5, inverse_mass=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="symmetric positive-definite"):
        hmc(TARGET.energy, 0.1, 5, inverse_mass=jnp.array([[1.0, -2.0], [-2.0, 1.0]]))
    with pytest.raises(ValueError, match="inverse_mass"):
        run(jax.random.key(0), hmc(TARGET.energy, 0.1, 5, inverse_mass=jnp.ones(3)), MEAN, 2)
    with pytest.raises(ValueError, match="inverse_mass"):
        run(jax.random.key(0), hmc(TARGET.energy, 0.1, 5, inverse_mass=jnp.eye(3)), MEAN, 2)
    with pytest.raises(TypeError, match="energy_fn"):
        mala("not a function", 0.1)
    with pytest.raises(ValueError, match="momentum"):
        leapfrog(_quartic, jnp.zeros(2), jnp.zeros(3), 0.1, 10)
    with pytest.raises(ValueError, match="num_steps"):
        leapfrog(_quartic, jnp.zeros(2), jnp.zeros(2), 0.1, 0)
    with pytest.raises(ValueError, match="target_acceptance"):
        adapt_step_size(
            jax.random.key(0), mala(TARGET.energy, 0.1), MEAN, 10,
            initial_step_size=0.1, target_acceptance=1.5,
        )  # fmt: skip
    with pytest.raises(ValueError, match="initial_step_size"):
        adapt_step_size(
            jax.random.key(0), mala(TARGET.energy, 0.1), MEAN, 10,
            initial_step_size=0.0, target_acceptance=0.5,
        )  # fmt: skip
    with pytest.raises(ValueError, match="gamma"):
        polynomial_decay(0.1, 10, -0.5)
    with pytest.raises(ValueError, match="num_steps"):
        inverse_sqrt_decay(0.1, 0)
    with pytest.raises(ValueError, match="initial_step_size"):
        cube_root_decay(0.0, 10)
