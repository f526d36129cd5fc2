"""make_train_step and fit: one optimiser step, EMA with warm-up, determinism, keys by global
step (chunking and continuing never change the numbers), callbacks, K steps per call."""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj


def quadratic_loss(params, key, batch):
    """Mean squared distance to the batch: minimised at the batch mean."""
    return 0.5 * jnp.mean(jnp.sum((batch - params["w"]) ** 2, axis=-1))


def test_one_step_is_sgd_and_ema():
    optimizer = optax.sgd(0.1)
    step = sj.make_train_step(quadratic_loss, optimizer, ema_decay=0.9)
    state = sj.init_train_state({"w": jnp.zeros(2)}, optimizer)
    batch = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    state, metrics = step(state, jax.random.key(0), batch)
    # grad = w - mean(batch) = (-2, -3); w <- 0 - 0.1 * grad
    np.testing.assert_allclose(state.params["w"], [0.2, 0.3], rtol=1e-6)
    # EMA warm-up at the first step: d_0 = min(0.9, 1 / 10) = 0.1, ema = 0.1 * 0 + 0.9 * w
    np.testing.assert_allclose(state.ema_params["w"], [0.18, 0.27], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], np.hypot(2, 3), rtol=1e-6)
    assert int(state.step) == 1


def test_fit_converges_and_is_deterministic():
    target = jnp.array([1.5, -0.5])
    batch_fn = lambda k: target + 0.1 * jax.random.normal(k, (64, 2))
    optimizer = optax.adam(0.05)
    step = sj.make_train_step(quadratic_loss, optimizer)

    def go(seed):
        state = sj.init_train_state({"w": jnp.zeros(2)}, optimizer)
        return sj.fit(
            step,
            state,
            jax.random.key(seed),
            batch_fn,
            num_steps=450,
            steps_per_call=100,
            progress=False,
        )

    state, history = go(0)
    assert history["loss"].shape == (450,)  # 4 full calls and a remainder of 50
    np.testing.assert_allclose(state.params["w"], target, atol=0.05)
    assert history["loss"][-50:].mean() < history["loss"][:10].mean()
    _, history2 = go(0)
    np.testing.assert_array_equal(history["loss"], history2["loss"])


def test_fit_warns_on_a_non_finite_loss():
    optimizer = optax.sgd(0.1)
    loss = lambda p, k, b: jnp.log(p["w"] - 10.0).sum()  # NaN from the first step
    step = sj.make_train_step(loss, optimizer)
    state = sj.init_train_state({"w": jnp.zeros(1)}, optimizer)
    with pytest.warns(RuntimeWarning, match="non-finite loss first at step 0"):
        sj.fit(
            step,
            state,
            jax.random.key(0),
            lambda k: jnp.zeros((1, 1)),
            num_steps=5,
            steps_per_call=5,
            progress=False,
        )


def test_aux_metrics_and_minibatches():
    data = jnp.arange(20.0).reshape(10, 2)
    batch_fn = sj.minibatches(data, 4)
    batch = batch_fn(jax.random.key(0))
    assert batch.shape == (4, 2)
    assert all(any(np.array_equal(row, d) for d in np.asarray(data)) for row in np.asarray(batch))
    loss = lambda p, k, b: (quadratic_loss(p, k, b), {"mean": jnp.mean(b)})
    step = sj.make_train_step(loss, optax.sgd(0.1), has_aux=True)
    _, metrics = step(sj.init_train_state({"w": jnp.zeros(2)}, optax.sgd(0.1)), None, batch)
    np.testing.assert_allclose(metrics["mean"], np.mean(batch))


def test_minibatches_of_a_pytree_take_the_same_rows_of_each_array():
    images, labels = jnp.arange(30.0).reshape(10, 3), jnp.arange(10)
    x, y = sj.minibatches((images, labels), 6)(jax.random.key(1))
    assert x.shape == (6, 3) and y.shape == (6,)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(images)[np.asarray(y)])
    with pytest.raises(ValueError, match="leading axis"):
        sj.minibatches((images, labels[:5]), 2)


def test_bad_input():
    with pytest.raises(ValueError, match="ema_decay"):
        sj.make_train_step(quadratic_loss, optax.sgd(0.1), ema_decay=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        sj.minibatches(jnp.ones((3, 2)), 0)
    step = sj.make_train_step(quadratic_loss, optax.sgd(0.1))
    state = sj.init_train_state({"w": jnp.zeros(2)}, optax.sgd(0.1))
    with pytest.raises(ValueError, match="num_steps"):
        sj.fit(step, state, jax.random.key(0), partial(jnp.zeros, (2, 2)), num_steps=0)


def test_minibatches_pass_their_data_as_an_argument():
    """Two samplers over different data of one shape share fit's compiled loop (the loss is
    traced once), and each run sees its own data, not the first run's baked in."""
    loss = chex.assert_max_traces(
        lambda p, k, b: (quadratic_loss(p, k, b), {"mean": b.mean()}), n=1
    )
    optimizer = optax.sgd(0.1)
    step = sj.make_train_step(loss, optimizer, has_aux=True)
    means = []
    for value in (0.0, 1.0):
        state = sj.init_train_state({"w": jnp.zeros(2)}, optimizer)
        batch_fn = sj.minibatches(jnp.full((10, 2), value), 4)
        _, history = sj.fit(
            step, state, jax.random.key(0), batch_fn, num_steps=3, steps_per_call=3,
            progress=False,
        )  # fmt: skip
        means.append(history["mean"])
    np.testing.assert_array_equal(means[0], 0.0)
    np.testing.assert_array_equal(means[1], 1.0)


def test_ema_warm_up_follows_its_closed_form():
    """d_t = min(d, (1 + t) / (10 + t)): the EMA of a parameter sequence p_1, p_2, ... is the
    recursion e_{t+1} = d_t e_t + (1 - d_t) p_{t+1}, checked step by step against NumPy."""
    optimizer = optax.sgd(0.5)
    step = jax.jit(sj.make_train_step(quadratic_loss, optimizer, ema_decay=0.99))
    state = sj.init_train_state({"w": jnp.zeros(1)}, optimizer)
    ema = 0.0
    for t in range(40):
        batch = jnp.full((1, 1), float(t % 3))
        state, _ = step(state, jax.random.key(0), batch)
        d = min(0.99, (1 + t) / (10 + t))
        ema = d * ema + (1 - d) * float(state.params["w"][0])
        np.testing.assert_allclose(float(state.ema_params["w"][0]), ema, rtol=1e-5)


def _noisy_problem():
    loss = lambda p, k, b: quadratic_loss(p, k, b) + 0.01 * jax.random.normal(k)
    batch_fn = lambda k: jax.random.normal(k, (8, 2)) + 1.0
    optimizer = optax.adam(0.01)
    return sj.make_train_step(loss, optimizer), optimizer, batch_fn


def test_results_do_not_depend_on_steps_per_call_and_20_plus_20_is_40():
    step, optimizer, batch_fn = _noisy_problem()
    key = jax.random.key(7)
    fresh = lambda: sj.init_train_state({"w": jnp.zeros(2)}, optimizer)
    run = lambda state, n, k: sj.fit(step, state, key, batch_fn, num_steps=n, steps_per_call=k,
                                     progress=False)  # fmt: skip
    whole, history = run(fresh(), 40, 10)
    chunked, history7 = run(fresh(), 40, 7)
    np.testing.assert_array_equal(history["loss"], history7["loss"])
    half, first = run(fresh(), 20, 10)
    resumed, second = run(half, 20, 10)
    np.testing.assert_array_equal(np.concatenate([first["loss"], second["loss"]]), history["loss"])
    for other in (chunked, resumed):
        for a, b in zip(jax.tree_util.tree_leaves(other), jax.tree_util.tree_leaves(whole),
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b)
    assert int(resumed.step) == 40


def test_callbacks_see_each_call_with_its_state_and_metrics():
    step, optimizer, batch_fn = _noisy_problem()
    seen = []
    callback = lambda t, state, metrics: seen.append(
        (t, int(state.step), np.asarray(state.params["w"]), metrics["loss"].shape)
    )
    state = sj.init_train_state({"w": jnp.zeros(2)}, optimizer)
    final, _ = sj.fit(step, state, jax.random.key(0), batch_fn, num_steps=25, steps_per_call=10,
                      progress=False, callbacks=(callback,))  # fmt: skip
    assert [(t, s, shape) for t, s, _, shape in seen] == [
        (10, 10, (10,)),
        (20, 20, (10,)),
        (25, 25, (5,)),
    ]
    # the snapshot is the state at that step: the last one is the final state
    np.testing.assert_array_equal(seen[-1][2], final.params["w"])
    assert not np.array_equal(seen[0][2], seen[1][2])
    with pytest.raises(TypeError, match="callbacks"):
        sj.fit(step, final, jax.random.key(0), batch_fn, num_steps=1, callbacks=(1,))
