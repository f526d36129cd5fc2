"""Parallel tempering: exact swap probabilities, mode weights on a trapping target."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import scorejax as sj
from scorejax import diagnostics
from scorejax.samplers import (
    Sampler,
    geometric_temperatures,
    mala,
    parallel_tempering,
    run_chains,
)

# two modes 6 apart with scale 0.5: the barrier between them is E(0) - E(mode) ~ 18,
# which traps a single MALA chain for good (exp(18) ~ 7e7 steps)
MIXTURE = sj.GaussianMixture(
    means=jnp.array([[-3.0, 0.0], [3.0, 0.0]]),
    scales=jnp.array([0.5, 0.5]),
    weights=jnp.array([0.3, 0.7]),
)
TEMPERATURES = geometric_temperatures(6, 30.0)


PT = parallel_tempering(MIXTURE.energy, lambda e, t: mala(e, 0.1 * t), TEMPERATURES)
NUM_SEEDS, NUM_CHAINS, NUM_STEPS = 2, 4, 3000
X0 = jnp.broadcast_to(jnp.array([-3.0, 0.0]), (NUM_CHAINS, 6, 2))  # all in the light mode


def test_geometric_temperatures_closed_form():
    temps = geometric_temperatures(5, 16.0)
    np.testing.assert_allclose(temps, [1.0, 2.0, 4.0, 8.0, 16.0], rtol=1e-6)
    np.testing.assert_allclose(geometric_temperatures(3, 9.0, 0.5), [0.5, 1.5 * np.sqrt(2), 9.0],
                               rtol=1e-5)  # fmt: skip


def test_pt_recovers_mode_weights_where_single_chain_is_trapped():
    # jitted and vmapped over seeds (outer) and chains (inner, run_chains)
    over_seeds = jax.jit(jax.vmap(lambda k: run_chains(k, PT, X0, NUM_STEPS, thin=1)))
    keys = jax.random.split(jax.random.key(0), NUM_SEEDS)
    result = over_seeds(keys)
    np.testing.assert_array_equal(result.state.x, over_seeds(keys).state.x)  # same key
    trace = result.trace.x.reshape(NUM_SEEDS * NUM_CHAINS, NUM_STEPS, 6, 2)
    cold = trace[:, NUM_STEPS // 5 :, 0, 0]  # drop a 20% burn-in
    in_heavy = (cold > 0).astype(jnp.float32)
    weight = float(jnp.mean(in_heavy))
    error = float(diagnostics.mcse(in_heavy))
    k = norm.isf(1e-3 / 2)  # two-sided false-alarm rate 1e-3
    assert abs(weight - 0.7) < k * error, (weight, error)
    swap_rate = np.asarray(result.info.swap_rate).reshape(-1, 5).mean(axis=0)
    assert swap_rate.shape == (5,)
    assert np.all((swap_rate > 0) & (swap_rate < 1)), swap_rate
    assert np.all(np.asarray(result.info.num_nonfinite) == 0)
    # the same MALA alone, started in the light mode, never reaches the heavy one
    single = run_chains(jax.random.key(1), mala(MIXTURE.energy, 0.1), X0[:, 0], NUM_STEPS)
    assert np.all(np.asarray(single.state.x[:, 0]) < 0)


class _Still(NamedTuple):
    x: jnp.ndarray


def _still_kernel(energy_fn, temperature):
    """A kernel that never moves, so one PT step is a pure swap step."""
    return Sampler(lambda x: _Still(x), lambda key, state: (state, ()))


def test_swap_probabilities_and_alternating_pairs_are_exact():
    energy_fn = lambda x: jnp.sum(x**2)
    temps = jnp.array([1.0, 2.0, 4.0, 8.0])
    pt = parallel_tempering(energy_fn, _still_kernel, temps)
    x = jnp.array([[2.0], [0.5], [1.5], [0.1]])
    state = pt.init(x)
    new, info = pt.step(jax.random.key(0), state)
    energies = np.array([4.0, 0.25, 2.25, 0.01])
    beta = 1 / np.asarray(temps)
    expected = np.minimum(1.0, np.exp((energies[:-1] - energies[1:]) * (beta[:-1] - beta[1:])))
    np.testing.assert_allclose(info.swap_rate, expected, rtol=1e-5)
    np.testing.assert_allclose(info.acceptance_rate, np.ones(4))
    # parity 0 proposes pairs (0,1) and (2,3) only; pair (0,1) has probability one
    assert bool(info.is_swapped[0]) and not bool(info.is_swapped[1])
    np.testing.assert_allclose(new.x[:2, 0], [0.5, 2.0])
    assert int(new.parity) == 1
    _, info2 = pt.step(jax.random.key(1), new)
    assert not bool(info2.is_swapped[0]) and not bool(info2.is_swapped[2])


def test_pt_bad_inputs():
    kernel = lambda e, t: mala(e, 0.1)
    with pytest.raises(ValueError, match="strictly increasing"):
        parallel_tempering(MIXTURE.energy, kernel, jnp.array([1.0, 3.0, 2.0]))
    with pytest.raises(ValueError, match="temperatures"):
        parallel_tempering(MIXTURE.energy, kernel, jnp.array([1.0]))
    with pytest.raises(ValueError, match="temperatures"):
        parallel_tempering(MIXTURE.energy, kernel, jnp.array([-1.0, 2.0]))
    with pytest.raises(TypeError, match="kernel_factory"):
        parallel_tempering(MIXTURE.energy, None, TEMPERATURES)
    with pytest.raises(TypeError, match="kernel_factory must return a scorejax Sampler"):
        parallel_tempering(MIXTURE.energy, lambda e, t: (e, t), TEMPERATURES)
    with pytest.raises(ValueError, match="num_replicas"):
        geometric_temperatures(1, 10.0)
    with pytest.raises(ValueError, match="max_temperature"):
        geometric_temperatures(4, 0.5)
    with pytest.raises(ValueError, match="shape"):
        PT.init(jnp.zeros(2))
