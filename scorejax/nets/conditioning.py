"""Conditioning of score networks on the noise level: embeddings of sigma (NCSN) or of t
(score SDEs), and the output parametrisations that turn a network's output into a score, in
one place (docs/design.md §20).

A parametrisation is ``parametrisation(sde, output, x, c) -> score`` with the perturbation
kernel x(c) = m x(0) + s z of the condition c: ``sde.kernel(t)`` for an SDE-conditioned
network (c = t), and m = 1, s = sigma for a noise-conditional one (``sde=None``, c = sigma:
NCSN's x + sigma z, the VE kernel indexed by sigma instead of t).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from scorejax.types import Array


def sigma_embedding(sigma: Array, num_frequencies: int = 8) -> Array:
    """Fourier features of log sigma: (sin(2^k log sigma), cos(2^k log sigma)), k < F."""
    log_sigma = jnp.log(jnp.asarray(sigma, jnp.float32))[..., None]
    angles = log_sigma * (2.0 ** jnp.arange(num_frequencies))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020; the time embedding of Song et
    al. 2021): [sin(2 pi w t), cos(2 pi w t)] with w ~ N(0, scale^2), ``num_features`` of
    each, drawn at ``init`` and never trained (stop_gradient, so optimisers leave them at
    their initial values unless they decay weights)."""

    num_features: int = 16
    scale: float = 16.0

    @nn.compact
    def __call__(self, t: Array) -> Array:
        init = lambda key, shape: self.scale * jax.random.normal(key, shape, jnp.float32)
        w = jax.lax.stop_gradient(self.param("w", init, (self.num_features,)))
        angles = 2.0 * jnp.pi * jnp.asarray(t, jnp.float32)[..., None] * w
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


# --- output parametrisations of a time-conditional network, converted to a score in one
# place: ``parametrisation(sde, output, x, t) -> score`` with the kernel x(t) = m x(0) + s z


def _kernel_like(sde, t: Array, x: Array) -> tuple[Array, Array]:
    """(m, s) of the condition t (an SDE time, or sigma when sde is None) shaped to broadcast
    against x (t scalar for one example, (B,) for a batch)."""
    if sde is None:  # noise-conditional: t is sigma, x(sigma) = x(0) + sigma z
        mean, std = jnp.ones_like(t), jnp.asarray(t, jnp.float32)
    else:
        mean, std = sde.kernel(t)
    shape = jnp.shape(t) + (1,) * (x.ndim - jnp.ndim(t))
    return jnp.reshape(mean, shape), jnp.reshape(std, shape)


def score_output(sde, output: Array, x: Array, t: Array) -> Array:
    """The network outputs the score itself."""
    del sde, x, t
    return output


def std_scaled_output(sde, output: Array, x: Array, t: Array) -> Array:
    """score = output / s(t): the unit-scale output of score_sde's VE models (NCSNv2's
    Technique 3 in continuous time), since ||grad log p_t|| grows like 1 / s(t)."""
    return output / _kernel_like(sde, t, x)[1]


def epsilon_output(sde, output: Array, x: Array, t: Array) -> Array:
    """The network predicts the noise z of x(t) = m x(0) + s z (DDPM's epsilon-network, Ho et
    al. 2020): score = -epsilon / s(t), the same denoising model in other notation (the
    DSM optimum is E[z | x(t)] = -s grad log p_t)."""
    return -output / _kernel_like(sde, t, x)[1]


def data_output(sde, output: Array, x: Array, t: Array) -> Array:
    """The network predicts x(0) (Tweedie's E[x(0) | x(t)]): score = (m x0_hat - x) / s^2,
    Tweedie's formula solved for the score (Efron 2011)."""
    mean, std = _kernel_like(sde, t, x)
    return (mean * output - x) / std**2
