"""The hot paths: annealed Langevin's program does not grow with the number of noise levels,
the runner's unroll knob changes speed and never results, run_chains is traced once and
needs no per-chain memory per step, and fit's pipelined, unrolled loop gives the same
history."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scorejax as sj
from scorejax.samplers import base


def _mixture_score():
    mixture = sj.data.eight_gaussians()
    return partial(sj.score_from_energy(sj.GaussianMixture.energy), mixture)


def _annealed_jaxpr(num_levels: int):
    mixture = sj.data.eight_gaussians()
    score_fn = lambda x, sigma: mixture.noised(sigma).score(x)
    sigmas = sj.geometric_sigmas(3.0, 0.05, num_levels)
    fn = lambda key, x0, sigmas: (
        sj.annealed_langevin(
            key, score_fn, x0, sigmas, step_size=1e-3, num_steps_per_level=5
        ).state.x
    )
    return jax.make_jaxpr(fn)(jax.random.key(0), jnp.zeros(2), sigmas)


def _num_equations(jaxpr) -> int:
    """Equations of a jaxpr and of every jaxpr nested in it (scan bodies, jitted calls)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if hasattr(sub, "eqns") or hasattr(sub, "jaxpr"):
                    total += _num_equations(sub)
    return total


def test_annealed_langevin_program_size_does_not_grow_with_levels():
    # the ladder is data: 10 and 200 levels trace to programs with the same operations,
    # differing only in the array shapes, so compile time is independent of L
    small, large = _annealed_jaxpr(10), _annealed_jaxpr(200)
    assert _num_equations(small) == _num_equations(large) > 0
    shapes = lambda j: {tuple(v.aval.shape) for v in j.jaxpr.invars}
    assert (10,) in shapes(small) and (200,) in shapes(large)


def test_default_unroll_is_one_on_cpu_and_unroll_never_changes_results():
    assert base.default_unroll() == (1 if jax.default_backend() == "cpu" else 8)
    sampler = sj.ula(_mixture_score(), 0.01)
    x0 = jnp.zeros((8, 2))
    key = jax.random.key(0)
    ref = sj.run_chains(key, sampler, x0, 24, unroll=1)
    for unroll in (None, 4, 24):
        out = sj.run_chains(key, sampler, x0, 24, unroll=unroll)
        np.testing.assert_allclose(out.state.x, ref.state.x, atol=1e-6, rtol=0)
    # run_chains is run vmapped over per-chain keys
    one = sj.run(jax.random.split(key, 8)[3], sampler, x0[3], 24)
    np.testing.assert_allclose(one.state.x, ref.state.x[3], atol=1e-6, rtol=0)


def test_run_chains_traces_once():
    traces = []

    def score_fn(x):
        traces.append(1)
        return -x

    sampler = sj.ula(score_fn, 0.01)
    sj.run_chains(jax.random.key(0), sampler, jnp.zeros((4, 2)), 10)
    first = len(traces)  # one trace may call score_fn more than once (shape inference)
    for seed in range(1, 3):
        sj.run_chains(jax.random.key(seed), sampler, jnp.ones((4, 2)) * seed, 10)
    assert first > 0 and len(traces) == first


def test_fit_unrolled_and_pipelined_gives_the_same_history():
    model = sj.nets.MLPScore(hidden=(16,))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    optimizer = optax.adam(1e-3)
    step = sj.make_train_step(
        partial(sj.dsm_loss, score_fn=sj.nets.apply_fn(model), sigma=0.3), optimizer
    )
    batch_fn = lambda k: sj.data.sample_eight_gaussians(k, 32)
    histories = []
    for unroll in (1, 5):
        state = sj.init_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer)
        _, history = sj.fit(
            step, state, jax.random.key(1), batch_fn, num_steps=25, steps_per_call=10,
            progress=False, unroll=unroll,
        )  # fmt: skip
        assert history["loss"].shape == (25,)
        histories.append(history["loss"])
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)


def _run_chains_temp_bytes(num_chains: int, num_steps: int) -> int:
    sampler = sj.ula(_mixture_score(), 0.01)
    fn = lambda key, x0: sj.run_chains(key, sampler, x0, num_steps).state.x
    compiled = jax.jit(fn).lower(jax.random.key(0), jnp.zeros((num_chains, 2))).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_run_chains_needs_no_memory_per_chain_step():
    # step keys are folded in inside the loop: no (chains, steps) key array is materialised
    # (8 bytes per chain-step, 80 MB here). What remains is the scanned step counter, 4 bytes
    # per step whatever the number of chains.
    num_steps = 10_000
    short, long = _run_chains_temp_bytes(1000, 10), _run_chains_temp_bytes(1000, num_steps)
    assert long - short <= 8 * num_steps
