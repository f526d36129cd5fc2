"""Metropolis–Hastings kernels: random-walk Metropolis, MALA and Hamiltonian Monte Carlo.

Every kernel follows the library's contract (``Sampler(init, step)``, see ``base.py``):
``energy_fn(x) -> ()`` for one example with parameters closed over, ``init(x) -> state``,
``step(key, state, step_size=step_size) -> (state, info)``. The per-step ``step_size``
override lets the warm-up (``adaptation.py``) and schedules (``schedules.py``) drive the
same kernel without rebuilding it.

Step-size convention (DESIGN §6): the Langevin proposal of MALA is the library's ULA move
x + h s(x) + sqrt(2 h) z, and random-walk Metropolis uses the same noise, x + sqrt(2 h) z,
so one ``step_size`` h means one noise scale across ULA, RWM and MALA. For HMC, h is the
leapfrog step (Neal 2011, Eq. 5.18–5.20).

Every kernel caches the energy (and, for MALA and HMC, its gradient) of the current
position in its state, so a step costs one energy-and-gradient evaluation (L for HMC).
A proposal whose energy is NaN or Inf is rejected; ``num_nonfinite`` counts non-finite
entries of the position and energy *after* the accept/reject, so any value above zero
means the chain itself left the finite numbers (DESIGN §15).
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_positive, check_positive_int
from scorejax.samplers.base import Sampler, count_nonfinite
from scorejax.types import Array, EnergyFn, Key


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
      the mean of ``is_accepted``.
    is_accepted: whether the proposal was taken.
    num_nonfinite: non-finite entries of the new position and energy.
    """

    acceptance_rate: Array
    is_accepted: Array
    num_nonfinite: Array


class HMCInfo(NamedTuple):
    """Per-step HMC diagnostics: as ``MetropolisInfo`` plus ``energy_error``.

    energy_error: H(x', p') - H(x, p) of the leapfrog trajectory (inf when non-finite);
      the acceptance probability is min(1, exp(-energy_error)), and its size at a given
      step is the integrator's O(step_size^2) error (Leimkuhler & Reich 2004, Ch. 4).
    """

    acceptance_rate: Array
    is_accepted: Array
    num_nonfinite: Array
    energy_error: Array


def _check_energy_fn(energy_fn) -> None:
    if not callable(energy_fn):
        raise ValueError(f"energy_fn must be callable as energy_fn(x) -> (), got {energy_fn!r}")


def _metropolis_accept(key: Key, log_ratio: Array):
    """Accept with probability min(1, exp(log_ratio)); NaN (a diverged proposal) rejects."""
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    acceptance_rate = jnp.exp(jnp.minimum(log_ratio, 0.0))
    log_u = jnp.log(jax.random.uniform(key, dtype=acceptance_rate.dtype))
    return log_u < log_ratio, acceptance_rate


def _select(is_accepted, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(is_accepted, a, b), new, old)


def _nonfinite(state) -> Array:
    return count_nonfinite(state.x) + count_nonfinite(state.energy)


def rwm(energy_fn: EnergyFn, step_size) -> Sampler:
    """Random-walk Metropolis (Metropolis et al. 1953).

    Propose x' = x + sqrt(2 h) z, z ~ N(0, I) (symmetric), and accept with probability
    min(1, exp(E(x) - E(x'))), which leaves p(x) ∝ exp(-E(x)) invariant (detailed balance).

    Args:
      energy_fn: E(x) -> () for one example, parameters closed over.
      step_size: h > 0; the proposal standard deviation is sqrt(2 h) (the library's
        Langevin noise, DESIGN §6). ``step(key, state, step_size)`` accepts a per-step value.

    Returns:
      Sampler with state RWMState(x, energy) and info MetropolisInfo.
    """
    _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)

    def init(x):
        x = jnp.asarray(x)
        return RWMState(x, energy_fn(x))

    def step(key, state, step_size=step_size):
        key_proposal, key_accept = jax.random.split(key)
        noise = jax.random.normal(key_proposal, state.x.shape, state.x.dtype)
        x_new = state.x + jnp.sqrt(2.0 * step_size) * noise
        energy_new = energy_fn(x_new)
        is_accepted, acceptance_rate = _metropolis_accept(key_accept, state.energy - energy_new)
        new_state = _select(is_accepted, RWMState(x_new, energy_new), state)
        return new_state, MetropolisInfo(acceptance_rate, is_accepted, _nonfinite(new_state))

    return Sampler(init, step)


def _energy_and_score(energy_fn):
    value_and_grad = jax.value_and_grad(energy_fn)

    def fn(x):
        energy, grad = value_and_grad(x)
        return energy, -grad

    return fn


def _mala_log_proposal(x_to: Array, x_from: Array, score_from: Array, step_size) -> Array:
    """log q(x_to | x_from) up to a constant: q = N(x_from + h s(x_from), 2 h I)."""
    diff = x_to - x_from - step_size * score_from
    return -jnp.sum(diff**2) / (4.0 * step_size)


def mala(energy_fn: EnergyFn, step_size) -> Sampler:
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
      step_size: h > 0 (the ULA step, DESIGN §6); ``step`` accepts a per-step override.

    Returns:
      Sampler with state MALAState(x, energy, score) and info MetropolisInfo.
    """
    _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    energy_and_score = _energy_and_score(energy_fn)

    def init(x):
        x = jnp.asarray(x)
        return MALAState(x, *energy_and_score(x))

    def step(key, state, step_size=step_size):
        key_proposal, key_accept = jax.random.split(key)
        noise = jax.random.normal(key_proposal, state.x.shape, state.x.dtype)
        x_new = state.x + step_size * state.score + jnp.sqrt(2.0 * step_size) * noise
        energy_new, score_new = energy_and_score(x_new)
        log_ratio = (
            state.energy
            - energy_new
            + _mala_log_proposal(state.x, x_new, score_new, step_size)
            - _mala_log_proposal(x_new, state.x, state.score, step_size)
        )
        is_accepted, acceptance_rate = _metropolis_accept(key_accept, log_ratio)
        new_state = _select(is_accepted, MALAState(x_new, energy_new, score_new), state)
        return new_state, MetropolisInfo(acceptance_rate, is_accepted, _nonfinite(new_state))

    return Sampler(init, step)


def _check_inverse_mass(inverse_mass) -> None:
    if inverse_mass is None:
        return
    check_positive("inverse_mass", inverse_mass)
    if np.ndim(inverse_mass) > 1:
        raise ValueError(
            "inverse_mass must be None (identity), a scalar or a diagonal shaped like x, "
            f"got shape {np.shape(inverse_mass)}"
        )


def _leapfrog(value_and_grad, x, momentum, energy_grad, step_size, num_steps, inverse_mass):
    """Leapfrog from a cached gradient; returns (x, momentum, energy, energy_grad) at the end."""
    inverse_mass = 1.0 if inverse_mass is None else inverse_mass

    def body(_, carry):
        x, momentum, _, energy_grad = carry
        momentum = momentum - 0.5 * step_size * energy_grad
        x = x + step_size * inverse_mass * momentum
        energy, energy_grad = value_and_grad(x)
        momentum = momentum - 0.5 * step_size * energy_grad
        return x, momentum, energy, energy_grad

    energy0 = jnp.zeros((), x.dtype)
    return jax.lax.fori_loop(0, num_steps, body, (x, momentum, energy0, energy_grad))


def leapfrog(
    energy_fn: EnergyFn, x: Array, momentum: Array, step_size, num_steps: int, inverse_mass=None
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
      num_steps: number of leapfrog steps (a Python int >= 1).
      inverse_mass: None (M = I), a scalar or a diagonal M^{-1} shaped like x.

    Returns:
      (x, momentum) after ``num_steps`` steps.
    """
    _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    check_positive_int("num_steps", num_steps)
    _check_inverse_mass(inverse_mass)
    x, momentum = jnp.asarray(x), jnp.asarray(momentum)
    if x.shape != momentum.shape:
        raise ValueError(f"momentum must have the shape of x {x.shape}, got {momentum.shape}")
    inverse_mass = None if inverse_mass is None else jnp.asarray(inverse_mass)
    return _leapfrog_from_start(energy_fn, x, momentum, step_size, num_steps, inverse_mass)


@partial(jax.jit, static_argnames=("energy_fn", "num_steps"))
def _leapfrog_from_start(energy_fn, x, momentum, step_size, num_steps, inverse_mass):
    value_and_grad = jax.value_and_grad(energy_fn)
    _, energy_grad = value_and_grad(x)
    x, momentum, _, _ = _leapfrog(
        value_and_grad, x, momentum, energy_grad, step_size, num_steps, inverse_mass
    )
    return x, momentum


def kinetic_energy(momentum: Array, inverse_mass=None) -> Array:
    """K(p) = 1/2 p^T M^{-1} p for an identity or diagonal mass."""
    inverse_mass = 1.0 if inverse_mass is None else inverse_mass
    return 0.5 * jnp.sum(inverse_mass * momentum**2)


def hmc(energy_fn: EnergyFn, step_size, num_leapfrog_steps: int, inverse_mass=None) -> Sampler:
    """Hamiltonian Monte Carlo (Duane et al. 1987; Neal 2011, Section 5.3.2).

    Draw p ~ N(0, M), run ``num_leapfrog_steps`` leapfrog steps of size h on
    H(x, p) = E(x) + 1/2 p^T M^{-1} p, and accept (x', p') with probability
    min(1, exp(-(H(x', p') - H(x, p)))) (Neal 2011, Eq. 5.23); momentum is then discarded.

    Args:
      energy_fn: E(x) -> () for one example, parameters closed over.
      step_size: leapfrog step h > 0; ``step(key, state, step_size)`` accepts an override.
      num_leapfrog_steps: L >= 1 leapfrog steps per proposal (Python int).
      inverse_mass: None (identity mass), a positive scalar, or a positive diagonal M^{-1}
        shaped like x (precondition with the target's variances).

    Returns:
      Sampler with state HMCState(x, energy, energy_grad) and info HMCInfo (with the
      energy error). The optimal acceptance rate is 0.651 (Beskos et al. 2013).
    """
    _check_energy_fn(energy_fn)
    check_positive("step_size", step_size)
    check_positive_int("num_leapfrog_steps", num_leapfrog_steps)
    _check_inverse_mass(inverse_mass)
    value_and_grad = jax.value_and_grad(energy_fn)
    inv_mass = None if inverse_mass is None else jnp.asarray(inverse_mass)

    def init(x):
        x = jnp.asarray(x)
        return HMCState(x, *value_and_grad(x))

    def step(key, state, step_size=step_size):
        key_momentum, key_accept = jax.random.split(key)
        z = jax.random.normal(key_momentum, state.x.shape, state.x.dtype)
        momentum = z if inv_mass is None else z / jnp.sqrt(inv_mass)
        x_new, momentum_new, energy_new, grad_new = _leapfrog(
            value_and_grad, state.x, momentum, state.energy_grad, step_size,
            num_leapfrog_steps, inv_mass,
        )  # fmt: skip
        energy_error = (
            energy_new
            + kinetic_energy(momentum_new, inv_mass)
            - state.energy
            - kinetic_energy(momentum, inv_mass)
        )
        energy_error = jnp.where(jnp.isnan(energy_error), jnp.inf, energy_error)
        is_accepted, acceptance_rate = _metropolis_accept(key_accept, -energy_error)
        new_state = _select(is_accepted, HMCState(x_new, energy_new, grad_new), state)
        info = HMCInfo(acceptance_rate, is_accepted, _nonfinite(new_state), energy_error)
        return new_state, info

    return Sampler(init, step)
