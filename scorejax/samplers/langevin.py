"""Langevin dynamics: unadjusted Langevin (ULA), its noise-conditional form and annealed
Langevin (NCSN), and the decoupled Langevin of EBM training.

Step-size convention (docs/design.md §6), used everywhere in scorejax:

    x_{t+1} = x_t + h * s(x_t) + sqrt(2 h) * z_t,   z_t ~ N(0, I)

with ``step_size = h`` (the spelling of NCSNv2 and score_sde). The NCSN paper
(Song & Ermon 2019, Algorithm 1) writes x + (alpha/2) s + sqrt(alpha) z: its alpha is 2h.

Kernels are built from ``jax.tree_util.Partial`` over module-level functions, so their
numbers are pytree leaves (data to the runner's compiled loop).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import (
    check_callable,
    check_decreasing,
    check_positive,
    check_positive_int,
    check_score_output,
)
from scorejax._compile import as_data, as_pytree, jit
from scorejax.samplers.base import RunResult, Sampler, count_nonfinite, run
from scorejax.types import Array, BoundScoreFn, Key


class LangevinState(NamedTuple):
    """One Langevin chain: its position."""

    x: Array


class LangevinInfo(NamedTuple):
    """Per-step diagnostics: non-finite entries of the new position."""

    num_nonfinite: Array


def langevin_update(key: Key, x: Array, score: Array, step_size) -> Array:
    """One Langevin move x + h s + sqrt(2 h) z (Roberts & Tweedie 1996, Euler–Maruyama for
    dX = grad log p(X) dt + sqrt(2) dW), returned in the dtype of ``x``."""
    noise = jax.random.normal(key, x.shape, x.dtype)
    return (x + step_size * score + jnp.sqrt(2.0 * step_size) * noise).astype(x.dtype)


def _init(score_fn, x, *args):
    check_score_output("score_fn", score_fn, x, *args)
    return LangevinState(x)


def ula(score_fn: BoundScoreFn, step_size) -> Sampler:
    """Unadjusted Langevin algorithm: x' = x + h s(x) + sqrt(2 h) z.

    Its stationary law is biased at finite h (for a Gaussian target the bias is closed
    form, see the tests); MALA removes it with a Metropolis correction.

    Args:
      score_fn: s(x) for one example, parameters closed over (``partial(score_fn, params)``
        keeps the parameters data: new parameters reuse the compiled run).
      step_size: h > 0. ``step(key, state, step_size)`` accepts a per-step value, so a
        decaying schedule (SGLD, Welling & Teh 2011) is ``run(..., schedule=(steps,))``.

    Returns:
      Sampler with state LangevinState and info LangevinInfo.
    """
    check_callable("score_fn", score_fn, "score_fn(x) -> array shaped like x")
    check_positive("step_size", step_size)
    score_fn = as_pytree(score_fn)
    return Sampler(Partial(_init, score_fn), Partial(_ula_step, score_fn, as_data(step_size)))


def _ula_step(score_fn, default_step_size, key, state, step_size=None):
    step_size = default_step_size if step_size is None else step_size
    x = langevin_update(key, state.x, score_fn(state.x), step_size)
    return LangevinState(x), LangevinInfo(count_nonfinite(x))


def noise_conditional_ula(score_fn: BoundScoreFn) -> Sampler:
    """ULA on a noise-conditional score, the kernel of annealed Langevin.

    ``step(key, state, sigma, step_size)`` moves x <- x + h s(x, sigma) + sqrt(2 h) z: one
    step at noise level sigma (Song & Ermon 2019, Algorithm 1, inner loop, with h their
    alpha_i / 2). ``run`` it with the schedule of ``annealed_step_sizes`` to anneal.

    Args:
      score_fn: ``score_fn(x, sigma)`` for one example, parameters closed over.

    Returns:
      Sampler with state LangevinState and info LangevinInfo; its step takes the per-step
      (sigma, step_size) of a schedule.
    """
    check_callable("score_fn", score_fn, "score_fn(x, sigma) -> array shaped like x")
    score_fn = as_pytree(score_fn)
    return Sampler(Partial(_noise_conditional_init, score_fn), Partial(_nc_step, score_fn))


def _noise_conditional_init(score_fn, x):
    return _init(score_fn, x, jnp.ones((), jnp.result_type(x)))


def _nc_step(score_fn, key, state, sigma, step_size):
    x = langevin_update(key, state.x, score_fn(state.x, sigma), step_size)
    return LangevinState(x), LangevinInfo(count_nonfinite(x))


def annealed_step_sizes(sigmas: Array, step_size, num_steps_per_level: int):
    """Per-step (sigma, h) arrays of annealed Langevin: h_i = step_size * sigma_i^2 / sigma_L^2.

    Song & Ermon 2019, Algorithm 1, with each level repeated ``num_steps_per_level`` times:
    the schedule of ``noise_conditional_ula``.
    """
    check_decreasing("sigmas", sigmas)
    check_positive("step_size", step_size)
    num_steps_per_level = check_positive_int("num_steps_per_level", num_steps_per_level)
    sigmas = jnp.asarray(sigmas)
    step_sizes = step_size * sigmas**2 / sigmas[-1] ** 2
    return (
        jnp.repeat(sigmas, num_steps_per_level),
        jnp.repeat(step_sizes, num_steps_per_level),
    )


def ncsnv2_step_size(sigmas: Array, num_steps_per_level: int) -> float:
    """NCSNv2's step size for annealed Langevin (Song & Ermon 2020, Technique 4).

    With step sizes h_i = eps sigma_i^2 / sigma_L^2 (``annealed_step_sizes``, update
    x + h s + sqrt(2 h) z, NCSNv2's alpha_i = h_i) and T steps per level, Langevin started
    from a sample of level i - 1 and run on an exact Gaussian score ends with variance s_T^2:

        s_T^2 / sigma_i^2 = (1 - eps/sigma_L^2)^(2T) (gamma^2 - 2 eps / (sigma_L^2 - sigma_L^2
                            (1 - eps/sigma_L^2)^2)) + 2 eps / (sigma_L^2 - sigma_L^2
                            (1 - eps/sigma_L^2)^2)                         (their Eq. 4)

    with gamma = sigma_(i-1) / sigma_i the ladder's ratio. The ratio exceeds 1 for every eps
    in (0, sigma_L^2) (it mixes gamma^2 and 1 / (1 - eps / (2 sigma_L^2))), so "as close to 1
    as possible" is its minimum, found here by golden-section search in log eps.

    Args:
      sigmas: (L,) decreasing geometric ladder (gamma is read from its first two levels).
      num_steps_per_level: T.

    Returns:
      eps, the ``step_size`` of ``annealed_step_sizes`` / ``annealed_langevin``.
    """
    check_decreasing("sigmas", sigmas)
    num_steps_per_level = check_positive_int("num_steps_per_level", num_steps_per_level)
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least 2 levels, got {sigmas.shape[0]}")
    gamma, var = sigmas[0] / sigmas[1], sigmas[-1] ** 2

    def ratio(log_eps):
        eps = np.exp(log_eps)
        x = 1.0 - eps / var
        stationary = 2.0 * eps / (var - var * x**2)
        return x ** (2 * num_steps_per_level) * (gamma**2 - stationary) + stationary

    low, high = np.log(var) - 40.0, np.log(var)  # eps in (0, sigma_L^2)
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(200):
        a, b = high - golden * (high - low), low + golden * (high - low)
        low, high = (low, b) if ratio(a) < ratio(b) else (a, high)
    return float(np.exp(0.5 * (low + high)))


def tweedie_denoise(score_fn: BoundScoreFn, x: Array, sigma) -> Array:
    """The final denoising step x + sigma^2 s(x, sigma): Tweedie's formula for E[x_0 | x]
    under x = x_0 + sigma z (Efron 2011; Song & Ermon 2020, Appendix C.2;
    Jolicoeur-Martineau et al. 2021). One example ``x``; jitted."""
    return _tweedie(score_fn, x, jnp.asarray(sigma))


@jit
def _tweedie(score_fn, x, sigma):
    return (x + sigma**2 * score_fn(x, sigma)).astype(x.dtype)


def annealed_langevin(
    key: Key,
    score_fn: BoundScoreFn,
    x0: Array,
    sigmas: Array,
    *,
    step_size,
    num_steps_per_level: int,
    denoise: bool = True,
    **run_kwargs,
) -> RunResult:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) for one chain.

    For each sigma_i of a decreasing ladder, ``num_steps_per_level`` moves
    x <- x + h_i s(x, sigma_i) + sqrt(2 h_i) z with h_i = step_size * sigma_i^2 / sigma_L^2
    (our h is the paper's alpha_i / 2; the paper's epsilon is 2 * step_size). This is
    ``run(key, noise_conditional_ula(score_fn), x0, L * T, schedule=annealed_step_sizes(...))``:
    the ladder is data, scanned once, so compile time does not grow with the number of
    levels. With ``denoise``, the last position takes the Tweedie step
    x + sigma_L^2 s(x, sigma_L) (``tweedie_denoise``).

    Args:
      key: PRNG key.
      score_fn: noise-conditional score ``score_fn(x, sigma)`` for one example.
      x0: initial position (one chain; ``jax.vmap`` for many).
      sigmas: (L,) strictly decreasing noise levels.
      step_size: h at the smallest sigma (> 0).
      num_steps_per_level: T steps at each level.
      denoise: apply the final denoising step.
      **run_kwargs: ``run``'s keywords (``thin``, ``observable``, ``unroll``, ``progress``,
        ``warn``).

    Returns:
      RunResult; ``state.x`` is the (denoised) sample.
    """
    schedule = annealed_step_sizes(sigmas, as_data(step_size), num_steps_per_level)
    num_steps = np.shape(sigmas)[0] * num_steps_per_level
    sampler = noise_conditional_ula(score_fn)
    result = run(key, sampler, x0, num_steps, schedule=schedule, **run_kwargs)
    if denoise:
        x = tweedie_denoise(score_fn, result.state.x, jnp.asarray(sigmas)[-1])
        result = result._replace(state=LangevinState(x))
    return result


def decoupled_langevin(
    score_fn: BoundScoreFn, step_size, noise_scale, *, clip_range=None
) -> Sampler:
    """Langevin with the step size and the noise scale as separate parameters (EBM practice).

    x' = clip(x + step_size * s(x) + noise_scale * z),   z ~ N(0, I),

    the update of Du & Mordatch 2019 (Eq. 3 with lambda = step_size and omega ~ N(0, noise^2))
    and Nijkamp et al. 2019, who take e.g. step_size = 10, noise_scale = 0.005. Against the
    library convention x + h s + sqrt(2 h) z (docs/design.md §6) this is that update with h =
    step_size for the score s / T, i.e. Euler–Maruyama for dX = s dt + sqrt(2 T) dW, whose
    stationary law is p^(1/T) ∝ exp(-E / T), with the implied temperature

        T = noise_scale**2 / (2 * step_size).

    T = 1 (noise_scale = sqrt(2 step_size)) is ``ula``; the usual image settings give T << 1,
    a cold, nearly deterministic descent whose samples are not draws from p (short-run MCMC,
    Nijkamp et al. 2019, learns a sampler, not an MLE).

    Args:
      score_fn: s(x) = -grad E(x) for one example, parameters closed over.
      step_size: lambda > 0, the multiplier of the score (``step`` accepts an override).
      noise_scale: standard deviation of the added noise, >= 0 (``step`` accepts an override).
      clip_range: None, or (low, high) to clamp every move to the data range.

    Returns:
      Sampler with state LangevinState and info LangevinInfo.
    """
    check_callable("score_fn", score_fn, "score_fn(x) -> array shaped like x")
    check_positive("step_size", step_size)
    if np.ndim(noise_scale) == 0 and not (np.isfinite(noise_scale) and noise_scale >= 0):
        raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale!r}")
    if clip_range is not None:
        if len(clip_range) != 2 or not clip_range[0] < clip_range[1]:
            raise ValueError(f"clip_range must be (low, high) with low < high, got {clip_range}")
        clip_range = tuple(float(c) for c in clip_range)
    score_fn = as_pytree(score_fn)
    step = Partial(_decoupled_step, score_fn, clip_range, as_data(step_size), as_data(noise_scale))
    return Sampler(Partial(_init, score_fn), step)


def _decoupled_step(score_fn, clip_range, default_step, default_noise, key, state,
                    step_size=None, noise_scale=None):  # fmt: skip
    step_size = default_step if step_size is None else step_size
    noise_scale = default_noise if noise_scale is None else noise_scale
    noise = jax.random.normal(key, state.x.shape, state.x.dtype)
    x = state.x + step_size * score_fn(state.x) + noise_scale * noise
    if clip_range is not None:
        x = jnp.clip(x, clip_range[0], clip_range[1])
    x = x.astype(state.x.dtype)
    return LangevinState(x), LangevinInfo(count_nonfinite(x))
