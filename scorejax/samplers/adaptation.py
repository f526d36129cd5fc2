"""Step-size warm-up toward a target acceptance rate by dual averaging.

Nesterov's (2009) dual averaging as adapted by Hoffman & Gelman (2014, Section 3.2.1,
Eq. 6 and Algorithm 5): after warm-up step t with acceptance probability alpha_t,

    H_t      = (1 - 1/(t + t0)) H_{t-1} + (delta - alpha_t) / (t + t0),
    log h_t  = mu - sqrt(t) / gamma * H_t,
    log h̄_t  = t^(-kappa) log h_t + (1 - t^(-kappa)) log h̄_{t-1},

with mu = log(10 h_0), gamma = 0.05, t0 = 10, kappa = 0.75 (their defaults). The chain runs
with h_t during warm-up and the averaged h̄ is kept for sampling. Targets: 0.574 for MALA
(Roberts & Rosenthal 1998), 0.651 for HMC (Beskos et al. 2013).

The kernels' ``step(key, state, step_size)`` override makes this work for any kernel of
``mcmc.py`` without rebuilding it; the warm-up is one ``lax.scan``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_positive, check_positive_int, check_real_float
from scorejax._compile import as_data, jit
from scorejax.samplers.base import Sampler, check_sampler, strong_array
from scorejax.types import Array, Key

MALA_TARGET_ACCEPTANCE = 0.574  # Roberts & Rosenthal 1998
HMC_TARGET_ACCEPTANCE = 0.651  # Beskos, Pillai, Roberts, Sanz-Serna & Stuart 2013


class DualAveragingState(NamedTuple):
    """Dual averaging iterate: log h_t, the averaged log h̄_t, the statistic H_t, the
    step count t, and mu = log(10 h_0)."""

    log_step_size: Array
    log_step_size_avg: Array
    error_avg: Array
    step: Array
    mu: Array


class AdaptationResult(NamedTuple):
    """What ``adapt_step_size`` returns.

    state: the kernel state at the end of warm-up (start sampling from it).
    step_size: the averaged step size h̄ to sample with.
    acceptance_rate: (num_steps,) acceptance probability at each warm-up step (averaged
      over chains for ``adapt_step_size_chains``).
    step_sizes: (num_steps,) the step size used at each warm-up step.
    """

    state: Any
    step_size: Array
    acceptance_rate: Array
    step_sizes: Array


def dual_averaging_init(initial_step_size) -> DualAveragingState:
    """Start dual averaging at h_0 (Hoffman & Gelman 2014, Algorithm 5)."""
    log_h = jnp.log(jnp.asarray(initial_step_size, jnp.float32))
    zero = jnp.zeros((), jnp.float32)
    return DualAveragingState(log_h, zero, zero, zero, jnp.log(10.0) + log_h)


def dual_averaging_update(
    state: DualAveragingState,
    acceptance_rate: Array,
    target_acceptance: float,
    *,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> DualAveragingState:
    """One dual-averaging update (Hoffman & Gelman 2014, Eq. 6 and Algorithm 5).

    H_t = (1 - 1/(t + t0)) H_{t-1} + (delta - alpha_t)/(t + t0);
    log h_t = mu - sqrt(t)/gamma H_t; log h̄_t = t^-kappa log h_t + (1 - t^-kappa) log h̄_{t-1}.
    """
    t = state.step + 1.0
    acceptance_rate = jnp.where(jnp.isfinite(acceptance_rate), acceptance_rate, 0.0)
    eta = 1.0 / (t + t0)
    error_avg = (1.0 - eta) * state.error_avg + eta * (target_acceptance - acceptance_rate)
    log_h = state.mu - jnp.sqrt(t) / gamma * error_avg
    weight = t ** (-kappa)
    log_h_avg = weight * log_h + (1.0 - weight) * state.log_step_size_avg
    return DualAveragingState(log_h, log_h_avg, error_avg, t, state.mu)


def _check_target(target_acceptance) -> None:
    if not 0.0 < target_acceptance < 1.0:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance!r}")


def adapt_step_size(
    key: Key,
    sampler: Sampler,
    x0: Array,
    num_steps: int,
    *,
    initial_step_size,
    target_acceptance: float,
) -> AdaptationResult:
    """Warm up one chain, tuning its step size by dual averaging toward a target acceptance.

    Each warm-up step calls ``sampler.step(key, state, h_t)`` and feeds the step's
    ``info.acceptance_rate`` to ``dual_averaging_update`` (Hoffman & Gelman 2014).

    Args:
      key: PRNG key.
      sampler: a kernel whose step accepts a ``step_size`` override and reports
        ``acceptance_rate`` (``mala``, ``hmc``, ``rwm``).
      x0: initial position of the chain.
      num_steps: warm-up length (a few hundred steps is typical).
      initial_step_size: h_0 > 0.
      target_acceptance: delta in (0, 1): ``MALA_TARGET_ACCEPTANCE`` (0.574) or
        ``HMC_TARGET_ACCEPTANCE`` (0.651).

    Returns:
      AdaptationResult(state, step_size, acceptance_rate, step_sizes).
    """
    result = adapt_step_size_chains(
        key, sampler, jnp.asarray(x0)[None], num_steps,
        initial_step_size=initial_step_size, target_acceptance=target_acceptance,
    )  # fmt: skip
    return result._replace(state=jax.tree_util.tree_map(lambda a: a[0], result.state))


def adapt_step_size_chains(
    key: Key,
    sampler: Sampler,
    x0: Array,
    num_steps: int,
    *,
    initial_step_size,
    target_acceptance: float,
) -> AdaptationResult:
    """Warm up several chains that share one step size, adapted on their mean acceptance.

    As ``adapt_step_size`` with ``x0`` of shape (num_chains, ...): every warm-up step
    moves all chains with the same h_t and updates dual averaging with the chains' mean
    acceptance probability, a less noisy statistic than one chain's.

    Returns:
      AdaptationResult whose state has a leading chain axis.
    """
    check_sampler("sampler", sampler)
    num_steps = check_positive_int("num_steps", num_steps)
    check_positive("initial_step_size", initial_step_size)
    _check_target(target_acceptance)
    if np.ndim(x0) < 1:
        raise ValueError(f"x0 must have a leading chain axis, got shape {np.shape(x0)}")
    x0 = strong_array(x0)
    check_real_float("x0", x0)
    return _adapt(key, sampler, x0, num_steps, as_data(initial_step_size),
                  as_data(target_acceptance))  # fmt: skip


def _check_reports_acceptance(sampler, key, state) -> None:
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    try:
        _, info = jax.eval_shape(sampler.step, key, one, jnp.ones(()))
    except TypeError:
        info = None
    if not hasattr(info, "acceptance_rate"):
        raise ValueError(
            "sampler must report info.acceptance_rate and take a step_size override "
            "(step(key, state, step_size)) to be adapted: use mala, hmc or rwm; its info is "
            f"{type(info).__name__}"
        )


@jit
def _adapt(key, sampler, x0, num_steps, initial_step_size, target_acceptance):
    state = jax.vmap(sampler.init)(x0)
    _check_reports_acceptance(sampler, key, state)
    num_chains = x0.shape[0]

    def one_step(carry, key):
        state, averaging = carry
        step_size = jnp.exp(averaging.log_step_size)
        keys = jax.random.split(key, num_chains)
        state, info = jax.vmap(lambda k, s: sampler.step(k, s, step_size))(keys, state)
        acceptance = jnp.mean(info.acceptance_rate)
        averaging = dual_averaging_update(averaging, acceptance, target_acceptance)
        return (state, averaging), (acceptance, step_size)

    carry = (state, dual_averaging_init(initial_step_size))
    (state, averaging), (acceptance, step_sizes) = jax.lax.scan(
        one_step, carry, jax.random.split(key, num_steps)
    )
    return AdaptationResult(state, jnp.exp(averaging.log_step_size_avg), acceptance, step_sizes)
