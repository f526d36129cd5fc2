"""Bad input gets a clear error at the API boundary, naming the argument (docs/design.md §15).

One table, so the matrix is visible: each row is (what the user did, the call, the error type
and the words it must contain). The rows after it check the inputs that are accepted or
defined rather than rejected (low precision, numpy integers, unnormalised weights,
degenerate chains) and what happens where no check can look (traced arguments).
"""

import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax import diagnostics, metrics

MIXTURE = sj.data.two_gaussians()
ENERGY = functools.partial(sj.GaussianMixture.energy, MIXTURE)
SCORE = MIXTURE.score
KEY = jax.random.key(0)
X0 = jnp.zeros(2)
CHAINS = jnp.zeros((3, 2))
BATCH = jnp.ones((4, 2))
PARAMS = {"w": jnp.ones(2)}


def _score_fn(params, x):
    return -params["w"] * x


def _run(sampler, x0=X0, num_steps=3, **kwargs):
    return sj.run(KEY, sampler, x0, num_steps, **kwargs)


def _loss(loss, score_fn, **kwargs):
    return loss(PARAMS, KEY, BATCH, score_fn=score_fn, **kwargs)


scalar_score = lambda x: jnp.sum(x)
one_score = lambda x: jnp.sum(x, keepdims=True)
vector_energy = lambda x: x**2
scalar_score_p = lambda params, x, *args: jnp.sum(x)

ROWS = [
    # --- a score of the wrong shape -------------------------------------------------
    ("ula, score returns a scalar", lambda: _run(sj.ula(scalar_score, 0.1)),
     ValueError, "score_fn must return an array shaped like its input x (2,)"),
    ("ula, score returns (1,)", lambda: _run(sj.ula(one_score, 0.1)),
     ValueError, "got shape (1,)"),
    ("decoupled Langevin, scalar score",
     lambda: _run(sj.decoupled_langevin(scalar_score, 0.1, 0.1)),
     ValueError, "score_fn must return"),
    ("annealed Langevin, scalar score",
     lambda: sj.annealed_langevin(KEY, lambda x, s: jnp.sum(x), X0, jnp.array([1.0, 0.1]),
                                  step_size=0.1, num_steps_per_level=2),
     ValueError, "score_fn must return"),
    ("dsm_loss, scalar score", lambda: _loss(sj.dsm_loss, scalar_score_p, sigma=0.1),
     ValueError, "score_fn must return"),
    ("ncsn_loss, scalar score",
     lambda: _loss(sj.ncsn_loss, scalar_score_p, sigmas=jnp.array([1.0, 0.1])),
     ValueError, "score_fn must return"),
    ("exact_sm_loss, scalar score", lambda: _loss(sj.exact_sm_loss, scalar_score_p),
     ValueError, "score_fn must return"),
    ("ssm_loss, scalar score", lambda: _loss(sj.ssm_loss, scalar_score_p),
     ValueError, "score_fn must return"),
    ("ssm_vr_loss, scalar score", lambda: _loss(sj.ssm_vr_loss, scalar_score_p),
     ValueError, "score_fn must return"),
    # --- an energy that is not a scalar ---------------------------------------------
    ("rwm, vector energy", lambda: _run(sj.rwm(vector_energy, 0.1)),
     ValueError, "returns a scalar per example"),
    ("mala, vector energy", lambda: _run(sj.mala(vector_energy, 0.1)),
     ValueError, "returns a scalar per example"),
    ("hmc, vector energy", lambda: _run(sj.hmc(vector_energy, 0.1, 3)),
     ValueError, "returns a scalar per example"),
    ("parallel tempering, vector energy",
     lambda: _run(sj.parallel_tempering(vector_energy, lambda e, t: sj.mala(e, 0.1),
                                        jnp.array([1.0, 2.0])), x0=CHAINS[:2]),
     ValueError, "returns a scalar per example"),
    ("cd_loss, vector energy",
     lambda: sj.cd_loss(PARAMS, KEY, (BATCH, BATCH), energy_fn=lambda p, x: p["w"] * x),
     ValueError, "returns a scalar per example"),
    # --- x0 of the wrong rank or dimension --------------------------------------------
    ("run, a batch given to one chain (a 2-component mixture)",
     lambda: _run(sj.ula(SCORE, 0.1), x0=CHAINS[:2]), ValueError, "x0"),
    ("run, wrong dimension", lambda: _run(sj.mala(ENERGY, 0.1), x0=jnp.zeros(3)),
     ValueError, "x must be one example of shape (2,)"),
    ("run_chains, no chain axis", lambda: sj.run_chains(KEY, sj.ula(SCORE, 0.1), X0[0], 3),
     ValueError, "x0 must have a leading chain axis"),
    ("run_chains, one chain of the wrong dimension",
     lambda: sj.run_chains(KEY, sj.ula(SCORE, 0.1), jnp.zeros((3, 5)), 3),
     ValueError, "x0"),
    ("integer x0", lambda: _run(sj.ula(SCORE, 0.1), x0=jnp.zeros(2, jnp.int32)),
     ValueError, "x0 must be a real floating-point array"),
    ("complex x0", lambda: _run(sj.ula(SCORE, 0.1), x0=jnp.zeros(2, jnp.complex64)),
     ValueError, "got complex"),
    # --- HMC's inverse mass ---------------------------------------------------------
    ("hmc, diagonal inverse mass of the wrong length",
     lambda: _run(sj.hmc(ENERGY, 0.1, 3, inverse_mass=jnp.ones(3))),
     ValueError, "inverse_mass must be a scalar, a diagonal of x's shape"),
    ("hmc, dense inverse mass of the wrong size",
     lambda: _run(sj.hmc(ENERGY, 0.1, 3, inverse_mass=jnp.eye(3))),
     ValueError, "dense (2, 2) matrix"),
    ("hmc, dense inverse mass not positive definite",
     lambda: sj.hmc(ENERGY, 0.1, 3, inverse_mass=jnp.array([[1.0, -2.0], [-2.0, 1.0]])),
     ValueError, "symmetric positive-definite"),
    # --- objects of the wrong kind --------------------------------------------------
    ("ula(None)", lambda: sj.ula(None, 0.1), TypeError, "score_fn must be a function"),
    ("mala(None)", lambda: sj.mala(None, 0.1), TypeError, "energy_fn must be a function"),
    ("run on a non-Sampler", lambda: sj.run(KEY, (lambda x: x, None), X0, 3),
     TypeError, "sampler must be a scorejax Sampler"),
    ("run_chains on a function", lambda: sj.run_chains(KEY, SCORE, CHAINS, 3),
     TypeError, "sampler must be a scorejax Sampler"),
    ("parallel tempering, a factory returning a non-Sampler",
     lambda: sj.parallel_tempering(ENERGY, lambda e, t: e, jnp.array([1.0, 2.0])),
     TypeError, "kernel_factory must return a scorejax Sampler"),
    ("adapt_step_size on a kernel without acceptance",
     lambda: sj.adapt_step_size(KEY, sj.ula(SCORE, 0.1), X0, 5, initial_step_size=0.1,
                                target_acceptance=0.5),
     ValueError, "acceptance_rate"),
    ("adapt_step_size on a non-Sampler",
     lambda: sj.adapt_step_size(KEY, SCORE, X0, 5, initial_step_size=0.1,
                                target_acceptance=0.5),
     TypeError, "sampler must be a scorejax Sampler"),
    ("an observable that is not a function", lambda: _run(sj.ula(SCORE, 0.1), observable=3),
     TypeError, "observable"),
    ("make_cd_train_step, make_sampler returning None",
     lambda: sj.make_cd_train_step(lambda p, x: jnp.sum(p["w"] * x), lambda p: None,
                                   optax.sgd(0.1), num_mcmc_steps=1)(
         sj.init_train_state(PARAMS, optax.sgd(0.1)), KEY, BATCH),
     TypeError, "make_sampler must return a scorejax Sampler"),
    ("fit on a state that is not a TrainState",
     lambda: sj.fit(lambda s, k, b: (s, {}), PARAMS, KEY, lambda k: BATCH, num_steps=1),
     TypeError, "state must be a TrainState"),
    # --- counts and ladders ---------------------------------------------------------
    ("thin that does not divide num_steps", lambda: _run(sj.ula(SCORE, 0.1), thin=2),
     ValueError, "thin"),
    ("a float num_steps", lambda: _run(sj.ula(SCORE, 0.1), num_steps=3.0),
     ValueError, "num_steps must be an integer"),
    ("a negative start_step", lambda: _run(sj.ula(SCORE, 0.1), start_step=-1),
     ValueError, "start_step"),
    ("a schedule of the wrong length", lambda: _run(sj.ula(SCORE, 0.1), schedule=(jnp.ones(2),)),
     ValueError, "schedule"),
    ("sigmas in the wrong order",
     lambda: sj.annealed_langevin(KEY, lambda x, s: -x, X0, jnp.array([0.1, 1.0]),
                                  step_size=0.1, num_steps_per_level=2),
     ValueError, "strictly decreasing"),
    ("a non-positive step size", lambda: sj.ula(SCORE, 0.0), ValueError, "step_size"),
    # --- metrics --------------------------------------------------------------------
    ("auroc with NaN scores", lambda: metrics.auroc(jnp.array([1.0, jnp.nan]), jnp.zeros(3)),
     ValueError, "scores_in contains 1 NaN"),
    ("auroc with NaN out-scores", lambda: metrics.auroc(jnp.ones(3), jnp.array([jnp.nan])),
     ValueError, "scores_out"),
    ("mmd with one sample", lambda: metrics.mmd(jnp.zeros((1, 2)), jnp.ones((5, 2))),
     ValueError, "x needs at least 2 samples"),
    ("mmd of identical points", lambda: metrics.mmd(jnp.ones((4, 2)), jnp.ones((4, 2))),
     ValueError, "bandwidth 0"),
    ("mmd with a zero bandwidth",
     lambda: metrics.mmd(jnp.zeros((4, 2)), jnp.ones((4, 2)), bandwidths=0.0),
     ValueError, "bandwidths must be positive"),
    ("mmd with a negative bandwidth",
     lambda: metrics.mmd(jnp.zeros((4, 2)), jnp.ones((4, 2)), bandwidths=jnp.array([1.0, -1.0])),
     ValueError, "bandwidths must be positive"),
    ("mmd with NaN samples",
     lambda: metrics.mmd(jnp.array([[0.0, jnp.nan], [1.0, 1.0]]), jnp.ones((4, 2))),
     ValueError, "x contains NaN"),
    ("mmd noise floor of one sample",
     lambda: metrics.mmd_noise_floor(KEY, MIXTURE.sample, 1), ValueError, "n must be"),
    ("quadrature with one point",
     lambda: sj.log_partition_quadrature(lambda x: jnp.sum(x**2), [-1.0], [1.0], 1),
     ValueError, "num_points must be an integer >= 2"),
    ("diagnostics of complex chains",
     lambda: diagnostics.effective_sample_size(jnp.zeros((2, 8), jnp.complex64)),
     ValueError, "real numbers"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "error", "match"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS]
)
def test_bad_input_raises_a_clear_error(call, error, match):
    # the words must appear as written (not a regular expression)
    with pytest.raises(error, match=re.escape(match)):
        call()


# --- accepted, or defined ---------------------------------------------------------------

LOW_PRECISION_KERNELS = {
    "ula": lambda: sj.ula(SCORE, 0.1),
    "decoupled": lambda: sj.decoupled_langevin(SCORE, 0.1, 0.1),
    "rwm": lambda: sj.rwm(ENERGY, 0.1),
    "mala": lambda: sj.mala(ENERGY, 0.1),
    "hmc": lambda: sj.hmc(ENERGY, 0.1, 3),
    "hmc_dense": lambda: sj.hmc(ENERGY, 0.1, 3, inverse_mass=jnp.eye(2)),
}


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(LOW_PRECISION_KERNELS))
def test_low_precision_chains_keep_their_dtype(name, dtype):
    sampler = LOW_PRECISION_KERNELS[name]()
    x0 = jnp.asarray(MIXTURE.sample(KEY, 4), dtype)
    result = sj.run_chains(KEY, sampler, x0, 20, schedule=(jnp.full(20, 0.05),)
                           if name in ("ula", "rwm", "mala", "hmc") else ())  # fmt: skip
    assert result.state.x.dtype == dtype
    assert np.all(np.isfinite(np.asarray(result.state.x, np.float32)))


def test_a_step_that_changes_the_state_dtype_is_named():
    sampler = sj.Sampler(lambda x: x, lambda key, x: (x.astype(jnp.float32), jnp.zeros(())))
    with pytest.raises(ValueError, match=r"keep the state's shapes and dtypes.*float16"):
        sj.run(KEY, sampler, jnp.zeros(2, jnp.float16), 2)


def test_numpy_integers_are_integers():
    result = sj.run(KEY, sj.ula(SCORE, 0.1), X0, np.int64(20), thin=np.int64(10))
    assert result.trace.x.shape == (2, 2)
    assert sj.geometric_sigmas(1.0, 0.1, np.int32(3)).shape == (3,)


def test_mixture_weights_are_normalised_everywhere():
    """Weights (1, 3) define the mixture with weights (1/4, 3/4) in log_prob, score and sample."""
    raw = MIXTURE._replace(weights=jnp.array([1.0, 3.0]))
    normal = MIXTURE._replace(weights=jnp.array([0.25, 0.75]))
    x = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(raw.log_prob(x), normal.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(raw.score(x), normal.score(x), rtol=1e-6)
    log_z = sj.log_partition_quadrature(raw.energy, [-6.0, -4.0], [6.0, 4.0], 401)
    np.testing.assert_allclose(log_z, raw.log_partition(), atol=1e-4)
    n = 20000
    share = float(jnp.mean(raw.sample(KEY, n)[:, 0] > 0))
    assert abs(share - 0.75) < 4.5 * np.sqrt(0.75 * 0.25 / n)  # binomial, 4.5 SE


def test_degenerate_chains_have_defined_diagnostics():
    constant = jnp.ones((3, 50))
    assert float(diagnostics.effective_sample_size(constant)) == 150.0  # M N: no sampling error
    assert float(diagnostics.mcse(constant)) == 0.0
    assert float(diagnostics.split_rhat(constant)) == 1.0
    stuck = jnp.ones((3, 50)) * jnp.arange(3.0)[:, None]  # chains that never move, apart
    assert float(diagnostics.split_rhat(stuck)) == np.inf
    assert float(diagnostics.effective_sample_size(stuck)) < 5.0
    draws = jax.random.bernoulli(KEY, 0.5, (3, 60))
    np.testing.assert_allclose(
        diagnostics.effective_sample_size(draws.astype(jnp.int32)),
        diagnostics.effective_sample_size(draws.astype(jnp.float32)),
        rtol=1e-6,
    )
    with_nan = jax.random.normal(KEY, (3, 60, 2)).at[1, 5, 0].set(jnp.nan)
    with pytest.warns(RuntimeWarning, match="1 NaN draw"):
        ess = np.asarray(diagnostics.effective_sample_size(with_nan))
    assert np.isnan(ess[0]) and np.isfinite(ess[1]) and ess[1] > 0


def test_checks_on_traced_arguments_are_left_to_the_divergence_report():
    """A negative step size inside the user's jit cannot be checked in Python: the chains
    blow up, and the count in ``info`` (and ``warn_if_diverged`` on it) reports it."""
    run = jax.jit(lambda h: sj.run_chains(KEY, sj.ula(SCORE, h), CHAINS + 1.0, 200).info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is said inside the jit
        info = run(-1.0)
    assert np.all(np.asarray(info.num_nonfinite) > 0)
    with pytest.warns(RuntimeWarning, match="3 of 3 chain"):
        assert sj.warn_if_diverged(info) == 3
