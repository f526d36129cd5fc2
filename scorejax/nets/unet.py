"""A noise- or time-conditional U-Net for small single-channel images (28x28 and 8x8 digits).

The architecture, small, from the papers:

- the U-Net of Ronneberger et al. 2015: an encoder that halves the resolution level by
  level, a decoder that doubles it back, and at each level a skip connection that
  concatenates the encoder's features to the decoder's;
- the residual block of Ho et al. 2020 (DDPM, Appendix B, after Zagoruyko & Komodakis
  2016): GroupNorm (Wu & He 2018), SiLU, 3x3 convolution, the condition embedding added
  between the two convolutions, a 1x1 convolution on the shortcut when the width changes;
- from Song et al. 2021 (NCSN++/DDPM++, Appendix H): Gaussian Fourier features of the
  condition, residual sums rescaled by 1/sqrt(2), the output divided by the noise std for
  VE-type models (``std_scaled_output``, NCSNv2's Technique 3), and one self-attention
  block at the coarsest resolution.

One module serves the NCSN loss and the SDE losses: with ``sde=None`` the condition c is
sigma (the embedding sees log sigma), with an SDE it is the time t; the output becomes a
score through ``parametrisation(sde, output, x, c)`` (``nets.conditioning``).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.nets import _conv
from scorejax.nets.conditioning import GaussianFourierFeatures, std_scaled_output
from scorejax.types import Array

# Default sizes (parameter counts from ``parameter_count``; tests/test_unet.py checks them)
CPU_WIDTHS = (32, 64, 64)  # 28x28 -> 14x14 -> 7x7, about 0.45M parameters
GPU_WIDTHS = (48, 96, 96)  # 28x28, about 1.0M parameters
DIGITS_WIDTHS = (32, 64)  # 8x8 -> 4x4, about 0.2M parameters


def num_groups(width: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """GroupNorm's group count for ``width`` channels: the largest divisor of ``width`` that
    keeps at least ``min_group_size`` channels per group and at most ``max_groups`` groups
    (DDPM's 32 groups at its widths of 128 and more; 2 groups of 4 at width 8, 1 below)."""
    limit = max(1, min(max_groups, width // min_group_size))
    return max(g for g in range(1, limit + 1) if width % g == 0)


class ResidualBlock(nn.Module):
    """DDPM's residual block (Ho et al. 2020, Appendix B) with NCSN++'s skip rescaling:

        h = conv3(silu(GN(x)));  h = h + Dense(silu(emb));  h = conv3(silu(GN(h)))
        out = (shortcut(x) + h) / sqrt(2)

    with shortcut a 1x1 convolution when the width changes (the identity otherwise).
    x is (B, H, W, C), emb (B, E).
    """

    width: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, emb: Array) -> Array:
        conv = lambda width, size: _conv.conv(width, size, self.dtype)
        norm = lambda width: nn.GroupNorm(
            num_groups(width), dtype=self.dtype, param_dtype=jnp.float32
        )
        h = conv(self.width, 3)(nn.silu(norm(x.shape[-1])(x)))
        shift = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32)(nn.silu(emb))
        h = h + shift[:, None, None, :]
        h = conv(self.width, 3)(nn.silu(norm(self.width)(h)))
        shortcut = x if x.shape[-1] == self.width else conv(self.width, 1)(x)
        return (shortcut + h) / math.sqrt(2.0)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels (Vaswani et al. 2017; DDPM's attention
    block at 16x16, here at the coarsest level):

        q, k, v = GN(x) W_q, GN(x) W_k, GN(x) W_v
        out = (x + softmax(q k^T / sqrt(C)) v W_o) / sqrt(2)
    """

    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        dense = lambda: nn.Dense(channels, dtype=self.dtype, param_dtype=jnp.float32)
        h = nn.GroupNorm(num_groups(channels), dtype=self.dtype, param_dtype=jnp.float32)(x)
        h = h.reshape(batch, height * width, channels)
        q, k, v = dense()(h), dense()(h), dense()(h)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(channels)
        weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        h = dense()(jnp.einsum("bqk,bkc->bqc", weights, v))
        return (x + h.reshape(x.shape)) / math.sqrt(2.0)


class UNet(nn.Module):
    """Noise- or time-conditional U-Net score network s_theta(x, c) for images.

    Per level l (resolution halved from one level to the next by 2x2 average pooling):
    ``blocks_per_level`` residual blocks of width ``widths[l]``; self-attention after the
    last level's blocks when ``attention``. The decoder goes back up: nearest-neighbour
    upsampling and a 3x3 convolution, concatenation with the encoder's features of that
    level (the skip connection), ``blocks_per_level`` residual blocks of width
    ``widths[l]``. Then GN, SiLU and a 3x3 convolution back to the input's channels.

    The condition c enters every residual block: emb = MLP(GFF(c')) with GFF the Gaussian
    Fourier features (Song et al. 2021, Appendix H), c' = log sigma when ``sde`` is None
    (noise-conditional, NCSN: c is sigma) and c' = t otherwise (c is the SDE's time), and
    MLP two Dense layers of width 4 ``widths[0]`` with a SiLU between (DDPM's embedding).
    The network's output becomes a score through ``parametrisation(sde, output, x, c)``
    (``std_scaled_output`` by default: output / sigma, or output / s(t); NCSNv2's
    Technique 3); a DDPM-style noise predictor is ``parametrisation=epsilon_output`` with a
    ``VPSDE``.

    Takes one image x of shape (H, W) or (H, W, C) with a scalar condition, or a batch
    (B, H, W) or (B, H, W, C) with conditions (B,); returns the score shaped like x (float32).
    H and W must be divisible by 2^(len(widths) - 1): 28x28 with three levels
    (28 -> 14 -> 7), 8x8 with two or three (8 -> 4 -> 2). ``apply_fn(model)`` is then a
    ``score_fn(params, x, sigma)`` for ``ncsn_loss`` and annealed Langevin, or a
    ``score_fn(params, x, t)`` for ``sde_dsm_loss`` and the reverse samplers.

    Sizes: ``CPU_WIDTHS`` (28x28, a few hundred thousand parameters), ``GPU_WIDTHS``
    (28x28, about a million) and ``DIGITS_WIDTHS`` (8x8); ``parameter_count`` and ``flops``
    (``nets.apply``) measure a setting.

    Attributes:
      widths: channels per level, finest first.
      blocks_per_level: residual blocks per level, in the encoder and in the decoder.
      attention: self-attention at the coarsest level.
      num_features: Gaussian Fourier features of the condition (sin and cos of each).
      scale: their frequency scale.
      sde: the SDE of a time-conditional model, or None for a noise-conditional one.
      parametrisation: ``parametrisation(sde, output, x, c) -> score``.
      num_classes: C > 0 makes the network class-conditional, ``model.apply(params, x, c,
        label)``: a learned embedding of the label (C + 1 rows, row C the null class of
        classifier-free guidance, Ho & Salimans 2021) is added to the condition's embedding.
        0 (default): unconditional, no label.
      dtype: computation dtype (parameters and output stay float32).
    """

    widths: Sequence[int] = CPU_WIDTHS
    blocks_per_level: int = 1
    attention: bool = True
    num_features: int = 16
    scale: float = 16.0
    sde: Any = None
    parametrisation: Callable = std_scaled_output
    num_classes: int = 0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, c: Array, label: Array | None = None) -> Array:
        name = "sigma" if self.sde is None else "t"
        images, c_batch = _as_batch(x, c, name, len(self.widths))
        if self.sde is None:
            c_batch = jnp.log(c_batch)
        emb = GaussianFourierFeatures(self.num_features, self.scale)(c_batch)
        dense = lambda width: nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32)
        emb = dense(4 * self.widths[0])(nn.silu(dense(4 * self.widths[0])(emb)))
        emb = emb + self._label_embedding(label, jnp.shape(c), 4 * self.widths[0])

        conv = lambda width: _conv.conv(width, 3, self.dtype)
        h = conv(self.widths[0])(images)
        skips = []
        for level, width in enumerate(self.widths):
            if level > 0:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
            for _ in range(self.blocks_per_level):
                h = ResidualBlock(width, self.dtype)(h, emb)
            skips.append(h)
        if self.attention:
            h = SelfAttention(self.dtype)(h)
        for level in reversed(range(len(self.widths) - 1)):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest neighbour
            h = conv(h.shape[-1])(h)
            h = jnp.concatenate([h, skips[level]], axis=-1)
            for _ in range(self.blocks_per_level):
                h = ResidualBlock(self.widths[level], self.dtype)(h, emb)
        h = nn.GroupNorm(num_groups(h.shape[-1]), dtype=self.dtype, param_dtype=jnp.float32)(h)
        out = conv(images.shape[-1])(nn.silu(h)).astype(jnp.float32)
        out = out.reshape(x.shape)
        return self.parametrisation(self.sde, out, x, jnp.asarray(c, jnp.float32))

    def _label_embedding(self, label, c_shape, width: int):
        """The class label's embedding (B, width), or 0 for an unconditional network."""
        if self.num_classes == 0:
            if label is not None:
                raise ValueError("label given to an unconditional UNet (num_classes=0)")
            return 0.0
        if label is None or jnp.shape(label) != c_shape:
            shape = None if label is None else jnp.shape(label)
            raise ValueError(f"label must be shaped like the condition, {c_shape}, got {shape}")
        table = nn.Embed(self.num_classes + 1, width, param_dtype=jnp.float32, dtype=self.dtype)
        return table(jnp.reshape(jnp.asarray(label, jnp.int32), (-1,)))


def _as_batch(x: Array, c, name: str, num_levels: int) -> tuple[Array, Array]:
    """x as a (B, H, W, C) batch and c as (B,), after checking the shapes: one image (H, W)
    or (H, W, C) with a scalar condition, or a batch (B, H, W) or (B, H, W, C) with (B,)."""
    c_shape = jnp.shape(c)
    if c_shape == ():
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x must be one image (H, W) or (H, W, C) with a scalar {name}, got x of "
                f"shape {x.shape} (for a batch, pass {name} of shape (B,) or use jax.vmap)"
            )
        images, c_batch = x.reshape(1, *x.shape[:2], -1), jnp.reshape(c, (1,))
    elif len(c_shape) == 1:
        if x.ndim not in (3, 4) or x.shape[0] != c_shape[0]:
            raise ValueError(
                f"a batch x must be (B, H, W) or (B, H, W, C) with {name} of shape (B,), got "
                f"x of shape {x.shape} and {name} of shape {c_shape}"
            )
        images, c_batch = x.reshape(*x.shape[:3], -1), c
    else:
        raise ValueError(f"{name} must be a scalar or of shape (B,), got shape {c_shape}")
    factor = 2 ** (num_levels - 1)
    height, width = images.shape[1:3]
    if height % factor or width % factor:
        raise ValueError(
            f"x's height and width must be divisible by 2^(levels - 1) = {factor} for "
            f"{num_levels} levels (widths), got {height}x{width}"
        )
    return images, jnp.asarray(c_batch, jnp.float32)
