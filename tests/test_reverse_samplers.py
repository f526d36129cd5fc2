"""Reverse-time SDE samplers with the exact score of a noised Gaussian mixture
(``GaussianMixture.marginal``): every predictor, and predictor-corrector, recovers the
mixture's weights and moments within Monte Carlo error, where plain Langevin at the smallest
noise level does not (the NCSN paper's point). Tolerances: 4 standard errors of the sample
means over independent chains."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import samplers
from scorejax import sde as sdes

# unequal weights and scales, separated modes
TARGET = sj.GaussianMixture(
    means=jnp.array([[-3.0, 0.0], [0.0, 3.0], [3.0, -1.0]]),
    scales=jnp.array([0.5, 0.8, 0.4]),
    weights=jnp.array([0.2, 0.5, 0.3]),
)
NUM_CHAINS = 5_000


def exact_score(target, sde, x, t):
    """grad log p_t(x): the score of the mixture's exact law at time t."""
    return target.marginal(sde, t).score(x)


def _statistics(x):
    """Per-sample statistics whose exact means are known: the target's responsibilities
    (E_p[p(k | x)] = w_k), the coordinates and their squares."""
    resp = jax.vmap(lambda v: jax.nn.softmax(TARGET.component_log_probs(v)))(x)
    return np.asarray(jnp.concatenate([resp, x, x**2], axis=1), np.float64)


def _exact_statistics():
    w = np.asarray(TARGET.weights)
    mu = np.asarray(TARGET.means)
    var = np.asarray(TARGET.scales)[:, None] ** 2
    return np.concatenate([w, w @ mu, w @ (mu**2 + var)])


def _assert_recovers_target(x):
    stats = _statistics(x)
    se = stats.std(axis=0, ddof=1) / np.sqrt(stats.shape[0])
    error = np.abs(stats.mean(axis=0) - _exact_statistics())
    assert np.all(error < 4 * se), (error / se).round(1)


def _sample(sde, num_steps, num_chains=NUM_CHAINS, **kwargs):
    score_fn = functools.partial(exact_score, TARGET, sde)
    sampler = sj.pc_sampler(sde, score_fn, **kwargs)
    x_init = sde.prior_sample(jax.random.key(0), (num_chains, 2))
    grid = samplers.reverse_time_grid(sde, num_steps)
    result = sj.run_chains(jax.random.key(1), sampler, x_init, num_steps, schedule=grid)
    x = jax.vmap(lambda v: samplers.denoise_sde(sde, score_fn, v, sde.eps))(result.state.x)
    assert int(np.sum(result.info.num_nonfinite)) == 0
    return x


CONFIGS = {
    "ve, Euler-Maruyama": (sdes.VESDE(), {"predictor": samplers.euler_maruyama}),
    "vp, Euler-Maruyama": (sdes.VPSDE(), {"predictor": samplers.euler_maruyama}),
    "subvp, Euler-Maruyama": (sdes.SubVPSDE(), {"predictor": samplers.euler_maruyama}),
    "ve, reverse diffusion": (sdes.VESDE(), {"predictor": samplers.reverse_diffusion}),
    "vp, reverse diffusion": (sdes.VPSDE(), {"predictor": samplers.reverse_diffusion}),
    "ve, ancestral": (sdes.VESDE(), {"predictor": samplers.ancestral}),
    "vp, ancestral": (sdes.VPSDE(), {"predictor": samplers.ancestral}),
    "ve, PC": (
        sdes.VESDE(),
        {"predictor": samplers.reverse_diffusion, "corrector": samplers.langevin_corrector},
    ),
    "vp, PC, corrector first": (
        sdes.VPSDE(),
        {
            "predictor": samplers.euler_maruyama,
            "corrector": samplers.langevin_corrector,
            "snr": 0.05,
            "corrector_first": True,
        },
    ),
}


# the full matrix runs with the slow tests; one configuration per predictor runs always
SLOW = {
    "ve, Euler-Maruyama", "subvp, Euler-Maruyama", "vp, reverse diffusion", "ve, ancestral",
    "vp, ancestral", "vp, PC, corrector first",
}  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CONFIGS],
)
def test_reverse_sampler_recovers_the_mixture(config):
    sde, kwargs = CONFIGS[config]
    _assert_recovers_target(_sample(sde, 1000, **kwargs))


def _per_chain_corrector(sde, score_fn, key, x, t, dt, snr):
    """Algorithm 4 with this chain's own norms: a step that depends on the chain's state."""
    score, z = score_fn(x, t), jax.random.normal(key, x.shape)
    step = 2.0 * (snr * jnp.linalg.norm(z) / jnp.linalg.norm(score)) ** 2
    return x + step * score + jnp.sqrt(2.0 * step) * z


@pytest.mark.slow
def test_per_chain_norms_in_the_corrector_bias_the_weights():
    """Why ``langevin_corrector`` averages its norms over the chains: with each chain's own
    norms the Langevin step depends on the state, which changes the law it leaves invariant;
    in 2-D the mode weights come out wrong by far more than Monte Carlo error."""
    x = _sample(sdes.VESDE(), 1000, 10_000, predictor=samplers.reverse_diffusion,
                corrector=_per_chain_corrector)  # fmt: skip
    stats = _statistics(x)[:, :3]
    se = stats.std(axis=0, ddof=1) / np.sqrt(stats.shape[0])
    assert np.max(np.abs(stats.mean(axis=0) - np.asarray(TARGET.weights)) / se) > 10


def test_corrector_norms_are_averaged_over_the_chains_of_a_run():
    """Inside run_chains every chain takes the same corrector step (the chains' mean norms);
    a chain run alone uses its own."""
    sde = sdes.VESDE()
    score_fn = lambda x, t: -x  # ||s(x)|| = ||x||: the step depends on the chain if per chain
    step = lambda key, x: samplers.langevin_corrector(sde, score_fn, key, x, 0.5, 0.01, 0.1)
    keys = jax.random.split(jax.random.key(0), 3)
    x = jnp.array([[1.0, 0.0], [0.0, 5.0], [3.0, 4.0]])
    averaged = jax.vmap(step, axis_name=samplers.CHAIN_AXIS)(keys, x)
    alone = jax.vmap(step)(keys, x)
    z = jax.vmap(lambda k: jax.random.normal(k, (2,)))(keys)
    mean_ratio = jnp.mean(jnp.linalg.norm(z, axis=1)) / jnp.mean(jnp.linalg.norm(x, axis=1))
    h = 2.0 * (0.1 * mean_ratio) ** 2
    np.testing.assert_allclose(averaged, x - h * x + jnp.sqrt(2 * h) * z, rtol=1e-5)
    own = 2.0 * (0.1 * jnp.linalg.norm(z, axis=1) / jnp.linalg.norm(x, axis=1)) ** 2
    expected = x - own[:, None] * x + jnp.sqrt(2 * own)[:, None] * z
    np.testing.assert_allclose(alone, expected, rtol=1e-5)


def test_langevin_at_the_smallest_noise_does_not_recover_the_weights():
    """ULA with the exact score at t = eps, run as long as the SDE samplers (1,000 steps),
    keeps the proportions its chains started with in each basin: mixing between separated
    modes is slow (Song & Ermon 2019, Section 3.2)."""
    sde = sdes.VPSDE()
    score_fn = functools.partial(exact_score, TARGET, sde, t=sde.eps)
    x_init = sde.prior_sample(jax.random.key(0), (NUM_CHAINS, 2))
    result = sj.run_chains(jax.random.key(1), sj.ula(score_fn, 0.01), x_init, 1000)
    stats = _statistics(result.state.x)[:, :3]
    se = stats.std(axis=0, ddof=1) / np.sqrt(stats.shape[0])
    error = np.abs(stats.mean(axis=0) - np.asarray(TARGET.weights))
    assert np.max(error / se) > 10


def test_sample_sde_one_chain_same_key_same_sample_and_jit_equals_eager():
    sde = sdes.VPSDE()
    score_fn = functools.partial(exact_score, TARGET, sde)
    x_init = sde.prior_sample(jax.random.key(0), (2,))
    kwargs = {"corrector": samplers.langevin_corrector, "snr": 0.05}
    a = sj.sample_sde(jax.random.key(1), sde, score_fn, x_init, 50, **kwargs).state.x
    b = sj.sample_sde(jax.random.key(1), sde, score_fn, x_init, 50, **kwargs).state.x
    np.testing.assert_array_equal(a, b)
    jitted = jax.jit(
        lambda key, x: sj.sample_sde(key, sde, score_fn, x, 50, warn=False, **kwargs).state.x
    )
    np.testing.assert_allclose(jitted(jax.random.key(1), x_init), a, rtol=1e-5, atol=1e-5)
    # many chains by vmap equal the same chains one at a time
    keys = jax.random.split(jax.random.key(2), 3)
    xs = sde.prior_sample(jax.random.key(3), (3, 2))
    many = jax.vmap(lambda k, x: sj.sample_sde(k, sde, score_fn, x, 20, warn=False).state.x)(
        keys, xs
    )
    one = sj.sample_sde(keys[1], sde, score_fn, xs[1], 20).state.x
    np.testing.assert_allclose(many[1], one, rtol=1e-5, atol=1e-5)


def test_new_sde_constants_and_snr_with_the_same_number_of_steps_reuse_the_program():
    """The SDE's constants, the grid and snr are data (a score function that closes over an
    SDE should hold it with array constants, as here, for its own closure to be data too)."""
    traces = []

    def counted_score(sde, x, t):
        traces.append(1)  # once per trace, never per step
        return exact_score(TARGET, sde, x, t)

    def sample(sde, snr):
        sde = jax.tree_util.tree_map(jnp.asarray, sde)
        score_fn = functools.partial(counted_score, sde)
        sampler = sj.pc_sampler(sde, score_fn, corrector=samplers.langevin_corrector, snr=snr)
        grid = samplers.reverse_time_grid(sde, 30)
        return sj.run_chains(jax.random.key(0), sampler, jnp.zeros((4, 2)), 30, schedule=grid)

    sample(sdes.VPSDE(), 0.1)
    first = len(traces)
    out = sample(sdes.VPSDE(beta_min=0.2, beta_max=15.0, eps=1e-2), 0.05)
    assert first > 0 and len(traces) == first
    assert np.all(np.isfinite(out.state.x))


def test_program_size_does_not_grow_with_the_number_of_steps():
    """The time grid is data: 100 and 4,000 steps trace to programs with the same
    operations, so compile time is flat in the number of steps."""
    sde = sdes.VPSDE()
    score_fn = functools.partial(exact_score, TARGET, sde)
    sampler = sj.pc_sampler(sde, score_fn, corrector=samplers.langevin_corrector)

    def size(num_steps):
        grid = samplers.reverse_time_grid(sde, num_steps)
        scan = lambda x, g: jax.lax.scan(
            lambda s, tg: (sampler.step(jax.random.key(0), s, *tg)[0], None), x, g
        )[0]
        jaxpr = jax.make_jaxpr(scan)(sampler.init(jnp.zeros(2)), grid)
        return len(str(jaxpr).splitlines()), jaxpr

    (small, _), (large, j_large) = size(100), size(4000)
    assert small == large > 0
    assert (4000,) in {tuple(v.aval.shape) for v in j_large.jaxpr.invars}


def test_reverse_time_grid_runs_from_one_to_eps():
    sde = sdes.VESDE()
    t, dt = samplers.reverse_time_grid(sde, 8)
    assert t[0] == 1.0 and t.shape == dt.shape == (8,)
    np.testing.assert_allclose(t[-1] - dt[-1], sde.eps, atol=1e-6)
    np.testing.assert_allclose(np.diff(t), -dt[:-1], rtol=1e-5)


def test_denoise_sde_is_tweedie_for_a_gaussian():
    """For x(0) ~ N(mu, v0 I), E[x(0) | x(t)] = mu + m v0 (x - m mu) / (m^2 v0 + s^2)."""
    sde, mu, v0 = sdes.VPSDE(), jnp.array([1.0, -2.0]), 0.25
    target = sj.GaussianMixture(mu[None], jnp.array([0.5]), jnp.ones(1))
    score_fn = functools.partial(exact_score, target, sde)
    x, t = jnp.array([0.3, 0.7]), 0.4
    m, s = sde.kernel(t)
    expected = mu + m * v0 * (x - m * mu) / (m**2 * v0 + s**2)
    np.testing.assert_allclose(samplers.denoise_sde(sde, score_fn, x, t), expected, rtol=1e-5)


BAD = [
    (
        "ancestral on sub-VP",
        lambda: sj.pc_sampler(sdes.SubVPSDE(), lambda x, t: x, samplers.ancestral),
        ValueError,
        "defined for VESDE and VPSDE only",
    ),
    (
        "neither predictor nor corrector",
        lambda: sj.pc_sampler(sdes.VPSDE(), lambda x, t: x, None),
        ValueError,
        "at least one",
    ),
    ("snr = 0", lambda: sj.pc_sampler(sdes.VPSDE(), lambda x, t: x, snr=0.0), ValueError, "snr"),
    ("snr < 0", lambda: sj.pc_sampler(sdes.VESDE(), lambda x, t: x, snr=-1.0), ValueError, "snr"),
    ("score not callable", lambda: sj.pc_sampler(sdes.VPSDE(), None), TypeError, "score_fn"),
    (
        "sigma_min >= sigma_max",
        lambda: sj.pc_sampler(sdes.VESDE(2.0, 1.0), lambda x, t: x),
        ValueError,
        "sigma_min must be below sigma_max",
    ),
    (
        "score of the wrong shape",
        lambda: sj.sample_sde(
            jax.random.key(0), sdes.VPSDE(), lambda x, t: jnp.sum(x), jnp.zeros(2), 5
        ),
        ValueError,
        "score_fn must return an array shaped like its input",
    ),
    ("num_steps = 0", lambda: samplers.reverse_time_grid(sdes.VPSDE(), 0), ValueError, "num_steps"),
    (
        "denoise outside [eps, 1]",
        lambda: samplers.denoise_sde(sdes.VPSDE(), lambda x, t: x, jnp.zeros(2), 0.0),
        ValueError,
        "t must lie in [0.001, 1]",
    ),
]


@pytest.mark.parametrize(("what", "call", "error", "match"), BAD, ids=[row[0] for row in BAD])
def test_bad_reverse_sampler_input_raises_a_clear_error(what, call, error, match):
    with pytest.raises(error, match=re.escape(match)):
        call()
