"""The one seam between a Flax module and the rest of scorejax, and mixed precision.

``apply_fn(model)`` is the only bridge (docs/design.md §10): it returns
``fn(params, x, *args) = model.apply(params, x, *args)`` in the
library's one-example form, so losses and samplers never import Flax. Parameters are a
plain pytree. ``parameter_count`` and ``flops`` measure a network's size and cost.
"""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


def parameter_count(params) -> int:
    """The number of scalars in a parameter pytree (every leaf, trainable or not); leaves may
    be arrays or shapes (``jax.eval_shape(model.init, ...)`` counts without computing)."""
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params)))


def flops(fn: Callable, *args) -> float:
    """Floating-point operations of one call ``fn(*args)``, from XLA's cost analysis of the
    compiled program (``jax.jit(fn).lower(*args).compile().cost_analysis()``).

    XLA counts what it compiles: a multiply-add is 2 flops, elementwise operations count
    too, and fused or simplified work is counted as compiled. NaN where the backend gives
    no estimate (the analysis is None, or has no ``flops`` entry); a list of analyses (one
    per program, as older JAX returns) is summed.
    """
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if analysis is None:
        return float("nan")
    if isinstance(analysis, dict):
        analysis = [analysis]
    counts = [a["flops"] for a in analysis if a and "flops" in a]
    return float(sum(counts)) if counts else float("nan")
