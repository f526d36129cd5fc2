"""Score-matching and contrastive losses as plain functions.

Every loss has the form ``loss(params, key, batch, *, score_fn, ...) -> scalar`` with
``batch: (B, D)``; bind the keywords with ``functools.partial`` and hand the result to
``make_train_step``. ``score_fn(params, x[, sigma])`` sees one example and is vmapped here.
For an energy-parameterised model pass ``score_fn=score_from_energy(energy_fn)``: the
same losses then train E through its score -grad_x E.
"""

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_decreasing, check_positive, check_positive_int
from scorejax.types import Array, Key, Params, ScoreFn


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Array:
    """Geometric noise ladder sigma_1 > ... > sigma_L (Song & Ermon 2019, Section 4.2)."""
    check_positive("sigma_max", sigma_max)
    check_positive("sigma_min", sigma_min)
    check_positive_int("num_levels", num_levels)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
    return jnp.asarray(np.geomspace(sigma_max, sigma_min, num_levels), dtype=jnp.float32)


def _check_batch(batch) -> None:
    if np.ndim(batch) < 2:
        raise ValueError(f"batch must have shape (B, ...) with a batch axis, got {np.shape(batch)}")


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
    key_level, key_noise = jax.random.split(key)
    level = jax.random.randint(key_level, (batch.shape[0],), 0, sigmas.shape[0])
    sigma = sigmas[level]
    sigma_b = sigma.reshape((-1,) + (1,) * (batch.ndim - 1))
    z = jax.random.normal(key_noise, batch.shape, batch.dtype)
    scores = jax.vmap(score_fn, in_axes=(None, 0, 0))(params, batch + sigma_b * z, sigma)
    residual = (sigma_b * scores + z).reshape(batch.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def cd_loss(
    params: Params,
    batch: Array,
    negatives: Array,
    *,
    energy_fn,
    alpha: float = 0.0,
) -> tuple[Array, dict]:
    """Contrastive-divergence loss with the L2 energy penalty (Hinton 2002; Du & Mordatch 2019).

    L(theta) = mean_i E(x+_i) - mean_j E(sg(x-_j)) + alpha * (mean_i E(x+_i)^2 + mean_j E(x-_j)^2)

    Its gradient is mean grad_theta E(x+) - mean grad_theta E(x-) (+ the penalty's), a Monte
    Carlo estimate of the maximum-likelihood gradient
    grad_theta (-log p(x+)) = grad E(x+) - E_{x ~ p_theta}[grad E(x)] when the negatives x-
    are draws from the model: lower the energy of data, raise that of model samples. With
    negatives from k MCMC steps started at the data it is CD-k (Hinton 2002, Eq. 5); from a
    persistent chain, PCD (Tieleman 2008). ``sg`` is ``stop_gradient``: the sampler is not
    differentiated through. The penalty (Du & Mordatch 2019, Section 3.3) keeps energies
    near zero, which bounds the scale drift that makes EBM training diverge.

    Args:
      params: parameters of ``energy_fn``.
      batch: (B, ...) data x+.
      negatives: (M, ...) negative samples x-.
      energy_fn: ``energy_fn(params, x) -> ()`` for one example (vmapped here).
      alpha: weight of the L2 energy penalty (>= 0).

    Returns:
      (loss, aux) with aux = {"energy_pos", "energy_neg"} (batch means) and
      "energy_max_abs" (largest |E| over both sets, the divergence signal); ready for
      ``jax.value_and_grad(..., has_aux=True)`` / ``make_train_step(..., has_aux=True)``.
    """
    _check_batch(batch)
    _check_batch(negatives)
    if np.shape(batch)[1:] != np.shape(negatives)[1:]:
        raise ValueError(
            f"negatives must have the example shape of batch {np.shape(batch)[1:]}, "
            f"got {np.shape(negatives)[1:]}"
        )
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    energies = jax.vmap(energy_fn, in_axes=(None, 0))
    energy_pos = energies(params, batch)
    energy_neg = energies(params, jax.lax.stop_gradient(negatives))
    loss = jnp.mean(energy_pos) - jnp.mean(energy_neg)
    loss = loss + alpha * (jnp.mean(energy_pos**2) + jnp.mean(energy_neg**2))
    aux = {
        "energy_pos": jnp.mean(energy_pos),
        "energy_neg": jnp.mean(energy_neg),
        "energy_max_abs": jnp.maximum(jnp.max(jnp.abs(energy_pos)), jnp.max(jnp.abs(energy_neg))),
    }
    return loss, aux
