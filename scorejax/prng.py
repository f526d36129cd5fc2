"""An opt-in key implementation: JAX's default Threefry-2x32, its rounds written out.

JAX's default PRNG is Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw 2011,
"Parallel random numbers: as easy as 1, 2, 3", Section 3; the counter-based hash
``(k, c) -> (y1, y2)``). On the CPU, JAX lowers the hash as a rolled loop of five blocks of
four rounds, which XLA runs as separate passes over the arrays. ``THREEFRY_UNROLLED`` is the
same generator with the twenty rounds written out in one fused loop: for every key,
``split``, ``fold_in`` and ``bits`` return the same bits as under JAX's ``threefry2x32``, in
either counter layout, so ``normal``, ``uniform``, ``randint`` and the rest draw the same
numbers (``tests/test_prng.py``, with Random123's known-answer vectors for the hash).

scorejax never converts a key: choosing a generator is the user's choice, made where the
key is made, ``jax.random.key(seed, impl=scorejax.prng.THREEFRY_UNROLLED)`` (or JAX's own
``impl="rbg"`` / ``"unsafe_rbg"``). docs/performance.md measures them against each other.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import define_prng_impl, threefry_prng_impl

from scorejax.types import Array

# Threefry-2x32 rotation constants R_{d mod 8} (Salmon et al. 2011, Table 4) and the
# key-schedule parity constant C240 (Threefish, Ferguson et al. 2010; Random123's value)
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: Array, r: int) -> Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
    """Threefry-2x32-20 of the counter pair (x1, x2) under ``key`` (uint32 (2,)), unrolled.

    Twenty rounds ``x1 += x2; x2 = rotl(x2, R_d) ^ x1`` in five blocks of four, with the
    key injected before the first block and after each: ``x1 += k_{s mod 3}``,
    ``x2 += k_{(s+1) mod 3} + s`` for s = 1..5, where k_2 = k_0 ^ k_1 ^ 0x1BD11BDA
    (Salmon et al. 2011, Section 3.3). Elementwise over x1, x2 (any shape, uint32).
    """
    ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for s in range(1, 6):
        for r in _ROTATIONS[(s - 1) % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, r) ^ x1
        x1, x2 = x1 + ks[s % 3], x2 + ks[(s + 1) % 3] + np.uint32(s)
    return x1, x2


def _counters(shape) -> tuple[Array, Array]:
    """JAX's counters for an array of fewer than 2^32 elements: the high and low words of
    the row-major flat index (``jax._src.random.prng.iota_2x32_shape``), the high one 0."""
    size = math.prod(shape)
    return jnp.zeros(shape, jnp.uint32), jax.lax.iota(jnp.uint32, size).reshape(shape)


def _partitionable(shape) -> bool:
    # JAX's other counter layout (jax_threefry_partitionable=False) and arrays of 2^32 or
    # more elements are rare; they go to JAX's own implementation, so numbers stay equal
    return bool(jax.config.jax_threefry_partitionable) and math.prod(shape) < 2**32


def _split(key: Array, shape) -> Array:
    if not _partitionable(shape):
        return threefry_prng_impl.split(key, shape)
    y1, y2 = threefry2x32(key, *_counters(shape))
    return jnp.stack([y1, y2], axis=-1)


def _fold_in(key: Array, data: Array) -> Array:
    # JAX folds data in as the counter (0, data): its seed words of a uint32 scalar
    y1, y2 = threefry2x32(key, jnp.zeros(1, jnp.uint32), jnp.asarray(data, jnp.uint32)[None])
    return jnp.concatenate([y1, y2])


def _random_bits(key: Array, bit_width: int, shape) -> Array:
    if not _partitionable(shape):
        return threefry_prng_impl.random_bits(key, bit_width, shape)
    y1, y2 = threefry2x32(key, *_counters(shape))
    if bit_width == 64:
        return (y1.astype(jnp.uint64) << np.uint64(32)) | y2.astype(jnp.uint64)
    bits = y1 ^ y2
    return bits if bit_width == 32 else bits.astype(f"uint{bit_width}")


THREEFRY_UNROLLED = define_prng_impl(
    key_shape=(2,),
    seed=threefry_prng_impl.seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="threefry2x32_unrolled",
    tag="fru",
)
