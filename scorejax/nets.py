"""Flax Linen networks and the one seam between a module and the rest of scorejax.

``apply_fn(model)`` is the only bridge (DESIGN §10): it returns
``fn(params, x, *args) = model.apply(params, x, *args)`` in the
library's one-example form, so losses and samplers never import Flax. Parameters are a
plain pytree.

Every module takes ``dtype``, the computation dtype (``jnp.bfloat16`` for mixed precision);
parameters stay float32 (``param_dtype``) and outputs are cast back to float32.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.types import Array, EnergyFn, ScoreFn


class MLP(nn.Module):
    """Dense layers with an activation between them and a linear output of ``out_dim``."""

    hidden: Sequence[int] = (128, 128)
    out_dim: int = 1
    activation: Callable = nn.silu
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for width in self.hidden:
            x = self.activation(nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32)(x))
        out = nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return out.astype(jnp.float32)


class MLPScore(nn.Module):
    """Score network s_theta(x): an MLP from R^D to R^D."""

    hidden: Sequence[int] = (128, 128)
    activation: Callable = nn.silu
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return MLP(self.hidden, x.shape[-1], self.activation, self.dtype)(x)


class MLPEnergy(nn.Module):
    """Energy network E_theta(x): an MLP from R^D to a scalar."""

    hidden: Sequence[int] = (128, 128)
    activation: Callable = nn.silu
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return MLP(self.hidden, 1, self.activation, self.dtype)(x)[..., 0]


def sigma_embedding(sigma: Array, num_frequencies: int = 8) -> Array:
    """Fourier features of log sigma: (sin(2^k log sigma), cos(2^k log sigma)), k < F."""
    log_sigma = jnp.log(jnp.asarray(sigma, jnp.float32))[..., None]
    angles = log_sigma * (2.0 ** jnp.arange(num_frequencies))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class NoiseConditionalMLP(nn.Module):
    """Noise-conditional score s_theta(x, sigma) = MLP([x, emb(log sigma)]) / sigma.

    Dividing the unconditional output by sigma follows NCSNv2 (Song & Ermon 2020,
    Technique 3): the true score's norm scales like 1/sigma, so the network learns an
    O(1) quantity at every level.
    """

    hidden: Sequence[int] = (128, 128)
    activation: Callable = nn.silu
    num_frequencies: int = 8
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, sigma: Array) -> Array:
        # sigma is a scalar for one example, or (B,) beside a batch x of shape (B, D)
        sigma = jnp.asarray(sigma, jnp.float32)[..., None]
        emb = sigma_embedding(sigma[..., 0], self.num_frequencies)
        emb = jnp.broadcast_to(emb, (*x.shape[:-1], emb.shape[-1]))
        out = MLP(self.hidden, x.shape[-1], self.activation, self.dtype)(
            jnp.concatenate([x, emb], axis=-1)
        )
        return out / sigma


def apply_fn(model: nn.Module) -> EnergyFn | ScoreFn:
    """The module as a library function ``fn(params, x, *args) = model.apply(params, x, *args)``.

    An ``MLPEnergy`` becomes an ``energy_fn``, an ``MLPScore`` or ``NoiseConditionalMLP`` a
    ``score_fn``; batching is ``jax.vmap`` at the call site, as for analytic targets.
    """
    return lambda params, x, *args: model.apply(params, x, *args)
