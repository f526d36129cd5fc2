"""Quadrature log Z against closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj


def test_gaussian_1d_and_2d():
    g1 = sj.Gaussian(jnp.array([0.3]), jnp.array([[0.49]]))
    np.testing.assert_allclose(
        sj.log_partition_quadrature(g1.energy, [-6.0], [6.0], 2001), g1.log_partition(), atol=1e-4
    )
    g2 = sj.Gaussian(jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.6], [0.6, 2.0]]))
    np.testing.assert_allclose(
        sj.log_partition_quadrature(g2.energy, [-10.0, -10.0], [10.0, 10.0], 1001),
        g2.log_partition(),
        atol=1e-4,
    )


def test_scaled_mixture_energy():
    """E = -log p + c has log Z = -c exactly."""
    mixture = sj.data.eight_gaussians()
    log_z = sj.log_partition_quadrature(lambda x: mixture.energy(x) + 3.0, [-4, -4], [4, 4], 1201)
    np.testing.assert_allclose(log_z, -3.0, atol=1e-4)


def test_large_energies_do_not_underflow():
    g = sj.Gaussian(jnp.zeros(1), jnp.eye(1))
    log_z = sj.log_partition_quadrature(lambda x: g.energy(x) + 500.0, [-8.0], [8.0], 1001)
    np.testing.assert_allclose(log_z, g.log_partition() - 500.0, atol=1e-4)


@pytest.mark.parametrize(
    "lower, upper, match",
    [([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], "length 1 or 2"), ([1.0], [0.0], "upper must exceed")],
)
def test_bad_boxes_raise(lower, upper, match):
    with pytest.raises(ValueError, match=match):
        sj.log_partition_quadrature(lambda x: jnp.sum(x**2), lower, upper)
