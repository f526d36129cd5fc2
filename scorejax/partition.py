"""Partition functions: exact log Z over a finite set of states, and by quadrature on a grid
(1-D and 2-D). The RBM's exact and AIS estimates live beside the RBM (``scorejax.rbm``).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from scorejax._checks import check_integer, check_positive
from scorejax.types import Array, BoundEnergyFn


def log_partition_finite(energies: Array, temperature: float = 1.0) -> Array:
    """log Z = log sum_i exp(-E_i / T) over a finite set of states, computed stably."""
    check_positive("temperature", temperature)
    return logsumexp(-jnp.asarray(energies) / temperature)


def _trapezoid_log_weights(lo, hi, num_points: int) -> Array:
    # the spacing from the endpoints: grid[1] - grid[0] loses digits in float32
    dx = (hi - lo) / (num_points - 1)
    return jnp.log(jnp.full(num_points, dx).at[0].mul(0.5).at[-1].mul(0.5))


def log_partition_quadrature(
    energy_fn: BoundEnergyFn,
    lower: Sequence[float],
    upper: Sequence[float],
    num_points: int = 1001,
) -> Array:
    """log Z = log integral exp(-E(x)) dx over a box, by the trapezoid rule on a grid.

    For smooth energies that grow fast enough that exp(-E) is negligible at the box's edge,
    the trapezoid rule converges faster than any power of the spacing (the error is that
    of the Euler–Maclaurin tail), so ~1000 points per axis give float32 accuracy.
    Sums are taken in log space (logsumexp), so large energies do not underflow.

    Args:
      energy_fn: E(x) for one point x of shape (d,), d = 1 or 2 (parameters closed over).
      lower, upper: the box, length d each.
      num_points: grid points per axis (at least 2: the trapezoid rule needs an interval).

    Returns:
      log Z (scalar).
    """
    num_points = check_integer("num_points", num_points, 2)
    lower, upper = (
        jnp.atleast_1d(jnp.asarray(lower, jnp.result_type(float))),
        jnp.atleast_1d(jnp.asarray(upper, jnp.result_type(float))),
    )
    dim = lower.shape[0]
    if dim not in (1, 2) or upper.shape != lower.shape:
        raise ValueError(
            f"lower and upper must both have length 1 or 2, got {lower.shape} and {upper.shape}"
        )
    if not bool(jnp.all(upper > lower)):
        raise ValueError(f"upper must exceed lower on every axis, got {lower} and {upper}")
    axes = [jnp.linspace(lower[i], upper[i], num_points) for i in range(dim)]
    log_w = [_trapezoid_log_weights(lower[i], upper[i], num_points) for i in range(dim)]
    if dim == 1:
        neg_e = -jax.vmap(energy_fn)(axes[0][:, None])
        return logsumexp(neg_e + log_w[0])

    # 2-D: one row of the grid at a time keeps memory at O(num_points)
    def row(x0):
        pts = jnp.stack([jnp.full_like(axes[1], x0), axes[1]], axis=1)
        return logsumexp(-jax.vmap(energy_fn)(pts) + log_w[1])

    return logsumexp(jax.lax.map(row, axes[0]) + log_w[0])
