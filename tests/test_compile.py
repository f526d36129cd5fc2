"""scorejax's loops compile with one rule: arrays are data, everything else is code
(scorejax/_compile.py). Numbers rebuilt into a sampler or a score function reuse the
compiled program; a new plain function compiles again; results equal plain jax.jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scorejax as sj
from scorejax import _compile


def _counting_score():
    traces = []

    def score_fn(params, x):
        traces.append(1)  # runs once per trace, never per step
        return -(x - params["mean"]) / params["scale"] ** 2

    return score_fn, traces


def test_rebuilt_sampler_with_new_step_size_and_params_is_not_retraced():
    score_fn, traces = _counting_score()
    params = {"mean": jnp.zeros(2), "scale": jnp.ones(())}
    x0 = jnp.zeros((4, 2))
    sj.run_chains(jax.random.key(0), sj.ula(functools.partial(score_fn, params), 0.1), x0, 10)
    first = len(traces)
    assert first > 0
    for step_size, shift in ((0.05, 1.0), (0.2, -3.0)):
        new_params = {"mean": params["mean"] + shift, "scale": params["scale"] * 2.0}
        sampler = sj.ula(functools.partial(score_fn, new_params), step_size)
        out = sj.run_chains(jax.random.key(1), sampler, x0, 10)
        assert np.all(np.isfinite(out.state.x))
    assert len(traces) == first  # new numbers, the same program
    # the same holds for the MCMC kernels, annealed Langevin and tempering
    energy = lambda params, x: 0.5 * jnp.sum((x - params["mean"]) ** 2)
    counted = []

    def energy_fn(params, x):
        counted.append(1)
        return energy(params, x)

    for h in (0.1, 0.2):
        sampler = sj.mala(functools.partial(energy_fn, {"mean": jnp.full(2, h)}), h)
        sj.run_chains(jax.random.key(0), sampler, x0, 5)
    after_mala = len(counted)
    sampler = sj.hmc(functools.partial(energy_fn, {"mean": jnp.ones(2)}), 0.3, 3)
    sj.run_chains(jax.random.key(0), sampler, x0, 5)
    after_hmc = len(counted)
    sampler = sj.hmc(functools.partial(energy_fn, {"mean": -jnp.ones(2)}), 0.1, 3)
    sj.run_chains(jax.random.key(0), sampler, x0, 5)
    assert len(counted) == after_hmc > after_mala > 0


class _CountCompiles:
    """Counts XLA compilations in a block (jax.monitoring's backend-compile events)."""

    def __enter__(self):
        self.count = 0

        def listener(event, duration, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                self.count += 1

        self._listener = listener
        jax.monitoring.register_event_duration_secs_listener(listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def test_a_bound_method_is_data_and_a_new_lambda_is_code():
    mixture = sj.data.two_gaussians()
    x0 = jnp.zeros((3, 2))
    sj.run_chains(jax.random.key(0), sj.ula(mixture.score, 0.01), x0, 3)
    moved = mixture._replace(means=mixture.means + 1.0)
    with _CountCompiles() as same:
        out = sj.run_chains(jax.random.key(0), sj.ula(moved.score, 0.02), x0, 3)
    assert same.count == 0 and out.state.x.shape == (3, 2)
    with _CountCompiles() as new:
        sj.run_chains(jax.random.key(0), sj.ula(lambda x: moved.score(x), 0.01), x0, 3)
    assert new.count >= 1


def test_partition_round_trips_and_keeps_arrays_as_data():
    tree = (functools.partial(jnp.add, jnp.ones(2)), 3, 0.5, "name", {"a": np.zeros(3)})
    arrays, static = _compile.partition(tree)
    assert len(arrays) == 2 and hash(static) == hash(_compile.partition(tree)[1])
    rebuilt = _compile.combine(arrays, static)
    np.testing.assert_array_equal(rebuilt[0](1.0), jnp.full(2, 2.0))
    assert rebuilt[1:4] == (3, 0.5, "name")
    # a new array of the same shape leaves the static part equal: the same cache entry
    other = (functools.partial(jnp.add, jnp.zeros(2)), 3, 0.5, "name", {"a": np.ones(3)})
    assert _compile.partition(other)[1] == static
    # a Python float is code: another value is another program
    assert _compile.partition((*tree[:2], 0.25, *tree[3:]))[1] != static


def test_options_apply_only_on_the_measured_jaxlib_and_backend(monkeypatch):
    from jaxlib import version

    _compile._options.cache_clear()
    try:
        monkeypatch.setattr(version, "__version__", "99.0.0")  # a jaxlib never measured
        assert _compile._options(True) == () and _compile._options(False) == ()
        _compile._options.cache_clear()
        monkeypatch.undo()
        if not (jax.default_backend() == "cpu" and version.__version__.startswith("0.10.")):
            assert _compile._options(False) == ()
    finally:
        _compile._options.cache_clear()


def test_jit_matches_plain_jit_at_top_level_and_under_a_user_jit_and_vmap():
    mixture = sj.data.eight_gaussians()
    score = sj.score_from_energy(sj.GaussianMixture.energy)
    f = lambda m, x: jnp.sum(jax.vmap(lambda y: score(m, y))(x) ** 2, axis=-1)
    x = jax.random.normal(jax.random.key(0), (256, 2))
    tuned = _compile.jit(f, training=False)
    plain = jax.jit(f)
    # summation order may differ between fusions: float32 rounding, not a different result
    np.testing.assert_allclose(tuned(mixture, x), plain(mixture, x), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(tuned)(mixture, x), plain(mixture, x), rtol=1e-5)
    batched = jax.vmap(tuned, in_axes=(None, 0))(mixture, x[:, None])
    np.testing.assert_allclose(batched.ravel(), plain(mixture, x), rtol=1e-5)


def test_run_inside_a_user_jit_works():
    sampler = sj.ula(lambda x: -x, 0.1)
    direct = sj.run(jax.random.key(0), sampler, jnp.ones(2), 10).state.x
    wrapped = jax.jit(lambda k: sj.run(k, sampler, jnp.ones(2), 10).state.x)(jax.random.key(0))
    np.testing.assert_allclose(wrapped, direct, rtol=1e-6)


def test_fit_matches_a_plain_jitted_scan_of_its_steps():
    model = sj.nets.MLPScore(hidden=(32, 32))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    loss = functools.partial(sj.dsm_loss, score_fn=sj.nets.apply_fn(model), sigma=0.1)
    optimizer = optax.adam(1e-3)
    train_step = sj.make_train_step(loss, optimizer)
    state = sj.init_train_state(params, optimizer)
    batch_fn = lambda key: jax.random.normal(key, (64, 2))
    key = jax.random.key(3)
    _, history = sj.fit(
        train_step, jax.tree_util.tree_map(jnp.copy, state), key, batch_fn, num_steps=20,
        steps_per_call=7, progress=False,
    )  # fmt: skip

    @jax.jit  # XLA's default options; the same steps and keys as fit's loop
    def plain(state):
        def body(state, _):
            key_batch, key_step = jax.random.split(jax.random.fold_in(key, state.step))
            return train_step(state, key_step, batch_fn(key_batch))

        return jax.lax.scan(body, state, None, length=20)

    _, metrics = plain(state)
    np.testing.assert_allclose(history["loss"], metrics["loss"], rtol=1e-5)
