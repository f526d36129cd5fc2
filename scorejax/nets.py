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


def mixed_precision(model: nn.Module, dtype: Any = jnp.bfloat16) -> nn.Module:
    """The same module computing in ``dtype`` (bfloat16 by default), parameters left in float32.

    Mixed precision as in Micikevicius et al. 2018: parameters, their gradients, optimiser
    state, sampler state and loss reductions stay float32; inside the network the inputs
    and a bfloat16 copy of each weight matrix meet in bfloat16 matmuls and activations, and
    the output is cast back to float32. The parameters of ``model`` and of the returned
    module are interchangeable (same tree, same float32 leaves), so one can train in
    float32 and sample in bfloat16 or the other way round.

    Accuracy: bfloat16 keeps 8 significant bits (unit roundoff u = 2^-8 ~ 3.9e-3); for the
    MLPs here the relative error of the output is a few u (tests/test_mixed_precision.py
    states and checks the bound). On CPUs without native bfloat16 it is slower than
    float32; it pays on GPUs and TPUs (tensor cores) at large batch.

    Args:
      model: a scorejax network (any module with a ``dtype`` field).
      dtype: the compute dtype.
    """
    if not hasattr(model, "dtype"):
        raise ValueError(f"model must have a dtype field, got {type(model).__name__}")
    return model.clone(dtype=dtype)
