"""scorejax.prng: Threefry-2x32 against Random123's known answers, and the opt-in unrolled
generator against JAX's own threefry2x32, bit for bit, for every way scorejax draws random
numbers; scorejax's loops hand kernels and losses the user's own key type."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax.prng import THREEFRY_UNROLLED, threefry2x32

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


def test_fit_draws_step_t_from_fold_in_of_the_global_step():
    loss = lambda params, key, batch: jnp.sum((params - batch) ** 2)
    batch_fn = partial(jax.random.normal, shape=(2,))
    step = sj.make_train_step(loss, optax.sgd(0.0))  # params never move: only the draws matter
    state = sj.init_train_state(jnp.zeros(2), optax.sgd(0.0))
    key = jax.random.key(9)
    _, history = sj.fit(step, state, key, batch_fn, num_steps=4, steps_per_call=3, progress=False)
    for t in range(4):
        batch = batch_fn(jax.random.split(jax.random.fold_in(key, t))[0])
        assert history["loss"][t] == pytest.approx(float(jnp.sum(batch**2)), rel=1e-6)


KEY_IMPLS = [None, "rbg", "unsafe_rbg", THREEFRY_UNROLLED]


@pytest.mark.parametrize("impl", KEY_IMPLS, ids=["threefry", "rbg", "unsafe_rbg", "unrolled"])
def test_kernels_and_losses_receive_the_users_key_implementation(impl):
    make_key = lambda seed: (
        jax.random.key(seed) if impl is None else jax.random.key(seed, impl=impl)
    )
    expected = jax.random.key_impl(make_key(0))
    seen = []

    def step(key, x):
        seen.append(jax.random.key_impl(key))
        return x, jnp.zeros(())

    sampler = sj.samplers.Sampler(init=lambda x: x, step=step)
    sj.run_chains(make_key(0), sampler, jnp.zeros((2, 1)), 3)
    sj.run(make_key(0), sampler, jnp.zeros(1), 3, progress=True, steps_per_call=1)

    def loss(params, key, batch):
        seen.append(jax.random.key_impl(key))
        return jnp.sum(params * batch)

    step_fn = sj.make_train_step(loss, optax.sgd(0.1))
    state = sj.init_train_state(jnp.zeros(1), optax.sgd(0.1))
    sj.fit(step_fn, state, make_key(1), lambda k: jnp.ones(1), num_steps=2, progress=False)
    assert len(seen) >= 3 and all(seen_impl == expected for seen_impl in seen)


def test_a_kernel_that_combines_its_step_key_with_a_key_it_closed_over_runs():
    """A valid kernel under a plain lax.scan (it selects between its step key and a key of
    its own) must run unchanged inside scorejax's runner: keys are never converted."""
    own_key = jax.random.key(42)

    def step(key, x):
        chosen = jax.lax.select(x[0] > 0, key, own_key)
        return x + jax.random.normal(chosen, x.shape), jnp.zeros(())

    sampler = sj.samplers.Sampler(init=lambda x: x, step=step)
    key = jax.random.key(0)
    out = sj.run(key, sampler, jnp.zeros(2), 5).state
    x = jnp.zeros(2)
    for t in range(5):  # the same kernel by hand: the runner's keys are fold_in(key, t)
        x, _ = step(jax.random.fold_in(key, t), x)
    np.testing.assert_allclose(out, x, rtol=1e-6)
