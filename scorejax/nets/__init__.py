"""Flax Linen networks and the one seam between a module and the rest of scorejax.

``apply_fn(model)`` is the only bridge (docs/design.md §10): it returns
``fn(params, x, *args) = model.apply(params, x, *args)`` in the library's one-example form,
so losses and samplers never import Flax. Parameters are a plain pytree.

Every module takes ``dtype``, the computation dtype (``jnp.bfloat16`` for mixed precision);
parameters stay float32 (``param_dtype``) and outputs are cast back to float32.

Modules: ``mlp`` (flat data), ``convnets`` (image energies), ``unet`` (image scores),
``classifier`` (the in-project digit classifier of the sample-quality metrics),
``conditioning`` (embeddings of sigma and t, output parametrisations), ``apply`` (the seam).
"""

from scorejax.nets.apply import apply_fn, flops, mixed_precision, parameter_count
from scorejax.nets.classifier import DigitClassifier, TimeConditionalClassifier
from scorejax.nets.conditioning import (
    GaussianFourierFeatures,
    data_output,
    epsilon_output,
    score_output,
    sigma_embedding,
    std_scaled_output,
)
from scorejax.nets.convnets import ResNetEnergy, spectral_normalise
from scorejax.nets.mlp import (
    MLP,
    MLPEnergy,
    MLPScore,
    NoiseConditionalMLP,
    TimeConditionalMLP,
)
from scorejax.nets.unet import (
    CPU_WIDTHS,
    DIGITS_WIDTHS,
    GPU_WIDTHS,
    UNet,
)

__all__ = [
    "CPU_WIDTHS",
    "DIGITS_WIDTHS",
    "GPU_WIDTHS",
    "MLP",
    "DigitClassifier",
    "GaussianFourierFeatures",
    "MLPEnergy",
    "MLPScore",
    "NoiseConditionalMLP",
    "ResNetEnergy",
    "TimeConditionalClassifier",
    "TimeConditionalMLP",
    "UNet",
    "apply_fn",
    "data_output",
    "epsilon_output",
    "flops",
    "mixed_precision",
    "parameter_count",
    "score_output",
    "sigma_embedding",
    "spectral_normalise",
    "std_scaled_output",
]
