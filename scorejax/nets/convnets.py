"""Convolutional energies for images, with optional spectral normalisation."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scorejax.nets._conv import conv_general_dilated
from scorejax.types import Array


def spectral_normalise(kernel: Array, num_iterations: int = 20) -> Array:
    """kernel / sigma_max(W), W the kernel reshaped to (fan_in, out) (Miyato et al. 2018, Eq. 8).

    sigma = u^T W v from ``num_iterations`` power iterations started at a fixed vector, with
    u and v held constant under differentiation (Miyato et al. 2018, Algorithm 1). Stateless:
    the iteration restarts at every call instead of carrying u in a mutable collection, so
    an energy stays a pure ``energy_fn(params, x)``. For a convolution the reshaped-kernel
    norm bounds the operator norm up to a factor of the kernel size (as in the paper).
    """
    w = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)
    v = jnp.ones((w.shape[1],), jnp.float32) / jnp.sqrt(w.shape[1])

    def body(_, v):
        u = w @ v
        u = u / (jnp.linalg.norm(u) + 1e-12)
        v = w.T @ u
        return v / (jnp.linalg.norm(v) + 1e-12)

    v = jax.lax.stop_gradient(jax.lax.fori_loop(0, num_iterations, body, v))
    u = jax.lax.stop_gradient(w @ v / (jnp.linalg.norm(w @ v) + 1e-12))
    sigma = u @ w @ v
    return kernel / sigma


class _Conv3x3(nn.Module):
    """A 3x3 'SAME' convolution, optionally spectrally normalised."""

    features: int
    spectral_norm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.spectral_norm:
            kernel = spectral_normalise(kernel)
        dtype = self.dtype or jnp.float32
        y = conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias.astype(dtype)


class ResNetEnergy(nn.Module):
    """A small convolutional ResNet energy E_theta(x) for images (SiLU activations).

    x (H, W) or (H, W, C) -> conv3x3 -> per stage: ``blocks_per_stage`` residual blocks
    h + conv(silu(conv(silu(h)))) then 2x2 average pooling (not after the last stage) ->
    spatial sum -> silu -> dense -> scalar. Two stages suit 8x8 digits (8 -> 4); three suit
    28x28 MNIST (28 -> 14 -> 7). SiLU, being
    smooth, gives Langevin a continuous score (Du & Mordatch 2019 use Swish for this reason).

    ``spectral_norm`` divides each convolution kernel by its spectral norm
    (``spectral_normalise``, stateless power iteration; flax.linen.SpectralNorm instead keeps
    u in a mutable ``batch_stats`` collection updated under ``mutable=['batch_stats']``,
    which the pure ``energy_fn(params, x)`` seam would have to thread through every sampler
    step).
    """

    widths: Sequence[int] = (32, 64)
    blocks_per_stage: int = 1
    spectral_norm: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise ValueError(f"x must be one image (H, W) or (H, W, C), got shape {x.shape}")
        h = _Conv3x3(self.widths[0], self.spectral_norm, self.dtype)(x[None])
        for stage, width in enumerate(self.widths):
            if h.shape[-1] != width:
                h = _Conv3x3(width, self.spectral_norm, self.dtype)(nn.silu(h))
            for _ in range(self.blocks_per_stage):
                r = _Conv3x3(width, self.spectral_norm, self.dtype)(nn.silu(h))
                r = _Conv3x3(width, self.spectral_norm, self.dtype)(nn.silu(r))
                h = h + r
            if stage < len(self.widths) - 1:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = nn.silu(jnp.sum(h, axis=(1, 2)))
        out = nn.Dense(1, dtype=self.dtype, param_dtype=jnp.float32)(h)
        return out[0, 0].astype(jnp.float32)
