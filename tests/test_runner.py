"""The runner's contract (scorejax/samplers/base.py): observables instead of whole states,
continuing a chain with start_step, chunked runs with a progress bar equal to one call,
divergence that speaks (and can be silenced), a warning before a trace too large for memory,
and HMC/MALA proposals that blow up counted as divergent."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import ising

MIXTURE = sj.data.two_gaussians()
ENERGY = functools.partial(sj.GaussianMixture.energy, MIXTURE)
KEY = jax.random.key(0)


def test_an_observable_is_traced_instead_of_the_state():
    model = ising.Ising(jnp.float32(1.0), jnp.float32(0.0), jnp.float32(0.4))
    sampler = ising.checkerboard_gibbs(model)
    x0 = jnp.ones((4, 8, 8))
    energy_per_site = lambda state: model.energy(state.x) / state.x.size
    result = sj.run_chains(KEY, sampler, x0, 40, thin=4, observable=energy_per_site)
    assert result.trace.shape == (4, 10)  # one number per chain per kept step
    full = sj.run_chains(KEY, sampler, x0, 40, thin=4)
    expected = jax.vmap(jax.vmap(lambda x: model.energy(x) / x.size))(full.trace.x)
    np.testing.assert_allclose(result.trace, expected, rtol=1e-6)


def test_continuing_a_chain_with_start_step_equals_one_long_run():
    for sampler in (sj.ula(MIXTURE.score, 0.05), sj.mala(ENERGY, 0.1), sj.hmc(ENERGY, 0.1, 3)):
        whole = sj.run(KEY, sampler, jnp.zeros(2), 30)
        first = sj.run(KEY, sampler, jnp.zeros(2), 12)
        rest = sj.run(KEY, sampler, first.state.x, 18, start_step=12)
        np.testing.assert_array_equal(rest.state.x, whole.state.x)
        # the same key without the offset replays the first steps' noise: another chain
        replay = sj.run(KEY, sampler, first.state.x, 18)
        assert not np.array_equal(replay.state.x, whole.state.x)


def test_a_chunked_run_with_progress_equals_one_call():
    sampler = sj.ula(MIXTURE.score, 0.05)
    x0 = jnp.zeros((5, 2))
    schedule = (jnp.linspace(0.1, 0.01, 40),)
    one = sj.run_chains(KEY, sampler, x0, 40, thin=4, schedule=schedule)
    chunked = sj.run_chains(KEY, sampler, x0, 40, thin=4, schedule=schedule, progress=True,
                            steps_per_call=12)  # fmt: skip
    np.testing.assert_array_equal(chunked.state.x, one.state.x)
    np.testing.assert_array_equal(chunked.trace.x, one.trace.x)
    np.testing.assert_allclose(chunked.info.num_nonfinite, one.info.num_nonfinite)
    single = sj.run(KEY, sampler, jnp.zeros(2), 40, progress=True)  # default chunks
    np.testing.assert_array_equal(single.state.x, sj.run(KEY, sampler, jnp.zeros(2), 40).state.x)
    with pytest.raises(ValueError, match="multiple of thin"):
        sj.run(KEY, sampler, jnp.zeros(2), 40, thin=4, progress=True, steps_per_call=6)


def test_divergence_warns_by_default_and_can_be_silenced():
    sampler = sj.ula(lambda x: 1e3 * x, 1.0)  # runs away to inf
    x0 = jnp.ones((3, 2))
    with pytest.warns(RuntimeWarning, match="run_chains: 3 of 3 chain"):
        sj.run_chains(KEY, sampler, x0, 100)
    with pytest.warns(RuntimeWarning, match="run: 1 of 1 chain"):
        sj.run(KEY, sampler, x0[0], 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sj.run_chains(KEY, sampler, x0, 100, warn=False)
        jax.jit(lambda k: sj.run_chains(k, sampler, x0, 100).info)(KEY)  # no look inside jit
    assert np.all(np.asarray(result.info.num_nonfinite) > 0)


def test_hmc_with_an_infinite_energy_error_counts_as_divergent():
    """A leapfrog that overflows gives energy_error = inf and acceptance 0: the chain stays
    finite (num_nonfinite = 0), and the transition is reported as divergent."""
    steep = lambda x: 1e30 * jnp.sum(x**4)
    with pytest.warns(RuntimeWarning, match="2 of 2 chain.*divergent transitions"):
        result = sj.run_chains(KEY, sj.hmc(steep, 1.0, 3), jnp.ones((2, 2)), 5)
    assert np.all(np.asarray(result.info.acceptance_rate) == 0.0)
    assert np.all(np.asarray(result.info.num_nonfinite) == 0.0)
    assert np.all(np.asarray(result.info.is_divergent) == 1.0)
    with pytest.warns(RuntimeWarning, match="divergent"):
        result = sj.run_chains(KEY, sj.mala(steep, 1.0), jnp.ones((2, 2)), 5)
    assert np.all(np.asarray(result.info.is_divergent) == 1.0)


def test_a_trace_too_large_for_memory_is_announced_before_running():
    sampler = sj.ula(MIXTURE.score, 0.05)
    with pytest.warns(ResourceWarning, match="the trace will take"):
        sj.run_chains(KEY, sampler, jnp.zeros((7, 2)), 10, thin=1, trace_memory_fraction=1e-12)
    with pytest.warns(ResourceWarning, match="the trace will take"):
        sj.run(KEY, sampler, jnp.zeros(2), 10, thin=1, progress=True, steps_per_call=5,
               trace_memory_fraction=1e-12)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sj.run_chains(KEY, sampler, jnp.zeros((7, 2)), 10, thin=1)  # 560 bytes: fine
