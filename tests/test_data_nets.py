"""Data samplers and loaders; Flax modules through the one seam."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import data, nets

SAMPLERS = [
    data.sample_two_gaussians,
    data.sample_eight_gaussians,
    data.sample_grid25,
    data.sample_two_moons,
    data.sample_swiss_roll,
    data.sample_rings,
    data.sample_checkerboard,
    data.sample_unequal_mixture,
]


@pytest.mark.parametrize("sample", SAMPLERS, ids=[s.__name__ for s in SAMPLERS])
def test_toy_samplers_are_pure_and_finite(sample):
    a = sample(jax.random.key(0), 1000)
    b = jax.jit(sample, static_argnums=1)(jax.random.key(0), 1000)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert a.shape == (1000, 2) and np.all(np.isfinite(a))


def test_two_gaussians_moments():
    """The two-Gaussian data: means (+-2, 0), std 0.5 -> E x1^2 = 4.25, E x2^2 = 0.25 (5 SE)."""
    x = np.asarray(data.sample_two_gaussians(jax.random.key(1), 50_000), np.float64)
    sq = x**2
    se = sq.std(0) / np.sqrt(len(x))
    np.testing.assert_array_less(np.abs(sq.mean(0) - [4.25, 0.25]), 5 * se)


def test_checkerboard_lies_on_dark_squares():
    x = np.asarray(data.sample_checkerboard(jax.random.key(0), 5000))
    parity = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2
    assert np.all(parity == parity[0]) and np.all(np.abs(x) <= 2)


def test_image_loaders_read_packaged_data_with_a_fixed_split():
    digits = data.load_digits(test_fraction=0.2, seed=0)
    assert digits.train_images.shape[1:] == (8, 8)
    assert len(digits.train_images) + len(digits.test_images) == 1797
    assert float(digits.train_images.min()) >= 0 and float(digits.train_images.max()) <= 1
    again = data.load_digits(test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(digits.test_labels, again.test_labels)
    mnist = data.load_mnist_5k(test_fraction=0.1, seed=1)
    assert mnist.train_images.shape == (4500, 28, 28) and mnist.test_images.shape == (500, 28, 28)
    assert set(np.unique(mnist.train_labels)) == set(range(10))
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=1.5)


def test_modules_through_the_seam():
    x = jnp.array([0.3, -1.2])
    energy_model = nets.MLPEnergy((16, 16))
    params = energy_model.init(jax.random.key(0), x)
    energy_fn = nets.apply_fn(energy_model)
    assert energy_fn(params, x).shape == ()
    # the score of an energy net is minus its autodiff gradient, batched by vmap
    score = sj.score_from_energy(energy_fn)
    np.testing.assert_allclose(score(params, x), -jax.grad(energy_fn, 1)(params, x), rtol=1e-6)
    batch = jnp.stack([x, -x])
    np.testing.assert_allclose(
        jax.vmap(energy_fn, (None, 0))(params, batch)[0], energy_fn(params, x), rtol=1e-5
    )

    score_model = nets.MLPScore((16,))
    sparams = score_model.init(jax.random.key(1), x)
    assert nets.apply_fn(score_model)(sparams, x).shape == (2,)


def test_noise_conditional_output_scales_as_one_over_sigma():
    """NCSNv2's parameterisation s(x, sigma) = f([x, emb(sigma)]) / sigma, checked against
    the inner MLP applied by hand with the module's own parameters."""
    model = nets.NoiseConditionalMLP((16,), num_frequencies=2)
    x = jnp.array([0.5, 0.5])
    params = model.init(jax.random.key(0), x, jnp.ones(()))
    for sigma in (0.1, 1.0, 3.0):
        emb = nets.sigma_embedding(jnp.asarray(sigma), 2)
        inner = nets.MLP((16,), 2).apply(
            {"params": params["params"]["MLP_0"]}, jnp.concatenate([x, emb])
        )
        np.testing.assert_allclose(model.apply(params, x, sigma), inner / sigma, rtol=1e-5)
    # batched sigmas beside a batch of x
    xb = jnp.stack([x, x])
    out = model.apply(params, xb, jnp.array([0.1, 1.0]))
    np.testing.assert_allclose(out[1], model.apply(params, x, 1.0), rtol=1e-5)


def test_noise_conditional_mlp_rejects_a_non_flat_example():
    model = nets.NoiseConditionalMLP((8,))
    with pytest.raises(ValueError, match="flat example"):
        model.init(jax.random.key(0), jnp.zeros((8, 8)), jnp.ones(()))


def test_tile_images_handles_unit_and_centred_ranges_and_rgb():
    unit = jnp.linspace(0.0, 1.0, 2 * 3 * 3).reshape(2, 3, 3)
    tiled = sj.plot.tile_images(unit, num_columns=2)
    assert tiled.shape == (1 * 4 + 1, 2 * 4 + 1)
    np.testing.assert_allclose(tiled[1:4, 1:4], unit[0])
    # [-1, 1] data is mapped affinely onto [0, 1], not clipped at 0
    np.testing.assert_allclose(sj.plot.tile_images(2 * unit - 1, num_columns=2), tiled)
    rgb = jnp.stack([unit, 1 - unit, unit], axis=-1)
    tiled_rgb = sj.plot.tile_images(rgb, num_columns=2)
    assert tiled_rgb.shape == (5, 9, 3)
    np.testing.assert_allclose(tiled_rgb[1:4, 1:4, 1], 1 - unit[0])
    with pytest.raises(ValueError, match="images must have shape"):
        sj.plot.tile_images(jnp.zeros((2, 3, 3, 2)))
