"""scorejax.prng: Threefry-2x32 against Random123's known answers, and the unrolled generator
against JAX's own threefry2x32, bit for bit, for every way scorejax draws random numbers."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax.prng import THREEFRY_UNROLLED, fast_key, threefry2x32

# Random123's known-answer vectors for threefry2x32_20 (Salmon et al. 2011; the kat_vectors
# file of the Random123 distribution): (key, counter) -> output
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize(("key", "counter", "expected"), KNOWN_ANSWERS)
def test_threefry_matches_random123_known_answers(key, counter, expected):
    key = jnp.array(key, jnp.uint32)
    x1, x2 = (jnp.array([c], jnp.uint32) for c in counter)
    y1, y2 = threefry2x32(key, x1, x2)
    assert (int(y1[0]), int(y2[0])) == expected
    y1, y2 = jax.jit(threefry2x32)(key, x1, x2)
    assert (int(y1[0]), int(y2[0])) == expected


DRAWS = {
    "normal": lambda k: jax.random.normal(k, (5, 7)),
    "normal, odd size": lambda k: jax.random.normal(k, (13,)),
    "normal, scalar": lambda k: jax.random.normal(k, ()),
    "normal, empty": lambda k: jax.random.normal(k, (0, 3)),
    "normal, bfloat16": lambda k: jax.random.normal(k, (6,), jnp.bfloat16),
    "uniform": lambda k: jax.random.uniform(k, (4, 3), minval=-1.0, maxval=2.0),
    "bits, 8": lambda k: jax.random.bits(k, (9,), jnp.uint8),
    "bits, 16": lambda k: jax.random.bits(k, (3, 3), jnp.uint16),
    "bits, 32": lambda k: jax.random.bits(k, (2, 5)),
    "split": lambda k: jax.random.key_data(jax.random.split(k, 5)),
    "split, 2-D": lambda k: jax.random.key_data(jax.random.split(k, (2, 3))),
    "fold_in": lambda k: jax.random.key_data(jax.random.fold_in(k, 123456789)),
    "fold_in, 2^32 - 1": lambda k: jax.random.key_data(jax.random.fold_in(k, 2**32 - 1)),
    "randint": lambda k: jax.random.randint(k, (100,), 0, 17),
    "categorical": lambda k: jax.random.categorical(k, jnp.log(jnp.array([0.2, 0.8])), shape=(50,)),
    "permutation": lambda k: jax.random.permutation(k, 20),
    "bernoulli": lambda k: jax.random.bernoulli(k, 0.3, (40,)),
    "gamma": lambda k: jax.random.gamma(k, 2.5, (10,)),
}  # fmt: skip


def _unrolled(key):
    return jax.random.wrap_key_data(jax.random.key_data(key), impl=THREEFRY_UNROLLED)


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_unrolled_threefry_draws_the_same_numbers_as_jax(name):
    draw = DRAWS[name]
    np.testing.assert_array_equal(draw(_unrolled(jax.random.key(0))), draw(jax.random.key(0)))
    for seed in (7, 2**31 + 5):
        key = jax.random.key(seed)
        _assert_same_draws(jax.jit(draw)(_unrolled(key)), jax.jit(draw)(key))
    keys = jax.random.split(jax.random.key(3), 4)  # batched keys, as inside run_chains
    _assert_same_draws(jax.vmap(draw)(_unrolled(keys)), jax.vmap(draw)(keys))


def _assert_same_draws(actual, expected):
    # The bits are equal; float draws computed from them in two different compiled programs
    # can differ in the last place where XLA contracts a * b + c into an FMA in one program
    # and not the other (gamma's rejection loop does, as JAX's own jitted and eager gamma
    # do for the same key). Integer draws must match exactly.
    actual, expected = np.asarray(actual), np.asarray(expected)
    if np.issubdtype(expected.dtype, np.floating) and expected.dtype.itemsize >= 4:
        np.testing.assert_array_max_ulp(actual, expected, maxulp=4)
    else:
        np.testing.assert_array_equal(actual, expected)


def test_unrolled_threefry_matches_jax_for_64_bit_draws():
    with jax.enable_x64(True):
        key = jax.random.key(11)
        for draw in (
            lambda k: jax.random.bits(k, (7,), jnp.uint64),
            lambda k: jax.random.normal(k, (3, 2), jnp.float64),
            lambda k: jax.random.randint(k, (9,), 0, 2**40, dtype=jnp.int64),
        ):
            np.testing.assert_array_equal(draw(_unrolled(key)), draw(key))


def test_unrolled_threefry_follows_jax_in_its_other_counter_layout():
    # jax_threefry_partitionable=False lays counters out differently; THREEFRY_UNROLLED then
    # hands over to JAX's own implementation, so the numbers still agree
    with jax.threefry_partitionable(False):
        key = jax.random.key(5)
        for name in ("normal", "split", "bits, 8", "fold_in"):
            np.testing.assert_array_equal(DRAWS[name](_unrolled(key)), DRAWS[name](key))


def test_fast_key_converts_only_threefry_keys_on_the_cpu():
    key = jax.random.key(0)
    converted = fast_key(key)
    if jax.default_backend() == "cpu":
        assert jax.random.key_impl(converted) != jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(converted), jax.random.key_data(key))
    for other in (jax.random.key(0, impl="rbg"), jax.random.key(0, impl="unsafe_rbg")):
        assert fast_key(other) is other
    legacy = jax.random.PRNGKey(0)  # raw uint32 key data: left as it is
    assert fast_key(legacy) is legacy
    assert jax.random.key_impl(fast_key(converted)) == jax.random.key_impl(converted)


def test_runner_noise_is_jax_default_threefry_noise():
    # a kernel whose new state is its noise draw: run's trace is then exactly the numbers
    # jax.random.normal gives for the step keys fold_in(key, t) under JAX's default keys
    sampler = sj.samplers.Sampler(
        init=lambda x: x, step=lambda key, x: (jax.random.normal(key, x.shape), jnp.zeros(()))
    )
    key, num_steps = jax.random.key(4), 6
    trace = sj.run(key, sampler, jnp.zeros(3), num_steps, thin=1).trace
    expected = [jax.random.normal(jax.random.fold_in(key, t), (3,)) for t in range(num_steps)]
    np.testing.assert_array_equal(trace, np.stack(expected))
    # and through run_chains (per-chain keys) and fit's batch draws
    keys = jax.random.split(key, 2)
    chains = sj.run_chains(key, sampler, jnp.zeros((2, 3)), num_steps, thin=1).trace
    for c in range(2):
        expected = [jax.random.normal(jax.random.fold_in(keys[c], t), (3,)) for t in range(6)]
        np.testing.assert_array_equal(chains[c], np.stack(expected))


def test_fit_draws_jax_default_threefry_batches():
    loss = lambda params, key, batch: jnp.sum((params - batch) ** 2)
    batch_fn = partial(jax.random.normal, shape=(2,))
    step = sj.make_train_step(loss, optax.sgd(0.0))  # params never move: only the draws matter
    state = sj.init_train_state(jnp.zeros(2), optax.sgd(0.0))
    key = jax.random.key(9)
    _, history = sj.fit(step, state, key, batch_fn, num_steps=4, steps_per_call=4, progress=False)
    # fit's own key schedule, replayed with JAX's default keys
    _, call_key = jax.random.split(key)
    for t, step_key in enumerate(jax.random.split(call_key, 4)):
        batch = batch_fn(jax.random.split(step_key)[0])
        assert history["loss"][t] == pytest.approx(float(jnp.sum(batch**2)), rel=1e-6)


def test_scorejax_loops_hand_their_kernels_the_unrolled_key_on_the_cpu():
    # the speed-up is applied, not only harmless: record the key type a kernel and a loss see
    seen = []

    def step(key, x):
        seen.append(jax.random.key_impl(key))
        return x, jnp.zeros(())

    sampler = sj.samplers.Sampler(init=lambda x: x, step=step)
    sj.run_chains(jax.random.key(0), sampler, jnp.zeros((2, 1)), 3)

    def loss(params, key, batch):
        seen.append(jax.random.key_impl(key))
        return jnp.sum(params * batch)

    step_fn = sj.make_train_step(loss, optax.sgd(0.1))
    state = sj.init_train_state(jnp.zeros(1), optax.sgd(0.1))
    sj.fit(step_fn, state, jax.random.key(1), lambda k: jnp.ones(1), num_steps=2, progress=False)
    expected = jax.random.key_impl(fast_key(jax.random.key(0)))
    assert len(seen) >= 2 and all(impl == expected for impl in seen)
    if jax.default_backend() == "cpu":
        assert expected != jax.random.key_impl(jax.random.key(0))
