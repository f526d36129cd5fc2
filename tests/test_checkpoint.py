"""Checkpoints and logs (scorejax/checkpoint.py): a run interrupted and resumed from its
latest checkpoint equals the uninterrupted run bit for bit; the newest k are kept; a
corrupted checkpoint is named and the previous good one is used; keys of every
implementation survive; TensorBoard events are written and read back."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax import checkpoint


def _problem():
    model = sj.nets.MLPScore(hidden=(16,))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    loss = functools.partial(sj.dsm_loss, score_fn=sj.nets.apply_fn(model), sigma=0.3)
    optimizer = optax.adam(1e-2)
    step = sj.make_train_step(loss, optimizer, ema_decay=0.99)
    fresh = lambda: sj.init_train_state(params, optimizer)
    batch_fn = lambda key: sj.data.sample_eight_gaussians(key, 32)
    return step, fresh, batch_fn


def _assert_states_equal(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    step, fresh, batch_fn = _problem()
    key = jax.random.key(5)
    fit = lambda state, n, callbacks=(): sj.fit(step, state, key, batch_fn, num_steps=n,
                                                steps_per_call=10, progress=False,
                                                callbacks=callbacks)  # fmt: skip
    whole, history = fit(fresh(), 60)
    # the first run is "interrupted" after 40 steps, checkpointing every 20
    save = checkpoint.checkpoint_callback(tmp_path, key, every=20, max_to_keep=2,
                                          config={"lr": 1e-2})  # fmt: skip
    fit(fresh(), 40, (save,))
    assert checkpoint.checkpoint_steps(tmp_path) == [20, 40]
    restored = checkpoint.restore_checkpoint(tmp_path, fresh())
    assert restored.step == 40 and restored.config == {"lr": 1e-2}
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(key))
    resumed, rest = fit(restored.state, 20)
    _assert_states_equal(resumed, whole)
    np.testing.assert_array_equal(rest["loss"], history["loss"][40:])


def test_the_newest_k_are_kept_and_a_corrupted_one_falls_back(tmp_path):
    step, fresh, batch_fn = _problem()
    key = jax.random.key(1)
    save = checkpoint.checkpoint_callback(tmp_path, key, every=10, max_to_keep=3)
    sj.fit(step, fresh(), key, batch_fn, num_steps=50, steps_per_call=10,
                      progress=False, callbacks=(save,))  # fmt: skip
    assert checkpoint.checkpoint_steps(tmp_path) == [30, 40, 50]
    good = checkpoint.restore_checkpoint(tmp_path, fresh(), step=40)
    # truncate every data file of the newest checkpoint
    for path in (tmp_path / "50").rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "METADATA" not in path.name:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match=r"checkpoint .*50 could not be read"):
        restored = checkpoint.restore_checkpoint(tmp_path, fresh())
    assert restored.step == 40
    _assert_states_equal(restored.state, good.state)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.restore_checkpoint(tmp_path / "empty", fresh())
    with pytest.raises(FileNotFoundError, match="step 7"):
        checkpoint.restore_checkpoint(tmp_path, fresh(), step=7)
    # nothing is pickled: no file of a checkpoint starts with a pickle protocol header
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            assert path.read_bytes()[:2] not in (b"\x80\x04", b"\x80\x05"), path


@pytest.mark.parametrize("impl", [None, "rbg", sj.prng.THREEFRY_UNROLLED],
                         ids=["threefry", "rbg", "unrolled"])  # fmt: skip
def test_a_checkpoint_keeps_the_runs_key_and_a_replay_buffer(tmp_path, impl):
    key = jax.random.key(3, impl=impl)
    buffer = sj.replay_init(jax.random.key(2), sj.uniform_noise(0.0, 1.0, (2,)), 8)
    state = sj.init_train_state({"w": jnp.ones(2)}, optax.sgd(0.1), extra=buffer)
    checkpoint.save_checkpoint(tmp_path, state, key)
    restored = checkpoint.restore_checkpoint(tmp_path, state)
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(key))
    assert isinstance(restored.state.extra, sj.ReplayBuffer)
    _assert_states_equal(restored.state, state)


def test_tensorboard_events_are_written_and_read_back(tmp_path):
    step, fresh, batch_fn = _problem()
    images = lambda state: jnp.linspace(-1.0, 1.0, 4 * 3 * 5).reshape(4, 3, 5)
    log = checkpoint.tensorboard_callback(tmp_path, images=images, image_every=20)
    _, history = sj.fit(step, fresh(), jax.random.key(0), batch_fn, num_steps=30,
                        steps_per_call=10, progress=False, callbacks=(log,))  # fmt: skip
    log.close()
    events = checkpoint.read_events(tmp_path)
    steps, values = zip(*events["loss"], strict=True)
    assert list(steps) == list(range(1, 31))
    np.testing.assert_allclose(values, history["loss"], rtol=1e-6)
    assert {"grad_norm", "loss", "samples"} <= set(events)
    [(image_step, image)] = events["samples"]
    assert image_step == 20 and image.shape[:2] == (3 + 2, 4 * (5 + 1) + 1)  # one row of 4
