"""Flax Linen networks and the one seam between a module and the rest of scorejax.

``apply_fn(model)`` is the only bridge (docs/design.md §10): it returns
``fn(params, x, *args) = model.apply(params, x, *args)`` in the
library's one-example form, so losses and samplers never import Flax. Parameters are a
plain pytree.

Every module takes ``dtype``, the computation dtype (``jnp.bfloat16`` for mixed precision);
parameters stay float32 (``param_dtype``) and outputs are cast back to float32.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
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
    """(m(t), s(t)) shaped to broadcast against x (t scalar for one example, (B,) for a batch)."""
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


def apply_fn(model: nn.Module) -> EnergyFn | ScoreFn:
    """The module as a library function ``fn(params, x, *args) = model.apply(params, x, *args)``.

    An ``MLPEnergy`` becomes an ``energy_fn``, an ``MLPScore``, ``NoiseConditionalMLP`` or
    ``TimeConditionalMLP`` a ``score_fn``; batching is ``jax.vmap`` at the call site, as
    for analytic targets.
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
        y = jax.lax.conv_general_dilated(
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
