"""Score-matching and contrastive losses as plain functions.

Every loss has the form ``loss(params, key, batch, *, score_fn, ...) -> scalar`` with
``batch: (B, D)``; bind the keywords with ``functools.partial`` and hand the result to
``make_train_step``. ``score_fn(params, x[, sigma or t])`` sees one example and is vmapped here.
For an energy-parameterised model pass ``score_fn=score_from_energy(energy_fn)``: the
same losses then train E through its score -grad_x E.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import (
    check_decreasing,
    check_energy_output,
    check_positive,
    check_positive_int,
    check_score_output,
)
from scorejax.scores import _value_and_divergence
from scorejax.sde import SDE, check_sde, std_weighting
from scorejax.types import Array, EnergyFn, Key, Params, ScoreFn


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Array:
    """Geometric noise ladder sigma_1 > ... > sigma_L (Song & Ermon 2019, Section 4.2)."""
    check_positive("sigma_max", sigma_max)
    check_positive("sigma_min", sigma_min)
    check_positive_int("num_levels", num_levels)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
    return jnp.asarray(np.geomspace(sigma_max, sigma_min, num_levels), dtype=jnp.float32)


def largest_pairwise_distance(data, chunk_size: int = 1024) -> float:
    """max_ij ||x_i - x_j||, NCSNv2's choice of sigma_1 (Song & Ermon 2020, Technique 1: the
    largest noise level should be as large as the largest pairwise distance of the training
    data, so that the noised data forget the data's clusters). Exact, in float64, a chunk of
    rows at a time on the host (O(N^2 D) work, O(chunk N) memory).

    Args:
      data: (N, ...) training examples, N >= 2.
      chunk_size: rows per block of the distance matrix.
    """
    x = np.asarray(data, np.float64).reshape(np.shape(data)[0], -1)
    if x.shape[0] < 2:
        raise ValueError(f"data must hold at least 2 examples, got shape {np.shape(data)}")
    chunk_size = check_positive_int("chunk_size", chunk_size)
    sq = np.sum(x**2, axis=1)
    best = 0.0
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        d2 = sq[start : start + chunk_size, None] + sq[None, :] - 2.0 * block @ x.T
        best = max(best, float(np.max(d2)))
    return float(np.sqrt(max(best, 0.0)))


def ncsnv2_sigmas(sigma_max: float, sigma_min: float, dim: int) -> Array:
    """The geometric ladder of NCSNv2's Technique 2 (Song & Ermon 2020, Section 4.2): the
    ratio gamma = sigma_(i-1) / sigma_i solves

        Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) = 1/2,

    so that a sample of N(0, sigma_(i-1)^2 I) lies, with probability 1/2, within three
    standard deviations of the typical radius sigma_i sqrt(D) of the next level (D the data's
    dimension; Phi the standard normal CDF). L is the smallest number of levels whose ratio is
    at most gamma; the ladder runs from ``sigma_max`` down to ``sigma_min``.
    """
    check_positive("sigma_max", sigma_max)
    check_positive("sigma_min", sigma_min)
    dim = check_positive_int("dim", dim)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
    phi = lambda u: 0.5 * (1.0 + math.erf(u / math.sqrt(2.0)))
    root = math.sqrt(2.0 * dim)
    mass = lambda g: phi(root * (g - 1) + 3 * g) - phi(root * (g - 1) - 3 * g)
    low, high = 1.0, 2.0  # mass falls from 1 at gamma = 1 as gamma grows
    while mass(high) > 0.5:
        high *= 2.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if mass(mid) > 0.5 else (low, mid)
    num_levels = max(2, math.ceil(math.log(sigma_max / sigma_min) / math.log(low)) + 1)
    return geometric_sigmas(sigma_max, sigma_min, num_levels)


def _check_batch(batch, name: str = "batch") -> None:
    if np.ndim(batch) < 2:
        raise ValueError(
            f"{name} must have shape (B, ...) with a batch axis, got {np.shape(batch)}"
        )


def _check_score(score_fn, params, batch, *args) -> None:
    """The score of one example must be shaped like the example (checked abstractly)."""
    check_score_output("score_fn", lambda x, *a: score_fn(params, x, *a), batch[0], *args)


def dsm_loss(params: Params, key: Key, batch: Array, *, score_fn: ScoreFn, sigma: float) -> Array:
    """Denoising score matching at one noise level (Vincent 2011, Eq. 12 up to scale).

    L(theta) = E_x E_{z ~ N(0, I)} 1/2 || s_theta(x + sigma z) + z / sigma ||^2,

    minimised by the score of the noised data q_sigma = p * N(0, sigma^2 I). At that
    optimum the loss equals 1/2 E[ ||z||^2 / sigma^2 - ||grad log q_sigma(x~)||^2 ].

    Args:
      params: model parameters.
      key: PRNG key for the noise.
      batch: (B, D) data.
      score_fn: ``score_fn(params, x) -> (D,)``.
      sigma: noise standard deviation (> 0).
    """
    _check_batch(batch)
    check_positive("sigma", sigma)
    _check_score(score_fn, params, batch)
    z = jax.random.normal(key, batch.shape, batch.dtype)
    scores = jax.vmap(score_fn, in_axes=(None, 0))(params, batch + sigma * z)
    residual = (scores + z / sigma).reshape(batch.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def ncsn_loss(params: Params, key: Key, batch: Array, *, score_fn: ScoreFn, sigmas: Array) -> Array:
    """Noise-conditional DSM over a sigma ladder (Song & Ermon 2019, Eq. 5 and 6).

    L(theta) = E_i lambda(sigma_i) E 1/2 || s_theta(x + sigma_i z, sigma_i) + z / sigma_i ||^2
    with lambda(sigma) = sigma^2, i.e. 1/2 || sigma_i s_theta + z ||^2, and one level drawn
    uniformly per example (an unbiased estimate of the average over levels).

    Args:
      score_fn: ``score_fn(params, x, sigma) -> (D,)``.
      sigmas: (L,) decreasing noise ladder (``geometric_sigmas``).
    """
    _check_batch(batch)
    check_decreasing("sigmas", sigmas)
    sigmas = jnp.asarray(sigmas)
    _check_score(score_fn, params, batch, sigmas[0])
    key_level, key_noise = jax.random.split(key)
    level = jax.random.randint(key_level, (batch.shape[0],), 0, sigmas.shape[0])
    sigma = sigmas[level]
    sigma_b = sigma.reshape((-1,) + (1,) * (batch.ndim - 1))
    z = jax.random.normal(key_noise, batch.shape, batch.dtype)
    scores = jax.vmap(score_fn, in_axes=(None, 0, 0))(params, batch + sigma_b * z, sigma)
    residual = (sigma_b * scores + z).reshape(batch.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def sde_dsm_loss(
    params: Params,
    key: Key,
    batch: Array,
    *,
    score_fn: ScoreFn,
    sde: SDE,
    weighting: Callable[[SDE, Array], Array] = std_weighting,
    importance: bool = False,
) -> Array:
    """Continuous-time denoising score matching (Song et al. 2021, Eq. 7).

    L(theta) = E_{t ~ U(eps, 1)} lambda(t) E_{x(0), z} 1/2 || s_theta(x(t), t) + z / s(t) ||^2
    with x(t) = m(t) x(0) + s(t) z from the SDE's kernel (``sde.kernel``), one t per example
    (an unbiased estimate of the integral over t). It is minimised by the score of the noised
    data at every t; with the exact score it equals 1/2 E_t lambda(t) E||z/s - grad log p_t||^2
    (for Gaussian data 1/2 E_t lambda(t) D m^2 v0 / ((m^2 v0 + s^2) s^2), data variance v0).
    The 1/2 is this module's convention (``dsm_loss``); the paper's Eq. 7 omits it.

    ``weighting`` is lambda(sde, t): ``sde.std_weighting`` (the default, lambda = s(t)^2, the
    paper's choice: the residual is the noise-prediction error ||s(t) s_theta + z||^2) or
    ``sde.likelihood_weighting`` (lambda = g(t)^2, for which the loss bounds the negative
    log-likelihood up to a constant; Song, Durkan, Murray & Ermon 2021). With the likelihood
    weighting the integrand grows like 1/t near t = 0, so the Monte Carlo variance of the
    loss grows like 1/eps.

    ``importance`` draws t from q(t) proportional to g(t)^2 / s(t)^2 instead of uniformly and
    weights each term by lambda(t) / ((1 - eps) q(t)): the same expectation, and with the
    likelihood weighting, whose integrand behaves like g^2 / s^2 (the 1/t growth), a much
    smaller variance (Song, Durkan, Murray & Ermon 2021, Section 5, importance sampling of t).
    q is the exact density of the sampler used (``importance_times``), so the estimate stays
    unbiased whatever the grid.

    Args:
      params: model parameters.
      key: PRNG key for t and the noise.
      batch: (B, ...) data x(0).
      score_fn: ``score_fn(params, x, t) -> like x`` for one example and a scalar time.
      sde: a ``scorejax.sde`` SDE (``VESDE``, ``VPSDE``, ``SubVPSDE``).
      weighting: lambda(sde, t) -> scalar.
      importance: draw t by importance sampling (above) rather than uniformly.
    """
    _check_batch(batch)
    check_sde(sde)
    if not callable(weighting):
        raise TypeError(f"weighting must be a function weighting(sde, t), got {weighting!r}")
    _check_score(score_fn, params, batch, jnp.ones((), batch.dtype))
    scores_at = lambda x_t, t: jax.vmap(score_fn, in_axes=(None, 0, 0))(params, x_t, t)
    return sde_dsm_terms(key, batch, scores_at, sde, weighting, importance)


def sde_dsm_terms(key: Key, batch: Array, scores_at: Callable, sde: SDE,
                  weighting=std_weighting, importance: bool = False) -> Array:  # fmt: skip
    """The Monte Carlo estimate of ``sde_dsm_loss`` given ``scores_at(x_t, t) -> (B, ...)``,
    the model's scores of the whole noised batch: the one place the loss is computed, shared
    by the unconditional loss and the class-conditional one of ``guidance``."""
    key_t, key_z = jax.random.split(key)
    if importance:
        t, density = importance_times(key_t, sde, batch.shape[0], batch.dtype)
        lam = weighting(sde, t) / ((1.0 - sde.eps) * density)
    else:
        t = jax.random.uniform(key_t, (batch.shape[0],), batch.dtype, sde.eps, 1.0)
        lam = weighting(sde, t)
    x_t, z, std = perturb(key_z, sde, batch, t)
    residual = (scores_at(x_t, t) + z / std).reshape(batch.shape[0], -1)
    return 0.5 * jnp.mean(lam * jnp.sum(residual**2, axis=-1))


def perturb(key: Key, sde: SDE, batch: Array, t: Array) -> tuple[Array, Array, Array]:
    """x(t) = m(t) x(0) + s(t) z for a batch with times t (B,): returns (x(t), z, s(t)
    shaped to broadcast against the batch), the SDE's perturbation kernel."""
    mean, std = sde.kernel(t)
    shape = (-1,) + (1,) * (batch.ndim - 1)
    z = jax.random.normal(key, batch.shape, batch.dtype)
    return mean.reshape(shape) * batch + std.reshape(shape) * z, z, std.reshape(shape)


def importance_times(key: Key, sde: SDE, n: int, dtype=jnp.float32, num_grid: int = 1024):
    """n times from q(t) proportional to g(t)^2 / s(t)^2 on [eps, 1], with q at each draw.

    The unnormalised density is integrated by the trapezoid rule on a grid geometric from eps
    to 1 (dense where g^2 / s^2 grows like 1/t) and its CDF inverted by linear interpolation,
    so a draw is uniform within its grid cell: q(t) is returned as that piecewise-constant
    density (the cell's probability over its width), the exact density of these draws. Song,
    Durkan, Murray & Ermon 2021, Section 5.
    """
    u = jnp.linspace(0.0, 1.0, num_grid, dtype=dtype)
    grid = sde.eps * (1.0 / sde.eps) ** u
    density = sde.diffusion(grid) ** 2 / sde.kernel(grid)[1] ** 2
    cells = 0.5 * (density[1:] + density[:-1]) * jnp.diff(grid)
    cdf = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(cells)])
    draws = jax.random.uniform(key, (n,), dtype) * cdf[-1]
    t = jnp.interp(draws, cdf, grid)
    cell = jnp.clip(jnp.searchsorted(cdf, draws, side="right") - 1, 0, num_grid - 2)
    return t, cells[cell] / (cdf[-1] * jnp.diff(grid)[cell])


# --- Score matching without noise: exact (Hyvärinen 2005) and sliced (Song et al. 2019) ---


def _check_projections(num_projections, probe) -> None:
    check_positive_int("num_projections", num_projections)
    if not callable(probe):
        raise ValueError(
            "probe must be a sampler probe(key, shape, dtype) with E[v v^T] = I, such as "
            f"jax.random.normal or jax.random.rademacher; got {probe!r}"
        )


def exact_sm_loss(params: Params, key: Key, batch: Array, *, score_fn: ScoreFn) -> Array:
    """Exact (implicit) score matching (Hyvärinen 2005, Theorem 1).

    J(theta) = E_x [ tr(grad_x s_theta(x)) + 1/2 || s_theta(x) ||^2 ],

    equal to the Fisher divergence 1/2 E || s_theta - grad log p ||^2 minus the constant
    1/2 E || grad log p ||^2. The trace is exact: one forward-mode Jacobian-vector product
    per dimension (``scores.divergence``), so a step costs about D forward passes; for an
    energy model (``score_fn=score_from_energy(energy_fn)``) it is minus the Hessian trace.

    Args:
      params: model parameters.
      key: unused (the loss is deterministic); kept so every loss has the same signature.
      batch: (B, ...) data.
      score_fn: ``score_fn(params, x) -> like x`` for one example.

    Returns:
      The batch mean of tr(grad s) + 1/2 ||s||^2.
    """
    _check_batch(batch)
    _check_score(score_fn, params, batch)
    del key

    def per_example(x):
        s, trace = _value_and_divergence(score_fn, params, x, ())
        return trace + 0.5 * jnp.sum(s**2)

    return jnp.mean(jax.vmap(per_example)(batch))


def _sliced_terms(params, key, batch, score_fn, num_projections, probe):
    """Per example and projection: (v^T J v, 1/2 (v^T s)^2, 1/2 ||s||^2), each (B, M)."""
    v = probe(key, (batch.shape[0], num_projections, *batch.shape[1:]), batch.dtype)

    def per_example(x, vs):
        f = lambda y: score_fn(params, y)
        # the primal s(x) is shared by the M tangents (out_axes None): one pass, M jvps
        s, jv = jax.vmap(lambda u: jax.jvp(f, (x,), (u,)), out_axes=(None, 0))(vs)
        flat_v = vs.reshape(num_projections, -1)
        vjv = jnp.sum(flat_v * jv.reshape(num_projections, -1), axis=-1)
        vs_proj = flat_v @ s.reshape(-1)
        return vjv, 0.5 * vs_proj**2, 0.5 * jnp.sum(s**2) * jnp.ones_like(vjv)

    return jax.vmap(per_example)(batch, v)


def ssm_loss(
    params: Params,
    key: Key,
    batch: Array,
    *,
    score_fn: ScoreFn,
    num_projections: int = 1,
    probe=jax.random.normal,
) -> Array:
    """Sliced score matching (Song, Garg, Shi & Ermon 2019, Section 3).

    J(theta; p_v) = E_x E_v [ v^T grad_x(v^T s_theta(x)) + 1/2 (v^T s_theta(x))^2 ],

    with projections v ~ p_v, E[v v^T] = I, estimated with M = ``num_projections``
    independent projections per example (their unbiased estimator). v^T grad_x(v^T s) =
    v^T J v is one Jacobian-vector product, so a step costs about M + 1 forward passes
    whatever D. It equals ``exact_sm_loss`` in expectation over v (Hutchinson's identity).

    Args:
      params: model parameters.
      key: PRNG key for the projections.
      batch: (B, ...) data.
      score_fn: ``score_fn(params, x) -> like x`` for one example.
      num_projections: M >= 1 projections per example.
      probe: ``probe(key, shape, dtype)``: ``jax.random.normal`` (Gaussian, the default) or
        ``jax.random.rademacher`` (uniform signs, lower variance).

    Returns:
      The mean over the batch and the projections.
    """
    _check_batch(batch)
    _check_projections(num_projections, probe)
    _check_score(score_fn, params, batch)
    vjv, half_proj_sq, _ = _sliced_terms(params, key, batch, score_fn, num_projections, probe)
    return jnp.mean(vjv + half_proj_sq)


def ssm_vr_loss(
    params: Params,
    key: Key,
    batch: Array,
    *,
    score_fn: ScoreFn,
    num_projections: int = 1,
    probe=jax.random.normal,
) -> Array:
    """Sliced score matching with variance reduction, SSM-VR (Song et al. 2019, Section 3).

    J_vr(theta; p_v) = E_x [ E_v v^T grad_x(v^T s_theta(x)) + 1/2 || s_theta(x) ||^2 ]:

    the term 1/2 (v^T s)^2 is replaced by its expectation over v, 1/2 s^T E[v v^T] s =
    1/2 ||s||^2, exact for Gaussian projections (the paper's case) and for any probe with
    E[v v^T] = I, Rademacher included. Same expectation as ``ssm_loss``, smaller variance.

    Args:
      As ``ssm_loss``.

    Returns:
      The mean over the batch and the projections.
    """
    _check_batch(batch)
    _check_projections(num_projections, probe)
    _check_score(score_fn, params, batch)
    vjv, _, half_sq = _sliced_terms(params, key, batch, score_fn, num_projections, probe)
    return jnp.mean(vjv + half_sq)


def cd_loss(
    params: Params,
    key: Key,
    batch: tuple[Array, Array],
    *,
    energy_fn: EnergyFn,
    alpha: float = 0.0,
) -> tuple[Array, dict]:
    """Contrastive-divergence loss with the L2 energy penalty (Hinton 2002; Du & Mordatch 2019).

    L(theta) = mean_i E(x+_i) - mean_j E(sg(x-_j)) + alpha * (mean_i E(x+_i)^2 + mean_j E(x-_j)^2)

    Its gradient is mean grad_theta E(x+) - mean grad_theta E(x-) (+ the penalty's), a Monte
    Carlo estimate of the maximum-likelihood gradient
    grad_theta (-log p(x+)) = grad E(x+) - E_{x ~ p_theta}[grad E(x)] when the negatives x-
    are draws from the model: lower the energy of data, raise that of model samples. With
    negatives from k MCMC steps started at the data it is CD-k (Hinton 2002, Eq. 5); from a
    persistent chain, PCD (Tieleman 2008); for an RBM with ``energy_fn=RBM.free_energy`` it
    is the free-energy gap whose gradient is the (P)CD update with the hidden units summed
    out. ``sg`` is ``stop_gradient``: the sampler is not differentiated through. The
    penalty (Du & Mordatch 2019, Section 3.3) keeps energies near zero, which bounds the
    scale drift that makes EBM training diverge.

    Args:
      params: parameters of ``energy_fn``.
      key: unused (the negatives are drawn by the train step); kept for the loss contract.
      batch: (positives (B, ...), negatives (M, ...)): the data x+ and the samples x-.
      energy_fn: ``energy_fn(params, x) -> ()`` for one example (vmapped here).
      alpha: weight of the L2 energy penalty (>= 0).

    Returns:
      (loss, aux) with aux = {"energy_pos", "energy_neg"} (batch means) and
      "energy_max_abs" (largest |E| over both sets, the divergence signal); ready for
      ``jax.value_and_grad(..., has_aux=True)`` / ``make_train_step(..., has_aux=True)``.
    """
    del key
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise ValueError("batch must be a pair (positives, negatives) of (B, ...) arrays")
    positives, negatives = batch
    _check_batch(positives, "positives")
    _check_batch(negatives, "negatives")
    if np.shape(positives)[1:] != np.shape(negatives)[1:]:
        raise ValueError(
            f"negatives must have the example shape of positives {np.shape(positives)[1:]}, "
            f"got {np.shape(negatives)[1:]}"
        )
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    check_energy_output("energy_fn", lambda x: energy_fn(params, x), positives[0])
    energies = jax.vmap(energy_fn, in_axes=(None, 0))
    energy_pos = energies(params, positives)
    energy_neg = energies(params, jax.lax.stop_gradient(negatives))
    loss = jnp.mean(energy_pos) - jnp.mean(energy_neg)
    loss = loss + alpha * (jnp.mean(energy_pos**2) + jnp.mean(energy_neg**2))
    aux = {
        "energy_pos": jnp.mean(energy_pos),
        "energy_neg": jnp.mean(energy_neg),
        "energy_max_abs": jnp.maximum(jnp.max(jnp.abs(energy_pos)), jnp.max(jnp.abs(energy_neg))),
    }
    return loss, aux
