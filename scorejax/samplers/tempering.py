"""Parallel tempering (replica exchange) for continuous energies.

K replicas sample p_i(x) ∝ exp(-E(x) / T_i) at temperatures T_1 < ... < T_K, each with any
kernel of the library (a MALA, HMC, RWM or ULA step on the tempered energy E / T_i), and
neighbouring replicas exchange positions. Hot replicas cross barriers that trap the cold
one, and the exchanges carry those crossings down the ladder (Swendsen & Wang 1986;
Geyer 1991; Earl & Deem 2005).

A swap of replicas i and j = i + 1 is accepted with probability (Earl & Deem 2005, Eq. 4)

    min(1, exp((E(x_i) - E(x_j)) (1 / T_i - 1 / T_j))),

which keeps the product law prod_i p_i invariant. Swaps alternate deterministically
between the even pairs (1,2), (3,4), ... and the odd pairs (2,3), (4,5), ... (the
"deterministic even-odd" scheme of Okabe et al. 2001, shown by Syed et al. 2022 to make
the index process non-reversible and round trips O(K) instead of O(K^2)).

The whole ensemble is one ``Sampler``, so ``run`` and ``run_chains`` drive it and it
vmaps over seeds like any other kernel.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import check_callable, check_energy_output, check_positive, check_positive_int
from scorejax._compile import as_pytree
from scorejax.samplers.base import Sampler, count_nonfinite
from scorejax.samplers.mcmc import metropolis_accept
from scorejax.types import Array, BoundEnergyFn


class TemperingState(NamedTuple):
    """The ensemble: positions of all replicas (K, ...), their untempered energies (K,),
    and the parity of the next swap sweep (0: pairs (0,1), (2,3), ...; 1: (1,2), ...).

    ``x[0]`` is the coldest replica, the one that samples exp(-E / T_1).
    """

    x: Array
    energy: Array
    parity: Array


class TemperingInfo(NamedTuple):
    """Per-step diagnostics of parallel tempering.

    acceptance_rate: (K,) acceptance probability of each replica's own kernel (1 for
      kernels without a Metropolis step).
    swap_rate: (K-1,) min(1, exp((E_i - E_j)(1/T_i - 1/T_j))) for every neighbour pair,
      computed at every step whether or not the pair was proposed this step: averaged by
      ``run`` it is each pair's swap acceptance rate.
    is_swapped: (K-1,) whether each pair exchanged this step (only the pairs of this
      step's parity are proposed).
    num_nonfinite: non-finite entries of the replicas' positions and energies.
    """

    acceptance_rate: Array
    swap_rate: Array
    is_swapped: Array
    num_nonfinite: Array


def geometric_temperatures(num_replicas: int, max_temperature, min_temperature=1.0) -> Array:
    """T_i = T_min (T_max / T_min)^((i - 1) / (K - 1)), i = 1..K: a geometric ladder.

    Constant ratios T_{i+1}/T_i give roughly equal swap rates when the heat capacity is
    constant over the ladder (Kofke 2002; Earl & Deem 2005, Section 3).

    Args:
      num_replicas: K >= 2.
      max_temperature: T_K > T_min.
      min_temperature: T_1 > 0 (1 samples the target itself).

    Returns:
      (K,) increasing temperatures.
    """
    check_positive_int("num_replicas", num_replicas)
    if num_replicas < 2:
        raise ValueError(f"num_replicas must be at least 2, got {num_replicas}")
    check_positive("min_temperature", min_temperature)
    check_positive("max_temperature", max_temperature)
    if not max_temperature > min_temperature:
        raise ValueError(
            f"max_temperature must exceed min_temperature={min_temperature}, got {max_temperature}"
        )
    ratio = (max_temperature / min_temperature) ** (1.0 / (num_replicas - 1))
    return jnp.asarray(min_temperature * ratio ** np.arange(num_replicas), jnp.float32)


def _check_temperatures(temperatures) -> np.ndarray:
    try:
        temps = np.asarray(temperatures, dtype=np.float64)
    except Exception as error:
        raise ValueError(
            "temperatures must be a concrete 1-D array (not traced inside jit)"
        ) from error
    if temps.ndim != 1 or temps.size < 2:
        raise ValueError(f"temperatures must be a 1-D array of K >= 2, got shape {temps.shape}")
    check_positive("temperatures", temps)
    if np.any(np.diff(temps) <= 0):
        raise ValueError(f"temperatures must be strictly increasing (coldest first), got {temps}")
    return temps


def parallel_tempering(
    energy_fn: BoundEnergyFn,
    kernel_factory: Callable[[BoundEnergyFn, Array], Sampler],
    temperatures: Array,
) -> Sampler:
    """Replica exchange: a kernel per tempered energy E / T_i plus neighbour swaps.

    One step (i) moves every replica with ``kernel_factory(lambda x: E(x) / T_i, T_i)``
    (vmapped over replicas), then (ii) proposes swaps of the pairs (i, i+1) of the current
    parity, accepted with min(1, exp((E(x_i) - E(x_{i+1})) (1/T_i - 1/T_{i+1}))) (Earl &
    Deem 2005, Eq. 4) by ``metropolis_accept``, then flips the parity (Okabe et al. 2001).
    The replicas' kernel states are rebuilt from the swapped positions with the kernel's
    ``init``, so any kernel works; for MALA or HMC this costs one extra energy-and-gradient
    per replica per step.

    Args:
      energy_fn: E(x) -> () for one example, parameters closed over.
      kernel_factory: ``kernel_factory(tempered_energy_fn, temperature) -> Sampler``, called
        inside a vmap over replicas with a traced temperature, e.g.
        ``lambda e, t: mala(e, 0.05 * t)`` (scaling the step with T keeps the acceptance
        roughly flat, the tempered energy's curvature falling as 1/T) or
        ``lambda e, t: hmc(e, 0.1, 10)``.
      temperatures: (K,) strictly increasing, coldest first (``geometric_temperatures``).

    Returns:
      Sampler over TemperingState; ``init(x)`` takes the K replicas' positions (K, ...)
      (``jnp.broadcast_to(x0, (K, *x0.shape))`` starts them all at x0). Info TemperingInfo.
    """
    check_callable("energy_fn", energy_fn, "energy_fn(x) -> scalar")
    check_callable(
        "kernel_factory", kernel_factory, "kernel_factory(energy_fn, temperature) -> Sampler"
    )
    temps = jnp.asarray(_check_temperatures(temperatures), jnp.float32)
    energy_fn = as_pytree(energy_fn)
    probe = kernel_factory(Partial(_tempered_energy, energy_fn, temps[0]), temps[0])
    if not isinstance(probe, Sampler):
        raise TypeError(
            "kernel_factory must return a scorejax Sampler (e.g. lambda e, t: mala(e, 0.05 * t)),"
            f" got {type(probe).__name__}"
        )
    return Sampler(
        Partial(_pt_init, energy_fn, temps), Partial(_pt_step, energy_fn, kernel_factory, temps)
    )


def _tempered_energy(energy_fn, temperature, x):
    return energy_fn(x) / temperature


def _replica_kernel(energy_fn, kernel_factory, temperature) -> Sampler:
    return kernel_factory(Partial(_tempered_energy, energy_fn, temperature), temperature)


def _pt_init(energy_fn, temps, x):
    num_replicas = temps.shape[0]
    if x.ndim < 1 or x.shape[0] != num_replicas:
        raise ValueError(
            f"parallel_tempering init expects positions of shape (K={num_replicas}, ...), "
            f"got {x.shape}; use jnp.broadcast_to(x0, ({num_replicas}, *x0.shape))"
        )
    check_energy_output("energy_fn", energy_fn, x[0])
    energy = jax.vmap(energy_fn)(x)
    return TemperingState(x, energy, jnp.zeros((), jnp.int32))


def _pt_step(energy_fn, kernel_factory, temps, key, state):
    num_replicas = temps.shape[0]
    temps = temps.astype(state.energy.dtype)

    def replica_step(key, x, temperature):
        kernel = _replica_kernel(energy_fn, kernel_factory, temperature)
        new, info = kernel.step(key, kernel.init(x))
        return new.x, getattr(info, "acceptance_rate", jnp.ones(()))

    key_move, key_swap = jax.random.split(key)
    keys = jax.random.split(key_move, num_replicas)
    x, acceptance = jax.vmap(replica_step)(keys, state.x, temps)
    energy = jax.vmap(energy_fn)(x)

    beta = 1.0 / temps
    log_ratio = (energy[:-1] - energy[1:]) * (beta[:-1] - beta[1:])
    accept, swap_rate = metropolis_accept(key_swap, log_ratio)
    proposed = jnp.arange(num_replicas - 1) % 2 == state.parity
    is_swapped = proposed & accept
    # the pairs of one parity are disjoint, so the swaps compose into one permutation
    down = jnp.concatenate([is_swapped, jnp.zeros(1, bool)])  # i takes i + 1
    up = jnp.concatenate([jnp.zeros(1, bool), is_swapped])  # i takes i - 1
    index = jnp.arange(num_replicas) + down.astype(jnp.int32) - up.astype(jnp.int32)
    x, energy = x[index], energy[index]

    new_state = TemperingState(x, energy, 1 - state.parity)
    num_nonfinite = count_nonfinite(x) + count_nonfinite(energy)
    info = TemperingInfo(acceptance, swap_rate, is_swapped, num_nonfinite)
    return new_state, info
