"""The one seam between a Flax module and the rest of scorejax, and mixed precision.

``apply_fn(model)`` is the only bridge (docs/design.md §10): it returns
``fn(params, x, *args) = model.apply(params, x, *args)`` in the
library's one-example form, so losses and samplers never import Flax. Parameters are a
plain pytree.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scorejax.types import EnergyFn, ScoreFn


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
