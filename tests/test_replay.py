"""The replay buffer: size, reinitialisation fraction, jit, determinism; AUROC; bad input."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import scorejax as sj

NOISE = sj.uniform_noise(0.0, 1.0, (3,))


def test_replay_buffer_keeps_its_size_and_rows():
    buffer = sj.replay_init(jax.random.key(0), NOISE, 50)
    x0, indices, is_reinit = sj.replay_sample(jax.random.key(1), buffer, 20, NOISE, 0.5)
    assert x0.shape == (20, 3) and len(set(np.asarray(indices).tolist())) == 20  # no repeats
    kept = ~np.asarray(is_reinit)
    np.testing.assert_array_equal(x0[kept], buffer.x[indices][kept])
    assert not np.any(np.all(np.asarray(x0[~kept]) == np.asarray(buffer.x[indices][~kept]), 1))
    new = sj.replay_push(buffer, indices, x0 + 10.0)
    assert new.x.shape == buffer.x.shape
    np.testing.assert_array_equal(new.x[indices], x0 + 10.0)
    untouched = np.setdiff1d(np.arange(50), np.asarray(indices))
    np.testing.assert_array_equal(new.x[untouched], buffer.x[untouched])


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_reinit_fraction_on_average(fraction):
    """The realised fraction over R draws of B chains is Binomial(R B, rho) / (R B): within
    4 standard errors sqrt(rho (1 - rho) / (R B)) (false-alarm rate 6e-5)."""
    buffer = sj.replay_init(jax.random.key(0), NOISE, 256)
    num_draws, batch_size = 200, 128
    draw = jax.jit(lambda k: sj.replay_sample(k, buffer, batch_size, NOISE, fraction)[2])
    masks = jax.vmap(draw)(jax.random.split(jax.random.key(1), num_draws))
    n = num_draws * batch_size
    realised = float(jnp.mean(masks))
    assert abs(realised - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / n)


def test_replay_is_jit_compatible_and_deterministic():
    buffer = sj.replay_init(jax.random.key(0), NOISE, 64)

    @jax.jit
    def cycle(key, buffer):
        x0, indices, _ = sj.replay_sample(key, buffer, 16, NOISE)
        return sj.replay_push(buffer, indices, x0 * 0.5)

    a = cycle(jax.random.key(3), buffer)
    b = cycle(jax.random.key(3), buffer)
    np.testing.assert_array_equal(a.x, b.x)
    eager = sj.replay_sample(jax.random.key(3), buffer, 16, NOISE)
    np.testing.assert_array_equal(
        sj.replay_push(buffer, eager[1], eager[0] * 0.5).x, a.x
    )  # jit and no-jit agree
    c = cycle(jax.random.key(4), buffer)
    assert not np.array_equal(a.x, c.x)


def test_pcd_step_carries_the_buffer():
    import optax

    energy_fn = lambda params, x: 0.5 * params * jnp.sum(x**2)
    score_fn = sj.score_from_energy(energy_fn)
    make_sampler = lambda params: sj.ula(partial(score_fn, params), 0.01)
    step = jax.jit(
        sj.make_cd_train_step(
            energy_fn, make_sampler, optax.sgd(0.01), num_mcmc_steps=2, persistent=True,
            noise_fn=NOISE,
        )
    )  # fmt: skip
    state = sj.init_train_state(jnp.array(1.0), optax.sgd(0.01), sj.replay_init(
        jax.random.key(0), NOISE, 40))  # fmt: skip
    batch = jnp.ones((8, 3))
    s1, m1 = step(state, jax.random.key(1), batch)
    s2, _ = step(state, jax.random.key(1), batch)
    assert s1.extra.x.shape == (40, 3)
    np.testing.assert_array_equal(s1.extra.x, s2.extra.x)
    assert int(jnp.sum(jnp.any(s1.extra.x != state.extra.x, axis=1))) == 8  # 8 chains moved
    assert 0.0 <= float(m1["reinit_fraction"]) <= 1.0
    with pytest.raises(ValueError, match="ReplayBuffer"):
        step(state._replace(extra=None), jax.random.key(1), batch)


def test_auroc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    scores_in = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding makes ties
    scores_out = np.round(rng.normal(0.0, 1.0, 200), 1)
    brute = np.mean(
        (scores_in[:, None] > scores_out[None, :]) + 0.5 * (scores_in[:, None] == scores_out)
    )
    value = float(sj.auroc(jnp.asarray(scores_in), jnp.asarray(scores_out)))
    np.testing.assert_allclose(value, brute, rtol=1e-5)
    labels = np.r_[np.ones(300), np.zeros(200)]
    np.testing.assert_allclose(value, roc_auc_score(labels, np.r_[scores_in, scores_out]), 1e-5)
    assert float(sj.auroc(jnp.ones(3), jnp.zeros(4))) == 1.0
    assert float(sj.auroc(jnp.zeros(3), jnp.zeros(4))) == 0.5


def test_bad_input_errors():
    buffer = sj.replay_init(jax.random.key(0), NOISE, 10)
    with pytest.raises(ValueError, match="batch_size"):
        sj.replay_sample(jax.random.key(0), buffer, 11, NOISE)
    with pytest.raises(ValueError, match="reinit_fraction"):
        sj.replay_sample(jax.random.key(0), buffer, 5, NOISE, 1.5)
    with pytest.raises(ValueError, match="noise_fn"):
        sj.replay_sample(jax.random.key(0), buffer, 5, None, 0.5)
    with pytest.raises(ValueError, match="size"):
        sj.replay_init(jax.random.key(0), NOISE, 0)
    with pytest.raises(ValueError, match="example shape"):
        sj.replay_push(buffer, jnp.arange(2), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="low"):
        sj.uniform_noise(1.0, 0.0, (2,))
    with pytest.raises(ValueError, match="scores_in"):
        sj.auroc(jnp.zeros(0), jnp.zeros(3))
