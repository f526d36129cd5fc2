"""Multi-layer perceptrons: energies, scores, and noise- or time-conditional scores for flat
data."""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.nets.conditioning import GaussianFourierFeatures, score_output, sigma_embedding
from scorejax.types import Array


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
        _check_flat("NoiseConditionalMLP", x, sigma, "sigma")
        sigma = jnp.asarray(sigma, jnp.float32)[..., None]
        emb = sigma_embedding(sigma[..., 0], self.num_frequencies)
        return _mlp_with_embedding(self, x, emb) / sigma


def _check_flat(model: str, x: Array, c, name: str) -> None:
    """A conditional MLP takes one flat example x (D,) with a scalar condition, or a batch
    (B, D) with conditions (B,)."""
    if x.ndim != jnp.ndim(c) + 1:
        raise ValueError(
            f"{model} takes a flat example x (D,) with a scalar {name}, or a batch (B, D) with "
            f"{name} (B,); got x {x.shape} and {name} {jnp.shape(c)} (flatten images with "
            "x.reshape(-1), or use a convolutional network)"
        )


def _mlp_with_embedding(module: nn.Module, x: Array, emb: Array) -> Array:
    """MLP([x, emb]) -> R^D with the module's hidden, activation and dtype, the embedding
    broadcast over x's batch axis (called inside the module's compact ``__call__``)."""
    emb = jnp.broadcast_to(emb, (*x.shape[:-1], emb.shape[-1]))
    mlp = MLP(module.hidden, x.shape[-1], module.activation, module.dtype)
    return mlp(jnp.concatenate([x, emb], axis=-1))


class TimeConditionalMLP(nn.Module):
    """Time-conditional score s_theta(x, t) for flat data: an MLP of [x, emb(t)] whose output
    is converted to a score by ``parametrisation`` (``score_output``, ``std_scaled_output``,
    ``epsilon_output``, ``data_output``; the last three need ``sde``), with ``emb`` the
    Gaussian Fourier features of t (Song et al. 2021, Appendix H).

    Takes one example x (D,) with a scalar t, or a batch (B, D) with t (B,), and returns a
    score shaped like x: ``apply_fn(model)`` is a ``score_fn(params, x, t)`` for
    ``sde_dsm_loss`` and the reverse samplers. Image networks take the same
    ``parametrisation`` and ``sde`` fields, so the samplers see the same contract.
    """

    hidden: Sequence[int] = (128, 128)
    activation: Callable = nn.silu
    num_features: int = 16
    scale: float = 16.0
    sde: Any = None
    parametrisation: Callable = score_output
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        _check_flat("TimeConditionalMLP", x, t, "t")
        if self.parametrisation is not score_output and self.sde is None:
            raise ValueError(f"{self.parametrisation.__name__} needs the model's sde")
        emb = GaussianFourierFeatures(self.num_features, self.scale)(t)
        out = _mlp_with_embedding(self, x, emb)
        return self.parametrisation(self.sde, out, x, jnp.asarray(t, jnp.float32))
