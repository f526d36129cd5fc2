"""Metropolis–Hastings kernels: random-walk Metropolis, MALA and Hamiltonian Monte Carlo.

Every kernel follows the library's contract (``Sampler(init, step)``, see ``base.py``):
``energy_fn(x) -> ()`` for one example with parameters closed over, ``init(x) -> state``,
``step(key, state, step_size=step_size) -> (state, info)``. The per-step ``step_size``
override lets the warm-up (``adaptation.py``) and schedules (``schedules.py``) drive the
same kernel without rebuilding it.

Step-size convention (docs/design.md §6): the Langevin proposal of MALA is the library's ULA move
x + h s(x) + sqrt(2 h) z, and random-walk Metropolis uses the same noise, x + sqrt(2 h) z,
so one ``step_size`` h means one noise scale across ULA, RWM and MALA. For HMC, h is the
leapfrog step (Neal 2011, Eq. 5.18–5.20).

Every kernel caches the energy (and, for MALA and HMC, its gradient) of the current
position in its state, so a step costs one energy-and-gradient evaluation (L for HMC).
A proposal whose energy is NaN or Inf is rejected. ``num_nonfinite`` counts non-finite
entries of the position and energy *after* the accept/reject, so any value above zero
means the chain itself left the finite numbers; ``is_divergent`` flags a proposal that
blew up (docs/design.md §15). ``metropolis_accept`` is the one accept step of the library: the
tempering swaps and the Ising kernels use it too.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import (
    check_callable,
    check_energy_output,
    check_positive,
    check_positive_int,
    concrete,
)
from scorejax._compile import as_data, as_pytree, jit
from scorejax.samplers.base import Sampler, count_nonfinite
from scorejax.types import Array, BoundEnergyFn, Key

# An energy error above this marks an HMC transition divergent (Stan's threshold;
# Betancourt 2017, Section 6.2).
DIVERGENCE_THRESHOLD = 1000.0


class RWMState(NamedTuple):
    """One random-walk Metropolis chain: its position and the energy there."""

    x: Array
    energy: Array


class MALAState(NamedTuple):
    """One MALA chain: position, energy and score s(x) = -grad E(x) there."""

    x: Array
    energy: Array
    score: Array


class HMCState(NamedTuple):
    """One HMC chain: position, potential energy and its gradient there."""

    x: Array
    energy: Array
    energy_grad: Array


class MetropolisInfo(NamedTuple):
    """Per-step diagnostics of a Metropolis–Hastings kernel.

    acceptance_rate: min(1, MH ratio) of this step's proposal (0 for a non-finite proposal);
      its mean over a run is the expected acceptance rate, a lower-variance estimate than
      the mean of ``is_accepted``. For a kernel that proposes many moves at once (the Ising
      sweeps), the mean over its proposals.
    is_accepted: whether the proposal was taken (the accepted fraction for many).
    is_divergent: whether the proposal blew up: for MALA and HMC a non-finite energy or
      gradient (or an HMC energy error above ``DIVERGENCE_THRESHOLD``), for RWM a NaN
      energy (an infinite one is a hard wall, rejected as it should be).
    num_nonfinite: non-finite entries of the new position and energy.
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    num_nonfinite: Array


class HMCInfo(NamedTuple):
    """Per-step HMC diagnostics: as ``MetropolisInfo`` plus ``energy_error``.

    energy_error: H(x', p') - H(x, p) of the leapfrog trajectory (inf when non-finite);
      the acceptance probability is min(1, exp(-energy_error)), and its size at a given
      step is the integrator's O(step_size^2) error (Leimkuhler & Reich 2004, Ch. 4).
    """

    acceptance_rate: Array
    is_accepted: Array
    is_divergent: Array
    num_nonfinite: Array
    energy_error: Array


def metropolis_accept(key: Key, log_ratio: Array) -> tuple[Array, Array]:
    """Accept with probability min(1, exp(log_ratio)), elementwise; NaN (a diverged
    proposal) rejects.

    The Metropolis–Hastings rule (Metropolis et al. 1953; Hastings 1970): with u ~ U(0, 1),
    accept iff log u < log_ratio, where log_ratio = log p(x') q(x | x') - log p(x) q(x' | x).

    Args:
      key: PRNG key.
      log_ratio: log acceptance ratio, any shape (one decision per entry).

    Returns:
      (is_accepted, acceptance_rate): booleans and min(1, exp(log_ratio)), shaped like
      ``log_ratio``.
    """
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    u = jax.random.uniform(key, jnp.shape(log_ratio), dtype=acceptance_rate.dtype)
    return jnp.log(u) < log_ratio, acceptance_rate


def _select(is_accepted, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(is_accepted, a, b), new, old)


def _nonfinite(state) -> Array:
    return count_nonfinite(state.x) + count_nonfinite(state.energy)


def _check_energy_fn(energy_fn):
    """Check ``energy_fn`` and return it with its arrays as pytree leaves (data)."""
    check_callable("energy_fn", energy_fn, "energy_fn(x) -> scalar")
    return as_pytree(energy_fn)


def _step_size(default, override):
    return default if override is None else override


def rwm(energy_fn: BoundEnergyFn, step_size) -> Sampler:
    """Random-walk Metropolis (Metropolis et al. 1953).

    Propose x' = x + sqrt(2 h) z, z ~ N(0, I) (symmetric), and accept with probability
    min(1, exp(E(x) - E(x'))), which leaves p(x) ∝ exp(-E(x)) invariant (detailed balance).

    Args:
      energy_fn: E(x) -> () for one example, parameters closed over.
      step_size: h > 0; the proposal standard deviation is sqrt(2 h) (the library's
        Langevin noise, docs/design.md §6). ``step(key, state, step_size)`` accepts a
        per-step value.

    Returns:
      Sampler with state RWMState(x, energy) and info MetropolisInfo.
    """
    energy_fn = _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    return Sampler(Partial(_rwm_init, energy_fn), Partial(_rwm_step, energy_fn, as_data(step_size)))


def _rwm_init(energy_fn, x):
    check_energy_output("energy_fn", energy_fn, x)
    return RWMState(x, energy_fn(x))


def _rwm_step(energy_fn, default_step_size, key, state, step_size=None):
    step_size = _step_size(default_step_size, step_size)
    key_proposal, key_accept = jax.random.split(key)
    noise = jax.random.normal(key_proposal, state.x.shape, state.x.dtype)
    x_new = (state.x + jnp.sqrt(2.0 * step_size) * noise).astype(state.x.dtype)
    energy_new = energy_fn(x_new).astype(state.energy.dtype)
    is_accepted, acceptance_rate = metropolis_accept(key_accept, state.energy - energy_new)
    new_state = _select(is_accepted, RWMState(x_new, energy_new), state)
    info = MetropolisInfo(acceptance_rate, is_accepted, jnp.isnan(energy_new),
                          _nonfinite(new_state))  # fmt: skip
    return new_state, info


def _energy_and_score(energy_fn, x):
    energy, grad = jax.value_and_grad(energy_fn)(x)
    return energy, -grad


def _mala_log_proposal(x_to: Array, x_from: Array, score_from: Array, step_size) -> Array:
    """log q(x_to | x_from) up to a constant: q = N(x_from + h s(x_from), 2 h I)."""
    diff = x_to - x_from - step_size * score_from
    return -jnp.sum(diff**2) / (4.0 * step_size)


def mala(energy_fn: BoundEnergyFn, step_size) -> Sampler:
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996; Besag 1994).

    Propose the ULA move x' = x + h s(x) + sqrt(2 h) z with s = -grad E, so
    q(x' | x) = N(x'; x + h s(x), 2 h I), and accept with the Metropolis–Hastings ratio

        alpha = min(1, exp(E(x) - E(x')) q(x | x') / q(x' | x)),
        log q(x' | x) = -|x' - x - h s(x)|^2 / (4 h) + const,

    the exact correction for the asymmetric proposal (Roberts & Tweedie 1996, Eq. 2.3;
    their sigma^2 / 2 is our h). This removes ULA's O(h) bias; the optimal scaling is an
    acceptance rate of 0.574 (Roberts & Rosenthal 1998).

    Args:
      energy_fn: E(x) -> () for one example, parameters closed over.
      step_size: h > 0 (the ULA step, docs/design.md §6); ``step`` accepts a per-step override.

    Returns:
      Sampler with state MALAState(x, energy, score) and info MetropolisInfo.
    """
    energy_fn = _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    return Sampler(
        Partial(_mala_init, energy_fn), Partial(_mala_step, energy_fn, as_data(step_size))
    )


def _mala_init(energy_fn, x):
    check_energy_output("energy_fn", energy_fn, x)
    return MALAState(x, *_energy_and_score(energy_fn, x))


def _mala_step(energy_fn, default_step_size, key, state, step_size=None):
    step_size = _step_size(default_step_size, step_size)
    key_proposal, key_accept = jax.random.split(key)
    noise = jax.random.normal(key_proposal, state.x.shape, state.x.dtype)
    x_new = state.x + step_size * state.score + jnp.sqrt(2.0 * step_size) * noise
    x_new = x_new.astype(state.x.dtype)
    energy_new, score_new = _energy_and_score(energy_fn, x_new)
    log_ratio = (
        state.energy
        - energy_new
        + _mala_log_proposal(state.x, x_new, score_new, step_size)
        - _mala_log_proposal(x_new, state.x, state.score, step_size)
    )
    is_accepted, acceptance_rate = metropolis_accept(key_accept, log_ratio)
    new_state = _select(is_accepted, MALAState(x_new, energy_new, score_new), state)
    divergent = ~jnp.isfinite(energy_new) | ~jnp.all(jnp.isfinite(score_new))
    info = MetropolisInfo(acceptance_rate, is_accepted, divergent, _nonfinite(new_state))
    return new_state, info


# ----------------------------------------------------------------------------- HMC


def _check_inverse_mass(inverse_mass):
    """Check an inverse mass; return it as an array with, for a square matrix, its Cholesky
    factor (used when the matrix turns out to be dense, i.e. not shaped like x)."""
    if inverse_mass is None:
        return None, None
    if np.ndim(inverse_mass) > 2:
        raise ValueError(
            "inverse_mass must be None (identity), a scalar, a diagonal shaped like x or a "
            f"dense (D, D) matrix, got shape {np.shape(inverse_mass)}"
        )
    inverse_mass = jnp.asarray(inverse_mass)
    square = inverse_mass.ndim == 2 and inverse_mass.shape[0] == inverse_mass.shape[1]
    if not square:
        check_positive("inverse_mass", inverse_mass)
        return inverse_mass, None
    chol = jnp.linalg.cholesky(inverse_mass)
    values = concrete(inverse_mass)
    # all-positive entries may be a diagonal for a 2-D x; anything else must be a dense
    # symmetric positive-definite matrix
    if values is not None and not (np.all(np.isfinite(values)) and np.all(values > 0)):
        if not (np.allclose(values, values.T) and np.all(np.isfinite(np.asarray(chol)))):
            raise ValueError(
                "inverse_mass must be positive (a diagonal) or a symmetric positive-definite "
                "(D, D) matrix"
            )
    return inverse_mass, chol


def _check_mass_shape(inverse_mass, x) -> None:
    if inverse_mass is None or np.ndim(inverse_mass) == 0:
        return
    if np.shape(inverse_mass) == np.shape(x):
        return  # a diagonal
    size = int(np.prod(np.shape(x)))
    if np.shape(inverse_mass) != (size, size):
        raise ValueError(
            f"inverse_mass must be a scalar, a diagonal of x's shape {np.shape(x)} or a dense "
            f"({size}, {size}) matrix, got shape {np.shape(inverse_mass)}"
        )


def _apply_inverse_mass(inverse_mass, p: Array) -> Array:
    """M^{-1} p for an identity (None), scalar, diagonal (shaped like p) or dense mass."""
    if inverse_mass is None:
        return p
    if np.ndim(inverse_mass) == 0 or np.shape(inverse_mass) == p.shape:
        return inverse_mass * p
    return (inverse_mass @ p.reshape(-1)).reshape(p.shape)


def kinetic_energy(momentum: Array, inverse_mass=None) -> Array:
    """K(p) = 1/2 p^T M^{-1} p for an identity, scalar, diagonal or dense inverse mass."""
    return 0.5 * jnp.sum(momentum * _apply_inverse_mass(inverse_mass, momentum))


def _draw_momentum(key, x, inverse_mass, chol):
    """p ~ N(0, M): z, z / sqrt(m^-1) (diagonal), or L^-T z with L L^T = M^-1 (dense), whose
    covariance is (L L^T)^-1 = M."""
    z = jax.random.normal(key, x.shape, x.dtype)
    if inverse_mass is None:
        return z
    if chol is None:
        return (z / jnp.sqrt(inverse_mass)).astype(x.dtype)
    p = jax.scipy.linalg.solve_triangular(chol.T, z.reshape(-1), lower=False)
    return p.reshape(x.shape).astype(x.dtype)


def _leapfrog(energy_fn, x, momentum, energy_grad, step_size, num_steps, inverse_mass):
    """Leapfrog from a cached gradient; returns (x, momentum, energy, energy_grad) at the end."""
    value_and_grad = jax.value_and_grad(energy_fn)

    def body(_, carry):
        x, momentum, _, energy_grad = carry
        momentum = momentum - 0.5 * step_size * energy_grad
        x = (x + step_size * _apply_inverse_mass(inverse_mass, momentum)).astype(x.dtype)
        energy, energy_grad = value_and_grad(x)
        momentum = momentum - 0.5 * step_size * energy_grad
        return x, momentum.astype(x.dtype), energy, energy_grad

    energy0 = jnp.zeros((), jax.eval_shape(energy_fn, x).dtype)
    return jax.lax.fori_loop(0, num_steps, body, (x, momentum, energy0, energy_grad))


def leapfrog(
    energy_fn: BoundEnergyFn,
    x: Array,
    momentum: Array,
    step_size,
    num_steps: int,
    inverse_mass=None,
) -> tuple[Array, Array]:
    """Integrate Hamilton's equations for H(x, p) = E(x) + 1/2 p^T M^{-1} p by leapfrog.

    Each of ``num_steps`` steps is (Neal 2011, Eq. 5.18–5.20)

        p <- p - h/2 grad E(x);   x <- x + h M^{-1} p;   p <- p - h/2 grad E(x).

    The map is symplectic and time-reversible (negate p, integrate, negate p returns the
    start), and its energy error over a fixed time is O(h^2).

    Args:
      energy_fn: potential E(x) -> () for one example.
      x: initial position; momentum: initial momentum, shaped like x.
      step_size: h > 0.
      num_steps: number of leapfrog steps (an integer >= 1).
      inverse_mass: None (M = I), a scalar, a diagonal M^{-1} shaped like x, or a dense
        (D, D) M^{-1} with D = x.size.

    Returns:
      (x, momentum) after ``num_steps`` steps.
    """
    energy_fn = _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    num_steps = check_positive_int("num_steps", num_steps)
    inverse_mass, _ = _check_inverse_mass(inverse_mass)
    x, momentum = jnp.asarray(x), jnp.asarray(momentum)
    if x.shape != momentum.shape:
        raise ValueError(f"momentum must have the shape of x {x.shape}, got {momentum.shape}")
    _check_mass_shape(inverse_mass, x)
    return _leapfrog_from_start(energy_fn, x, momentum, as_data(step_size), num_steps,
                                inverse_mass)  # fmt: skip


@jit
def _leapfrog_from_start(energy_fn, x, momentum, step_size, num_steps, inverse_mass):
    energy_grad = jax.grad(energy_fn)(x)
    x, momentum, _, _ = _leapfrog(
        energy_fn, x, momentum, energy_grad, step_size, num_steps, inverse_mass
    )
    return x, momentum


def hmc(energy_fn: BoundEnergyFn, step_size, num_leapfrog_steps: int, inverse_mass=None) -> Sampler:
    """Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011, Section 5.3.2).

    Draw p ~ N(0, M), run ``num_leapfrog_steps`` leapfrog steps of size h on
    H(x, p) = E(x) + 1/2 p^T M^{-1} p, and accept (x', p') with probability
    min(1, exp(-(H(x', p') - H(x, p)))) (Neal 2011, Eq. 5.23); momentum is then discarded.

    Args:
      energy_fn: E(x) -> () for one example, parameters closed over.
      step_size: leapfrog step h > 0; ``step(key, state, step_size)`` accepts an override.
      num_leapfrog_steps: L >= 1 leapfrog steps per proposal (an integer).
      inverse_mass: None (identity mass), a positive scalar, a positive diagonal M^{-1}
        shaped like x (precondition with the target's variances), or a dense symmetric
        positive-definite (D, D) M^{-1} with D = x.size (precondition with the target's
        covariance, for correlated targets; Neal 2011, Section 5.4.1).

    Returns:
      Sampler with state HMCState(x, energy, energy_grad) and info HMCInfo (with the
      energy error). The optimal acceptance rate is 0.651 (Beskos et al. 2013).
    """
    energy_fn = _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    num_leapfrog_steps = check_positive_int("num_leapfrog_steps", num_leapfrog_steps)
    inverse_mass, chol = _check_inverse_mass(inverse_mass)
    init = Partial(_hmc_init, energy_fn, inverse_mass)
    step = Partial(_hmc_step, energy_fn, num_leapfrog_steps, inverse_mass, chol,
                   as_data(step_size))  # fmt: skip
    return Sampler(init, step)


def _hmc_init(energy_fn, inverse_mass, x):
    check_energy_output("energy_fn", energy_fn, x)
    _check_mass_shape(inverse_mass, x)
    return HMCState(x, *jax.value_and_grad(energy_fn)(x))


def _hmc_step(energy_fn, num_leapfrog_steps, inverse_mass, chol, default_step_size, key, state,
              step_size=None):  # fmt: skip
    step_size = _step_size(default_step_size, step_size)
    key_momentum, key_accept = jax.random.split(key)
    momentum = _draw_momentum(key_momentum, state.x, inverse_mass, chol)
    x_new, momentum_new, energy_new, grad_new = _leapfrog(
        energy_fn, state.x, momentum, state.energy_grad, step_size, num_leapfrog_steps,
        inverse_mass,
    )  # fmt: skip
    energy_error = (
        energy_new
        + kinetic_energy(momentum_new, inverse_mass)
        - state.energy
        - kinetic_energy(momentum, inverse_mass)
    )
    divergent = ~jnp.isfinite(energy_error) | (energy_error > DIVERGENCE_THRESHOLD)
    energy_error = jnp.where(jnp.isnan(energy_error), jnp.inf, energy_error)
    is_accepted, acceptance_rate = metropolis_accept(key_accept, -energy_error)
    new_state = _select(is_accepted, HMCState(x_new, energy_new, grad_new), state)
    info = HMCInfo(acceptance_rate, is_accepted, divergent, _nonfinite(new_state), energy_error)
    return new_state, info
