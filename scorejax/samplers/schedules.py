"""Step-size schedules for stochastic-gradient Langevin dynamics, as data.

A schedule is a (num_steps,) array of step sizes passed to the runner,
``run(key, ula(score_fn, eta0), x0, num_steps, schedule=(step_sizes,))`` (docs/design.md §5): the
kernel's ``step(key, state, step_size)`` reads one entry per step, so changing the schedule
never recompiles. The same arrays drive ``mala``, ``rwm`` and ``hmc`` through their
``step_size`` override.

With the library's convention x + h s + sqrt(2 h) z (docs/design.md §6), h_t is Welling & Teh's
(2011) epsilon_t / 2.
"""

import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_positive, check_positive_int
from scorejax.types import Array


def polynomial_decay(initial_step_size, num_steps: int, gamma, offset=0.0) -> Array:
    """h_t = eta0 (b + t)^(-gamma) for t = 1, ..., num_steps (Welling & Teh 2011, Sec. 3).

    Robbins–Monro conditions (sum h_t = inf, sum h_t^2 < inf) hold for gamma in (1/2, 1]
    (Welling & Teh 2011); Teh, Thiery & Vollmer (2016, Theorem 7) show gamma = 1/3
    minimises the asymptotic mean squared error of SGLD averages. With ``offset`` b = 0 the
    first step is eta0.

    Args:
      initial_step_size: eta0 > 0.
      num_steps: length of the schedule.
      gamma: decay exponent >= 0 (0 is constant).
      offset: b >= 0.

    Returns:
      (num_steps,) float32 array of step sizes.
    """
    check_positive("initial_step_size", initial_step_size)
    check_positive_int("num_steps", num_steps)
    if not np.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    if not np.isfinite(offset) or offset < 0:
        raise ValueError(f"offset must be a finite number >= 0, got {offset!r}")
    t = np.arange(1, num_steps + 1, dtype=np.float64)
    return jnp.asarray(initial_step_size * (offset + t) ** (-float(gamma)), jnp.float32)


def inverse_sqrt_decay(initial_step_size, num_steps: int) -> Array:
    """h_t = eta0 / sqrt(t), t = 1, ..., num_steps (``polynomial_decay`` with gamma = 1/2)."""
    return polynomial_decay(initial_step_size, num_steps, 0.5)


def cube_root_decay(initial_step_size, num_steps: int) -> Array:
    """h_t = eta0 / t^(1/3), the MSE-optimal SGLD decay (Teh, Thiery & Vollmer 2016)."""
    return polynomial_decay(initial_step_size, num_steps, 1.0 / 3.0)


def constant_schedule(step_size, num_steps: int) -> Array:
    """h_t = h for every step: unadjusted Langevin's fixed step as a schedule."""
    return polynomial_decay(step_size, num_steps, 0.0)
