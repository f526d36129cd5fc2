"""Scores by autodiff.

The score of p(x) = exp(-E(x)) / Z is grad_x log p(x) = -grad_x E(x): the partition
function, constant in x, drops out (Hyvärinen 2005, Section 2).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from scorejax._checks import check_positive_int
from scorejax.types import EnergyFn, ScoreFn


def score_from_energy(energy_fn: EnergyFn) -> ScoreFn:
    """Turn ``energy_fn(params, x, *args) -> ()`` into ``score_fn(params, x, *args) = -grad_x E``.

    One line of autodiff (docs/design.md §2), so learned and analytic energies share it:
    ``score_from_energy(GaussianMixture.energy)(mixture, x)`` equals ``mixture.score(x)``.
    Extra positional arguments (a noise level ``sigma``) pass through undifferentiated.
    """
    grad_energy = jax.grad(energy_fn, argnums=1)

    def score_fn(params, x, *args):
        return -grad_energy(params, x, *args)

    return score_fn


# --- Jacobian trace (divergence) of a score field: exact and Hutchinson -------------------


def _check_probe(probe) -> None:
    if not callable(probe):
        raise ValueError(
            "probe must be a sampler probe(key, shape, dtype) with E[v v^T] = I, such as "
            f"jax.random.normal or jax.random.rademacher; got {probe!r}"
        )


def _basis(x):
    """The D = x.size standard basis vectors, each shaped like ``x``: (D, *x.shape)."""
    return jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape))


def divergence(score_fn: ScoreFn) -> Callable:
    """Exact divergence (Jacobian trace) of a vector field by forward-mode autodiff.

    div s(x) = tr(grad_x s(x)) = sum_i e_i^T J_s(x) e_i,

    one Jacobian-vector product per basis vector e_i (``jax.jvp`` vmapped over the D basis
    vectors; the primal s(x) is shared, so the cost is that of D forward passes of tangents,
    the price of exact score matching, Hyvärinen 2005, Eq. 4). For an energy model,
    ``divergence(score_from_energy(energy_fn))`` is -tr(Hessian E), forward-over-reverse.

    Args:
      score_fn: ``score_fn(params, x, *args) -> like x`` for one example.

    Returns:
      ``div_fn(params, x, *args) -> ()``.
    """

    def div_fn(params, x, *args):
        return _value_and_divergence(score_fn, params, x, args)[1]

    return div_fn


def _value_and_divergence(score_fn, params, x, args):
    """(s(x), tr J_s(x)) with s(x) computed once and one jvp per basis vector."""
    f = lambda y: score_fn(params, y, *args)
    basis = _basis(x)
    s, jacobian_columns = jax.vmap(lambda e: jax.jvp(f, (x,), (e,)), out_axes=(None, 0))(basis)
    # row i is J e_i (shaped like x); its i-th entry is J_ii
    return s, jnp.trace(jacobian_columns.reshape(x.size, x.size))


def hessian_trace(energy_fn: EnergyFn) -> Callable:
    """Exact Laplacian tr(grad_x^2 E(x)) of an energy, forward-over-reverse.

    tr H_E(x) = sum_i e_i^T grad_x (grad_x E(x) . e_i): one jvp of ``jax.grad`` per basis
    vector. With s = -grad_x E, div s = -tr H_E, the Jacobian trace in the score matching
    objective of an energy model (Hyvärinen 2005, Eq. 4 with psi = -grad E).

    Args:
      energy_fn: ``energy_fn(params, x, *args) -> ()`` for one example.

    Returns:
      ``trace_fn(params, x, *args) -> ()``.
    """
    return divergence(jax.grad(energy_fn, argnums=1))


def hutchinson_divergence(
    score_fn: ScoreFn, *, num_probes: int = 1, probe: Callable = jax.random.normal
) -> Callable:
    """Hutchinson's unbiased estimate of the divergence (Hutchinson 1990).

    tr J ~ 1/M sum_m v_m^T J v_m,  v_m iid with E[v v^T] = I,

    each term one Jacobian-vector product (``jax.jvp``), so the cost does not grow with D.
    Gaussian probes give variance 2 ||J_sym||_F^2 / M, Rademacher probes the smaller
    2 (||J_sym||_F^2 - sum_i J_ii^2) / M (exact for a diagonal Jacobian).

    Args:
      score_fn: ``score_fn(params, x, *args) -> like x`` for one example.
      num_probes: M >= 1 probes per call.
      probe: ``probe(key, shape, dtype)`` drawing one probe: ``jax.random.normal`` (Gaussian)
        or ``jax.random.rademacher`` (uniform signs).

    Returns:
      ``div_fn(params, key, x, *args) -> ()``, unbiased for ``divergence(score_fn)``.
    """
    check_positive_int("num_probes", num_probes)
    _check_probe(probe)

    def div_fn(params, key, x, *args):
        f = lambda y: score_fn(params, y, *args)
        v = probe(key, (num_probes, *x.shape), x.dtype)
        jv = jax.vmap(lambda u: jax.jvp(f, (x,), (u,))[1])(v)
        return jnp.mean(jnp.sum((v * jv).reshape(num_probes, -1), axis=-1))

    return div_fn
