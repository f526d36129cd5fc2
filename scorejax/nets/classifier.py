"""A LeNet-size digit classifier, the feature extractor of the offline sample-quality metrics.

No Inception network can be downloaded here, so ``scorejax.quality`` trains this small
convolutional classifier on the training split of the digits and measures samples on its
penultimate features (``DigitClassifier.features``) and class probabilities.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.nets import _conv
from scorejax.nets.conditioning import GaussianFourierFeatures
from scorejax.types import Array


class DigitClassifier(nn.Module):
    """LeNet-style convolutional classifier of single-channel digits (LeCun et al. 1998).

    LeNet-5's layout (two convolutions, each followed by 2x2 average subsampling, then dense
    layers), at slightly larger widths, with ReLU and 3x3 kernels:

        x -> conv3x3(widths[0]) -> relu -> avgpool2 -> conv3x3(widths[1]) -> relu -> avgpool2
          -> flatten -> dense(feature_dim) -> relu  (the features)  -> dense(num_classes)
          (the logits)

    'SAME' padding, so 28x28 images go 28 -> 14 -> 7 and 8x8 images 8 -> 4 -> 2. About 0.2M
    parameters at 28x28 and 31k at 8x8 by default. 3x3 kernels and average pooling (LeNet's
    own subsampling) rather than 5x5 and max pooling: on XLA's CPU backend 5x5 kernels on
    one input channel and max pooling's gradient (select-and-scatter) cost several times
    more per step, for no accuracy that matters here. x is one
    image (H, W) or a batch (B, H, W) (a trailing channel axis of size 1 is accepted too);
    the output has a leading batch axis exactly when the input has one.

    ``model.apply(params, x)`` gives the logits, ``model.apply(params, x,
    method=DigitClassifier.features)`` the penultimate features (what the Fréchet
    distance, KID and precision/recall are computed on) and ``method=
    DigitClassifier.features_and_logits`` both from one pass.
    """

    widths: Sequence[int] = (16, 32)
    feature_dim: int = 128
    num_classes: int = 10
    dtype: Any = None

    def setup(self):
        self.convs = [_conv.conv(width, 3, self.dtype) for width in self.widths]
        self.hidden = nn.Dense(self.feature_dim, dtype=self.dtype, param_dtype=jnp.float32)
        self.head = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)

    def features_and_logits(self, x: Array) -> tuple[Array, Array]:
        """(features, logits): the penultimate activations (feature_dim,) and the logits."""
        h, single = _as_batch(x)
        for conv in self.convs:
            h = nn.avg_pool(nn.relu(conv(h)), (2, 2), strides=(2, 2), padding="SAME")
        h = nn.relu(self.hidden(h.reshape(h.shape[0], -1)))
        logits = self.head(h)
        h, logits = h.astype(jnp.float32), logits.astype(jnp.float32)
        return (h[0], logits[0]) if single else (h, logits)

    def features(self, x: Array) -> Array:
        """The penultimate features, (feature_dim,) per image."""
        return self.features_and_logits(x)[0]

    def __call__(self, x: Array) -> Array:
        """The logits, (num_classes,) per image."""
        return self.features_and_logits(x)[1]


class TimeConditionalClassifier(nn.Module):
    """The classifier of classifier guidance: ``DigitClassifier``'s layout with the time t
    of a score SDE as a second input, logits of p_t(y | x(t)) (Song et al. 2021, Appendix
    I.1; Dhariwal & Nichol 2021 use the U-Net's encoder the same way).

    The Gaussian Fourier features of t (``GaussianFourierFeatures``, as in the U-Net) pass
    through a dense layer per convolution and are added to its output before the ReLU.
    ``model.apply(params, x, t)``: one image (H, W) with a scalar t, or a batch (B, H, W)
    with t of shape (B,); logits (num_classes,) per image. Train it on noised data with
    ``guidance.noisy_classifier_loss``.
    """

    widths: Sequence[int] = (16, 32)
    feature_dim: int = 128
    num_classes: int = 10
    num_features: int = 16
    scale: float = 16.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, t: Array) -> Array:
        h, single = _as_batch(x)
        if jnp.shape(t) != (() if single else h.shape[:1]):
            raise ValueError(
                "t must be a scalar for one image (H, W) and of shape (B,) for a batch (B, H, W), "
                f"got x of shape {x.shape} and t of shape {jnp.shape(t)}"
            )
        t_batch = jnp.reshape(jnp.asarray(t, jnp.float32), (-1,))
        emb = GaussianFourierFeatures(self.num_features, self.scale)(t_batch)
        dense = lambda width: nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32)
        for width in self.widths:
            h = _conv.conv(width, 3, self.dtype)(h) + dense(width)(emb)[:, None, None, :]
            h = nn.avg_pool(nn.relu(h), (2, 2), strides=(2, 2), padding="SAME")
        h = nn.relu(dense(self.feature_dim)(h.reshape(h.shape[0], -1)))
        logits = dense(self.num_classes)(h).astype(jnp.float32)
        return logits[0] if single else logits


def _as_batch(x: Array) -> tuple[Array, bool]:
    """One image (H, W) or a batch (B, H, W) (a trailing channel of 1 accepted) as a
    (B, H, W, 1) batch, and whether it was one image."""
    if x.ndim in (3, 4) and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be one image (H, W) or a batch (B, H, W), got {x.shape}")
    single = x.ndim == 2
    return (x[None] if single else x)[..., None], single
