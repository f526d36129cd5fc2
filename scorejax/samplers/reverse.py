"""Reverse-time samplers of score SDEs (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", ICLR; "the paper" below).

The reverse of dx = f dt + g dw is dx = [f(x, t) - g(t)^2 grad log p_t(x)] dt + g(t) dw-bar
run from t = 1 to t = eps (the paper's Eq. 6), with the score model s(x, t) in place of
grad log p_t. One sampler, ``pc_sampler``, composes a predictor (a step of a discretised
reverse SDE from t to t - dt) with a corrector (Langevin MCMC at a fixed t), on the kernel
contract of ``samplers.base``: ``step(key, state, t, dt)`` with the time grid scanned as a
schedule (``reverse_time_grid``), so compile time does not depend on the number of steps.
A predictor or a corrector is a plain function of this module's form

    predictor(sde, score_fn, key, x, t, dt) -> x at t - dt
    corrector(sde, score_fn, key, x, t, snr) -> x at t

so a new one is a new function, not a class. Predictor-only is the paper's "P" sampler, a
corrector only is annealed Langevin with the signal-to-noise step rule ("C"); both, "PC".
The corrector's step is the same for every chain of a ``run_chains`` call (its norms are
averaged over them, ``langevin_corrector``).
``sample_sde`` runs one chain from the prior and ends with the Tweedie denoising step;
``run_chains`` with ``pc_sampler`` runs many.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import check_callable, check_positive, check_positive_int, check_score_output
from scorejax._compile import as_data, as_pytree, jit
from scorejax.samplers.base import RunResult, Sampler, chain_mean, count_nonfinite, run
from scorejax.sde import SDE, VESDE, VPSDE, check_sde, check_time
from scorejax.types import Array, BoundScoreFn, Key


class ReverseState(NamedTuple):
    """One reverse-time chain: its position."""

    x: Array


class ReverseInfo(NamedTuple):
    """Per-step diagnostics: non-finite entries of the new position."""

    num_nonfinite: Array


def _noise(key: Key, x: Array) -> Array:
    return jax.random.normal(key, x.shape, x.dtype)


def euler_maruyama(sde: SDE, score_fn: BoundScoreFn, key: Key, x: Array, t, dt) -> Array:
    """Euler-Maruyama step of the reverse SDE (paper Eq. 6) from t to t - dt:
    x - [f(x, t) - g(t)^2 s(x, t)] dt + g(t) sqrt(dt) z."""
    g = sde.diffusion(t)
    drift = sde.drift(x, t) - g**2 * score_fn(x, t)
    return x - drift * dt + g * jnp.sqrt(dt) * _noise(key, x)


def reverse_diffusion(sde: SDE, score_fn: BoundScoreFn, key: Key, x: Array, t, dt) -> Array:
    """Reverse-diffusion step (paper Eq. 47): with the forward step x(t) = x(t - dt) + F + G z
    of ``sde.discretize``, x - F + G^2 s(x, t) + G z."""
    f, g = sde.discretize(x, t, dt)
    return x - f + g**2 * score_fn(x, t) + g * _noise(key, x)


def ancestral(sde: SDE, score_fn: BoundScoreFn, key: Key, x: Array, t, dt) -> Array:
    """Ancestral sampling (paper Appendix F): for VE, SMLD's Gaussian reverse step
    x + (s_t^2 - s_{t-dt}^2) s(x, t) + sqrt(s_{t-dt}^2 (s_t^2 - s_{t-dt}^2) / s_t^2) z with s the
    kernel's std (Eq. 47); for VP, DDPM's step (x + b s(x, t)) / sqrt(1 - b) + sqrt(b) z with
    b the step's beta from ``sde.discretize`` (Ho et al. 2020, Eq. 11 in score form). Not
    defined for sub-VP."""
    if isinstance(sde, VESDE):
        # the grid's last step ends at eps, where float rounding may leave a tiny negative
        var, var_prev = sde.kernel(t)[1] ** 2, jnp.maximum(sde.kernel(t - dt)[1] ** 2, 0.0)
        gap = var - var_prev
        return x + gap * score_fn(x, t) + jnp.sqrt(var_prev * gap / var) * _noise(key, x)
    b = sde.discretize(x, t, dt)[1] ** 2
    return (x + b * score_fn(x, t)) / jnp.sqrt(1.0 - b) + jnp.sqrt(b) * _noise(key, x)


def langevin_corrector(sde: SDE, score_fn: BoundScoreFn, key: Key, x: Array, t, dt, snr) -> Array:
    """One Langevin step at time t with the signal-to-noise step rule (paper Algorithms 4
    and 5): h = 2 alpha (snr ||z|| / ||s(x, t)||)^2 and x + h s(x, t) + sqrt(2 h) z, with
    alpha = 1 - b for VP and 1 for VE and sub-VP (Algorithm 4). b is the beta of the DDPM
    step from t to t + dt (``sde.discretize``), beta(t) dt + O(dt^2) like Algorithm 5's
    alpha_i, taken on this side of t so that it exists at the last time, t = eps.

    The norms are averaged over the chains of the ``run_chains`` call (``chain_mean``), as
    score_sde averages them over its batch, so every chain takes the same step at a given t.
    With each chain's own norms the step would depend on the chain's state, and Langevin
    with a state-dependent step h(x) and no correction leaves p h^-1 rather than p invariant:
    in 2-D, where the norms vary most from point to point, a predictor-corrector run with
    per-chain norms put 5-9% of the weight in the wrong modes (over 10 standard errors, 10^4
    chains; tests/test_reverse_samplers.py shows both). A chain run alone (``run``,
    ``sample_sde``) has only its own norms; in high dimensions they concentrate and the
    difference fades. Averaging couples the chains: a chain's law then depends on its batch.
    """
    score = score_fn(x, t)
    z = _noise(key, x)
    alpha = 1.0 - sde.discretize(x, t + dt, dt)[1] ** 2 if isinstance(sde, VPSDE) else 1.0
    noise_norm = chain_mean(jnp.linalg.norm(z.ravel()))
    score_norm = chain_mean(jnp.linalg.norm(score.ravel()))
    step = 2.0 * alpha * (snr * noise_norm / score_norm) ** 2
    return x + step * score + jnp.sqrt(2.0 * step) * z


def reverse_time_grid(sde: SDE, num_steps: int, t_start=1.0) -> tuple[Array, Array]:
    """The schedule (t, dt) of a reverse run of ``num_steps`` steps from t = t_start (1 by
    default; below 1 to start from an observation at that level, ``inverse.denoising_start``)
    to t = eps: t_k = t_start - k (t_start - eps) / N for k = 0 .. N - 1, and the constant
    dt = (t_start - eps) / N, so the last step ends at eps. Arrays of shape (N,), data to
    the runner."""
    check_sde(sde)
    num_steps = check_positive_int("num_steps", num_steps)
    if not (np.isscalar(t_start) and sde.eps < t_start <= 1.0):
        raise ValueError(f"t_start must be a number in (eps, 1] = ({sde.eps}, 1], got {t_start!r}")
    dtype = jnp.result_type(float)  # float32, or float64 where the user enabled it
    dt = (jnp.asarray(t_start, dtype) - jnp.asarray(sde.eps, dtype)) / num_steps
    t = t_start - jnp.arange(num_steps, dtype=dtype) * dt
    return t, jnp.full((num_steps,), dt)


def pc_sampler(
    sde: SDE,
    score_fn: BoundScoreFn,
    predictor: Callable | None = euler_maruyama,
    corrector: Callable | None = None,
    *,
    snr=0.16,
    num_corrector_steps: int = 1,
    corrector_first: bool = False,
) -> Sampler:
    """Predictor-corrector sampler (paper Algorithm 1; Algorithms 2 and 3 for VE and VP).

    ``step(key, state, t, dt)`` moves the chain from time t to t - dt: the predictor's
    step, then ``num_corrector_steps`` corrector steps at t - dt (the paper's order, the
    default); with ``corrector_first`` the corrector steps run at t before the predictor
    (the order of score_sde's code). Run it with ``schedule=reverse_time_grid(sde, N)``.

    Args:
      sde: the forward SDE (``scorejax.sde``).
      score_fn: ``score_fn(x, t)`` for one example, parameters closed over.
      predictor: ``euler_maruyama``, ``reverse_diffusion``, ``ancestral`` (VE and VP only)
        or a function of the same form; None for corrector-only sampling.
      corrector: ``langevin_corrector`` or a function of its form; None for none.
      snr: the corrector's signal-to-noise ratio r > 0 (the paper uses 0.16 for VE on
        CIFAR-10, 0.01 for VP; tune it per data set).
      num_corrector_steps: M >= 1 corrector steps per time step.
      corrector_first: run the corrector before the predictor.

    Returns:
      Sampler with state ReverseState and info ReverseInfo.
    """
    check_sde(sde)
    check_callable("score_fn", score_fn, "score_fn(x, t) -> array shaped like x")
    if predictor is None and corrector is None:
        raise ValueError("predictor and corrector are both None: give at least one")
    if predictor is not None:
        check_callable("predictor", predictor, "predictor(sde, score_fn, key, x, t, dt)")
    if corrector is not None:
        check_callable("corrector", corrector, "corrector(sde, score_fn, key, x, t, dt, snr)")
    if predictor is ancestral and not isinstance(sde, VESDE | VPSDE):
        raise ValueError("predictor=ancestral is defined for VESDE and VPSDE only")
    check_positive("snr", snr)
    num_corrector_steps = check_positive_int("num_corrector_steps", num_corrector_steps)
    sde = jax.tree_util.tree_map(as_data, sde)
    score_fn = as_pytree(score_fn)
    step = Partial(
        _pc_step,
        sde,
        score_fn,
        predictor,
        corrector,
        as_data(snr),
        num_corrector_steps,
        bool(corrector_first),
    )
    return Sampler(Partial(_pc_init, score_fn), step)


def _pc_init(score_fn, x):
    check_score_output("score_fn", score_fn, x, jnp.ones((), jnp.result_type(x)))
    return ReverseState(x)


def _pc_step(
    sde,
    score_fn,
    predictor,
    corrector,
    snr,
    num_corrector_steps,
    corrector_first,
    key,
    state,
    t,
    dt,
):
    key_p, key_c = jax.random.split(key)
    x = state.x

    def correct(x, t_c):
        if corrector is None:
            return x
        for k in jax.random.split(key_c, num_corrector_steps):
            x = corrector(sde, score_fn, k, x, t_c, dt, snr).astype(state.x.dtype)
        return x

    if corrector_first:
        x = correct(x, t)
    if predictor is not None:
        x = predictor(sde, score_fn, key_p, x, t, dt).astype(state.x.dtype)
    if not corrector_first:
        x = correct(x, t - dt)
    return ReverseState(x), ReverseInfo(count_nonfinite(x))


def denoise_sde(sde: SDE, score_fn: BoundScoreFn, x: Array, t) -> Array:
    """Tweedie's formula for the kernel x(t) = m x(0) + s z: E[x(0) | x(t)] =
    (x + s(t)^2 grad log p_t(x)) / m(t) (Efron 2011), the final denoising step of the
    reverse samplers (score_sde's ``noise_removal``, here exact for an exact score). One
    example ``x``; jitted."""
    check_sde(sde)
    check_time("t", t, sde)
    return _denoise(jax.tree_util.tree_map(as_data, sde), as_pytree(score_fn), x, jnp.asarray(t))


@jit
def _denoise(sde, score_fn, x, t):
    mean, std = sde.kernel(t)
    return ((x + std**2 * score_fn(x, t)) / mean).astype(x.dtype)


def sample_sde(
    key: Key,
    sde: SDE,
    score_fn: BoundScoreFn,
    x_init: Array,
    num_steps: int,
    *,
    predictor: Callable | None = euler_maruyama,
    corrector: Callable | None = None,
    snr=0.16,
    num_corrector_steps: int = 1,
    corrector_first: bool = False,
    denoise: bool = True,
    **run_kwargs,
) -> RunResult:
    """Sample one chain by the reverse SDE from ``x_init`` (a draw of ``sde.prior_sample``)
    at t = 1 down to t = eps in ``num_steps`` steps of ``pc_sampler``, then (``denoise``)
    Tweedie's step at eps (``denoise_sde``). ``jax.vmap`` it, or call
    ``run_chains(key, pc_sampler(...), x_init_batch, num_steps,
    schedule=reverse_time_grid(sde, num_steps))``, for many chains.

    Returns:
      RunResult; ``state.x`` is the sample. NaN/Inf are counted in ``info`` and warned
      about (``run``'s ``warn``).
    """
    sampler = pc_sampler(
        sde,
        score_fn,
        predictor,
        corrector,
        snr=snr,
        num_corrector_steps=num_corrector_steps,
        corrector_first=corrector_first,
    )
    schedule = reverse_time_grid(sde, num_steps)
    result = run(key, sampler, x_init, num_steps, schedule=schedule, **run_kwargs)
    if denoise:
        x = denoise_sde(sde, score_fn, result.state.x, sde.eps)
        result = result._replace(state=ReverseState(x))
    return result
