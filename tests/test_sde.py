"""Score SDEs (Song et al. 2021) against mathematics: each kernel against a simulation of its
forward SDE and against the composed discretisation, the priors' normalisation, the exact
noised mixture against numerical convolution, and the continuous-time DSM loss with the exact
score against its closed-form value for Gaussian data. Tolerances are Monte Carlo standard
errors (4 SE) plus, where a discretisation is simulated, its bias computed exactly."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax import sde as sdes

SDES = {"ve": sdes.VESDE(), "vp": sdes.VPSDE(), "subvp": sdes.SubVPSDE()}


def _drift_coeff(sde, t):
    """a(t) of the linear drift f(x, t) = a(t) x shared by the three SDEs."""
    return float(sde.drift(jnp.ones(()), t))


def _simulate(sde, key, x0, t_end, num_steps, num_paths):
    """Euler-Maruyama paths of the forward SDE from x(0) = x0 (1-D) to t_end."""
    dt = t_end / num_steps

    def step(x, inputs):
        t, k = inputs
        z = jax.random.normal(k, x.shape)
        return x + sde.drift(x, t) * dt + sde.diffusion(t) * jnp.sqrt(dt) * z, None

    times = jnp.arange(num_steps) * dt
    keys = jax.random.split(key, num_steps)
    x, _ = jax.lax.scan(step, jnp.full((num_paths,), x0), (times, keys))
    return np.asarray(x, np.float64)


def _euler_moments(sde, x0, t_end, num_steps):
    """The exact mean and variance of the Euler-Maruyama scheme above (float64 recursion):
    mean' = (1 + a dt) mean, var' = (1 + a dt)^2 var + g^2 dt."""
    dt = t_end / num_steps
    mean, var = float(x0), 0.0
    for k in range(num_steps):
        t = k * dt
        c = 1.0 + _drift_coeff(sde, t) * dt
        mean, var = c * mean, c**2 * var + float(sde.diffusion(t)) ** 2 * dt
    return mean, var


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("t_end", [pytest.param(0.5, marks=pytest.mark.slow), 1.0])
def test_kernel_matches_a_simulation_of_the_forward_sde(name, t_end):
    sde, x0, n, steps = SDES[name], 1.5, 100_000, 400
    x = _simulate(sde, jax.random.key(0), x0, t_end, steps, n)
    m, s = (float(v) for v in sde.kernel(t_end))
    mean, var = m * x0, s**2
    euler_mean, euler_var = _euler_moments(sde, x0, t_end, steps)
    # tolerance: 4 Monte Carlo SE plus the scheme's own (exactly computed) bias
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2.0 / (n - 1))
    assert abs(x.mean() - mean) < 4 * se_mean + abs(euler_mean - mean)
    assert abs(x.var(ddof=1) - var) < 4 * se_var + abs(euler_var - var)
    # and the bias is small: the simulation tests the kernel, not the scheme
    assert abs(euler_var - var) < 0.05 * var


def _composed_discretisation(sde, num_steps):
    """Mean coefficient and variance of x(1) given x(0) = 1 after ``num_steps`` forward
    steps x <- x + F + G z of ``sde.discretize`` (F is linear in x for these SDEs)."""
    dt = 1.0 / num_steps
    mean, var = 1.0, 0.0
    for i in range(1, num_steps + 1):
        f, g = sde.discretize(jnp.ones(()), i * dt, dt)
        c = 1.0 + float(f)
        mean, var = c * mean, c**2 * var + float(g) ** 2
    return mean, var


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_smld_and_ddpm_discretisations_compose_to_the_kernel_exactly(name):
    """SMLD's ladder adds s_i^2 - s_{i-1}^2 per step and DDPM's step scales by
    m(t) / m(t - dt): both telescope to the exact kernel at any number of steps."""
    sde = SDES[name]
    m, s = (float(v) for v in sde.kernel(1.0))
    for n in (3, 100):
        mean, var = _composed_discretisation(sde, n)
        np.testing.assert_allclose(mean, m, rtol=1e-5)
        np.testing.assert_allclose(var, s**2, rtol=1e-5)


def test_vp_step_beta_is_the_papers_to_first_order():
    """b = 1 - m(t)^2 / m(t - dt)^2 = beta(t) dt + O(dt^2) (paper Eq. 45's b_i)."""
    sde = SDES["vp"]
    for dt in (1e-2, 1e-3):
        b = float(sde.discretize(jnp.ones(()), 0.5, dt)[1]) ** 2
        assert abs(b - float(sde.beta(0.5)) * dt) < 2 * (float(sde.beta(0.5)) * dt) ** 2


def test_subvp_euler_discretisation_converges_to_the_kernel_at_first_order():
    sde = SDES["subvp"]
    m, s = (float(v) for v in sde.kernel(1.0))
    errors = []
    for n in (100, 200, 400):
        mean, var = _composed_discretisation(sde, n)
        errors.append(abs(mean - m) + abs(var - s**2))
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    assert errors[-1] < 0.05
    np.testing.assert_allclose(ratios, 0.5, atol=0.1)  # error proportional to dt


@pytest.mark.parametrize("name", SDES)
def test_prior_is_normalised_and_sampled(name):
    sde = SDES[name]
    scale = float(jnp.std(sde.prior_sample(jax.random.key(1), (200_000,))))
    grid = np.linspace(-12 * scale, 12 * scale, 20_001)
    density = np.exp(np.asarray(jax.vmap(lambda x: sde.prior_log_prob(x[None]))(grid)))
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, rtol=1e-6)
    expected = 50.0 if name == "ve" else 1.0  # N(0, sigma_max^2) and N(0, 1)
    se = expected / np.sqrt(2 * (200_000 - 1))  # standard error of a sample std
    assert abs(scale - expected) < 4 * se
    # D coordinates are independent: the log-density adds over them
    x = jnp.array([0.3, -1.2, 2.0])
    np.testing.assert_allclose(
        sde.prior_log_prob(x), sum(sde.prior_log_prob(v[None]) for v in x), rtol=1e-6
    )


MIXTURE_1D = sj.GaussianMixture(
    means=jnp.array([[-2.0], [0.5], [3.0]]),
    scales=jnp.array([0.3, 0.8, 0.5]),
    weights=jnp.array([0.2, 0.5, 0.3]),
)


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_mixture_marginal_equals_numerical_convolution(name, t):
    """p_t(y) = int p_0(x) N(y; m x, s^2) dx by the trapezoid rule on a fine grid."""
    sde = SDES[name]
    m, s = (float(v) for v in sde.kernel(t))
    x = np.linspace(-8.0, 9.0, 80_001)
    p0 = np.exp(np.asarray(jax.vmap(MIXTURE_1D.log_prob)(x[:, None])), dtype=np.float64)
    marginal = MIXTURE_1D.marginal(sde, t)
    for y in np.array([-3.0, -0.7, 0.4, 2.2]) * max(m, s):
        kernel = np.exp(-0.5 * ((y - m * x) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
        expected = np.log(np.trapezoid(p0 * kernel, x))
        np.testing.assert_allclose(marginal.log_prob(jnp.array([y])), expected, rtol=2e-4)


@pytest.mark.parametrize("name", SDES)
def test_mixture_marginal_at_time_zero_is_the_mixture(name):
    marginal = MIXTURE_1D.marginal(SDES[name], 0.0)
    np.testing.assert_allclose(marginal.means, MIXTURE_1D.means)
    np.testing.assert_allclose(marginal.scales, marginal._scales())  # diagonal form
    np.testing.assert_allclose(marginal.scales[:, 0], MIXTURE_1D.scales, rtol=1e-6)


def test_ve_noise_conditional_reads_a_time_model_at_the_kernel_std_sigma():
    """score(x, sigma) of the exact VE marginal's score equals the exact score of the mixture
    convolved with N(0, sigma^2) (NCSN's noised law) at every level of an NCSN ladder,
    including sigma_max, where t is clipped to 1 (s(1)^2 = sigma_max^2 - sigma_min^2)."""
    sde = sdes.VESDE(sigma_min=0.01, sigma_max=20.0)
    score = sdes.ve_noise_conditional(sde, lambda x, t: MIXTURE_1D.marginal(sde, t).score(x))
    points = jnp.linspace(-4.0, 5.0, 7)[:, None]
    for sigma in [0.01, 0.05, 0.4, 1.3, 6.0, 20.0]:
        got = jax.jit(jax.vmap(score, in_axes=(0, None)))(points, sigma)
        exact = jax.vmap(MIXTURE_1D.noised(sigma).score)(points)
        np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-6)


# --- the continuous-time DSM loss with the exact score -------------------------------------

DATA_MEAN, DATA_STD = jnp.array([1.0, -2.0, 0.5]), 0.5


def _gaussian_data_score(sde, params, x, t):
    """Exact score of N(m mu, (m^2 v0 + s^2) I), the law of x(t) for data N(mu, v0 I)."""
    del params
    m, s = sde.kernel(t)
    return -(x - m * DATA_MEAN) / (m**2 * DATA_STD**2 + s**2)


def _closed_form_loss(sde, weighting):
    """1/2 E_{t ~ U(eps, 1)} lambda(t) D m^2 v0 / ((m^2 v0 + s^2) s^2), by the trapezoid rule
    on 200,001 points (derivation in ``sde_dsm_loss``'s docstring)."""
    t = jnp.linspace(sde.eps, 1.0, 200_001)
    m, s = sde.kernel(t)
    v0, d = DATA_STD**2, DATA_MEAN.shape[0]
    integrand = 0.5 * weighting(sde, t) * d * m**2 * v0 / ((m**2 * v0 + s**2) * s**2)
    return float(np.trapezoid(np.asarray(integrand, np.float64), np.asarray(t))) / (1 - sde.eps)


CASES = {
    "ve, std weighting": (sdes.VESDE(), sdes.std_weighting),
    "vp, std weighting": (sdes.VPSDE(), sdes.std_weighting),
    "subvp, std weighting": (sdes.SubVPSDE(), sdes.std_weighting),
    # the likelihood-weighted integrand grows like 1/t near 0, so its Monte Carlo variance
    # grows like 1/eps: a larger eps keeps the estimate's standard error usable
    "ve, likelihood weighting": (sdes.VESDE(eps=0.1), sdes.likelihood_weighting),
    "vp, likelihood weighting": (sdes.VPSDE(eps=0.1), sdes.likelihood_weighting),
    "subvp, likelihood weighting": (sdes.SubVPSDE(eps=0.1), sdes.likelihood_weighting),
}


@pytest.mark.parametrize("case", CASES)
def test_sde_dsm_loss_with_the_exact_score_equals_its_closed_form(case):
    sde, weighting = CASES[case]
    score_fn = functools.partial(_gaussian_data_score, sde)
    loss = functools.partial(sj.sde_dsm_loss, score_fn=score_fn, sde=sde, weighting=weighting)

    @jax.jit
    def one(key):
        key_data, key_loss = jax.random.split(key)
        batch = DATA_MEAN + DATA_STD * jax.random.normal(key_data, (2_000, 3))
        return loss(None, key_loss, batch)

    values = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(3), 200)), np.float64)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - _closed_form_loss(sde, weighting)) < 4 * se


@pytest.mark.slow
@pytest.mark.parametrize("sde", [sdes.VESDE(), sdes.VPSDE(), sdes.SubVPSDE()], ids=str)
def test_importance_sampled_likelihood_loss_is_unbiased_and_less_variable(sde):
    """At the paper's eps the likelihood-weighted integrand grows like 1/t; importance
    sampling of t keeps the closed-form expectation and cuts the estimate's variance (the
    measured reduction is 4x for VP to 600x for VE; asserted: at least 2x)."""
    score_fn = functools.partial(_gaussian_data_score, sde)
    values = {}
    for importance in (False, True):
        loss = functools.partial(
            sj.sde_dsm_loss,
            score_fn=score_fn,
            sde=sde,
            weighting=sdes.likelihood_weighting,
            importance=importance,
        )

        @jax.jit
        def one(key, loss=loss):
            key_data, key_loss = jax.random.split(key)
            batch = DATA_MEAN + DATA_STD * jax.random.normal(key_data, (2_000, 3))
            return loss(None, key_loss, batch)

        keys = jax.random.split(jax.random.key(11), 200)
        values[importance] = np.asarray(jax.vmap(one)(keys), np.float64)
    is_values = values[True]
    se = is_values.std(ddof=1) / np.sqrt(is_values.size)
    assert abs(is_values.mean() - _closed_form_loss(sde, sdes.likelihood_weighting)) < 4 * se
    assert is_values.var(ddof=1) < values[False].var(ddof=1) / 2


def test_importance_times_density_is_the_samplers_density():
    """q is the density of the draws: E_q[f(t) / q(t)] = int_eps^1 f dt for f = 1 and f = t
    (within 4 standard errors), and every draw lies in [eps, 1]."""
    sde = sdes.VPSDE()
    t, q = sj.losses.importance_times(jax.random.key(0), sde, 40_000)
    t, q = np.asarray(t, np.float64), np.asarray(q, np.float64)
    assert t.min() >= sde.eps * (1 - 1e-6) and t.max() <= 1.0
    for f, integral in ((np.ones_like(t), 1 - sde.eps), (t, (1 - sde.eps**2) / 2)):
        ratio = f / q
        assert abs(ratio.mean() - integral) < 4 * ratio.std(ddof=1) / np.sqrt(t.size)


def test_sde_dsm_loss_is_the_same_under_jit_and_with_a_traced_sde():
    sde = sdes.VPSDE()
    batch = jax.random.normal(jax.random.key(0), (64, 3))
    score_fn = functools.partial(_gaussian_data_score, sde)
    eager = sj.sde_dsm_loss(None, jax.random.key(1), batch, score_fn=score_fn, sde=sde)
    traced = jax.jit(
        lambda s: sj.sde_dsm_loss(
            None,
            jax.random.key(1),
            batch,
            score_fn=functools.partial(_gaussian_data_score, s),
            sde=s,
        )
    )(jax.tree_util.tree_map(jnp.asarray, sde))
    np.testing.assert_allclose(traced, eager, rtol=1e-5)


def test_fitting_a_time_conditional_gaussian_model_recovers_the_data_law():
    """The loss trains: a score model with the exact form of the Gaussian-data score and
    free mean and variance, fitted with ``fit``, recovers the data's mean and variance."""
    sde = sdes.VPSDE()

    def score_fn(params, x, t):
        m, s = sde.kernel(t)
        return -(x - m * params["mu"]) / (m**2 * params["v0"] + s**2)

    data = DATA_MEAN + DATA_STD * jax.random.normal(jax.random.key(0), (4096, 3))
    optimizer = optax.adam(0.05)
    loss = functools.partial(sj.sde_dsm_loss, score_fn=score_fn, sde=sde)
    state = sj.init_train_state({"mu": jnp.zeros(3), "v0": jnp.ones(())}, optimizer)
    state, _ = sj.fit(
        sj.make_train_step(loss, optimizer),
        state,
        jax.random.key(1),
        sj.minibatches(data, 512),
        num_steps=400,
        progress=False,
    )
    np.testing.assert_allclose(state.params["mu"], data.mean(0), atol=0.1)
    np.testing.assert_allclose(state.params["v0"], data.var(0).mean(), atol=0.05)


# --- bad input: named, before tracing -----------------------------------------------------


def _loss_with(sde=SDES["vp"], score_fn=None, **kwargs):
    score_fn = score_fn or functools.partial(_gaussian_data_score, sdes.VPSDE())
    return sj.sde_dsm_loss(
        None, jax.random.key(0), jnp.ones((4, 3)), score_fn=score_fn, sde=sde, **kwargs
    )


BAD = [
    (
        "sigma_min >= sigma_max",
        lambda: _loss_with(sdes.VESDE(1.0, 0.5)),
        ValueError,
        "sigma_min must be below sigma_max",
    ),
    ("sigma_min = 0", lambda: _loss_with(sdes.VESDE(0.0, 50.0)), ValueError, "sigma_min"),
    (
        "beta_min > beta_max",
        lambda: _loss_with(sdes.VPSDE(20.0, 0.1)),
        ValueError,
        "beta_min must be at most beta_max",
    ),
    (
        "sub-VP beta_max negative",
        lambda: _loss_with(sdes.SubVPSDE(0.1, -1.0)),
        ValueError,
        "beta_max",
    ),
    ("eps = 0", lambda: _loss_with(sdes.VPSDE(eps=0.0)), ValueError, "eps"),
    ("not an SDE", lambda: _loss_with("vp"), TypeError, "sde must be a VESDE"),
    (
        "score of the wrong shape",
        lambda: _loss_with(score_fn=lambda p, x, t: jnp.sum(x)),
        ValueError,
        "score_fn must return an array shaped like its input",
    ),
    ("weighting not a function", lambda: _loss_with(weighting=2.0), TypeError, "weighting"),
    (
        "noise-conditional view of a VP model",
        lambda: sdes.ve_noise_conditional(sdes.VPSDE(), lambda x, t: x),
        TypeError,
        "sde must be a VESDE",
    ),
    (
        "noise-conditional view of a non-function",
        lambda: sdes.ve_noise_conditional(sdes.VESDE(), 3.0),
        TypeError,
        "score_fn must be a function",
    ),
    (
        "marginal after t = 1",
        lambda: MIXTURE_1D.marginal(sdes.VPSDE(), 1.5),
        ValueError,
        "t must lie in [0, 1]",
    ),
    (
        "marginal at a negative t",
        lambda: MIXTURE_1D.marginal(sdes.VESDE(), -0.1),
        ValueError,
        "t must lie",
    ),
]


@pytest.mark.parametrize(("what", "call", "error", "match"), BAD, ids=[row[0] for row in BAD])
def test_bad_sde_input_raises_a_clear_error(what, call, error, match):
    with pytest.raises(error, match=re.escape(match)):
        call()
