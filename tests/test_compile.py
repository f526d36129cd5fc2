"""scorejax's runners compile with XLA options chosen for the backend (scorejax/_compile.py)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax._compile import jit


def _mixture_score_norms():
    mixture = sj.data.eight_gaussians()
    score = sj.score_from_energy(sj.GaussianMixture.energy)
    return lambda x: jnp.sum(jax.vmap(lambda y: score(mixture, y))(x) ** 2, axis=-1)


def test_options_on_cpu_keep_ynnpack_for_dots_only():
    from scorejax import _compile

    f, x = _mixture_score_norms(), jnp.zeros((256, 2))
    options = sj.compiler_options()
    if not options:  # the fallback must mean this jaxlib rejects the option, nothing else
        with pytest.raises(Exception, match="xla_cpu_experimental_ynn_fusion_type"):
            jax.jit(f, compiler_options=_compile._CPU_OPTIONS).lower(x).compile()
        return
    assert options == _compile._CPU_OPTIONS
    # the mixture's per-chain reductions leave YNNPACK; the program is otherwise the same
    tuned = jax.jit(f, compiler_options=options).lower(x).compile().as_text()
    default = jax.jit(f).lower(x).compile().as_text()
    assert "ynn_fusion" in default and "ynn_fusion" not in tuned


def test_runner_jit_passes_the_options_at_top_level_only(monkeypatch):
    from scorejax import _compile

    # an option XLA rejects shows whether a call compiled with the options
    monkeypatch.setattr(_compile, "compiler_options", lambda training: {"xla_no_such_option": 1})
    f, x = _mixture_score_norms(), jnp.zeros((4, 2))
    with pytest.raises(Exception, match="xla_no_such_option"):
        jit(f)(x)
    jax.jit(jit(f))(x)  # nested: the outer jit's (default) options, no error


def _dsm_train_step():
    model = sj.nets.MLPScore(hidden=(32, 32))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    loss = partial(sj.dsm_loss, score_fn=sj.nets.apply_fn(model), sigma=0.1)
    optimizer = optax.adam(1e-3)
    return sj.make_train_step(loss, optimizer), sj.init_train_state(params, optimizer)


def test_training_options_turn_ynnpack_off_and_sampler_options_keep_it_for_dots():
    from scorejax import _compile

    train_step, state = _dsm_train_step()
    args = (state, jax.random.key(1), jax.random.normal(jax.random.key(2), (64, 2)))
    options = sj.compiler_options(training=True)
    if not options:
        with pytest.raises(Exception, match="xla_cpu_experimental_ynn_fusion_type"):
            jax.jit(train_step, compiler_options=_compile._CPU_TRAINING_OPTIONS).lower(
                *args
            ).compile()
        return
    assert options == _compile._CPU_TRAINING_OPTIONS != sj.compiler_options()
    text = lambda o: jax.jit(train_step, compiler_options=o).lower(*args).compile().as_text()
    assert "ynn_fusion" in text(sj.compiler_options()) and "ynn_fusion" not in text(options)


def test_fit_and_shard_train_step_compile_with_the_training_options(monkeypatch):
    from scorejax import _compile, sharding

    # rejected only when asked for the training options: shows which set each call used
    bad = lambda training=False: {"xla_no_such_option": 1} if training else {}
    monkeypatch.setattr(_compile, "compiler_options", bad)
    monkeypatch.setattr(sharding, "compiler_options", bad)
    train_step, state = _dsm_train_step()
    batch_fn = lambda key: jax.random.normal(key, (8, 2))
    with pytest.raises(Exception, match="xla_no_such_option"):
        sj.fit(train_step, state, jax.random.key(0), batch_fn, num_steps=2, progress=False)
    with pytest.raises(Exception, match="xla_no_such_option"):
        step = sharding.shard_train_step(train_step, sharding.make_mesh(1))
        step(state, jax.random.key(0), batch_fn(jax.random.key(1)))
    sj.run(jax.random.key(0), sj.ula(lambda x: -x, 0.1), jnp.ones(2), 3)  # sampler options


def test_fit_matches_a_plain_jitted_scan_of_its_steps():
    train_step, state = _dsm_train_step()
    batch_fn = lambda key: jax.random.normal(key, (64, 2))
    key = jax.random.key(3)
    _, history = sj.fit(
        train_step, jax.tree_util.tree_map(jnp.copy, state), key, batch_fn, num_steps=20,
        steps_per_call=20, progress=False,
    )  # fmt: skip

    @jax.jit  # XLA's default options; the same steps and keys as fit's loop
    def plain(state, key):
        def body(state, step_key):
            key_batch, key_step = jax.random.split(step_key)
            return train_step(state, key_step, batch_fn(key_batch))

        return jax.lax.scan(body, state, jax.random.split(key, 20))

    _, metrics = plain(state, jax.random.split(key)[1])
    np.testing.assert_allclose(history["loss"], metrics["loss"], rtol=1e-5)


def test_tuned_jit_matches_plain_jit_at_top_level_and_nested():
    f = _mixture_score_norms()
    x = jax.random.normal(jax.random.key(0), (256, 2))
    tuned, plain = jit(f), jax.jit(f)
    # summation order may differ between fusions: float32 rounding, not a different result
    np.testing.assert_allclose(tuned(x), plain(x), rtol=1e-5)
    # inside a user's jit (where JAX refuses nested compiler options) and under vmap
    np.testing.assert_allclose(jax.jit(tuned)(x), plain(x), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(tuned)(x[:, None]).ravel(), plain(x), rtol=1e-5)


def test_run_inside_a_user_jit_works():
    sampler = sj.ula(lambda x: -x, 0.1)
    direct = sj.run(jax.random.key(0), sampler, jnp.ones(2), 10).state.x
    wrapped = jax.jit(lambda k: sj.run(k, sampler, jnp.ones(2), 10).state.x)(jax.random.key(0))
    np.testing.assert_allclose(wrapped, direct, rtol=1e-6)
