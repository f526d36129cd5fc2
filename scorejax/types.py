"""Type aliases shared across scorejax.

Shapes are written in the docstrings (``x: (D,)``); these aliases name the roles so
signatures read like the papers, and say which form a function takes:

- ``EnergyFn``/``ScoreFn``: ``f(params, x, *args)``, the parameters first (losses, nets,
  analytic targets' unbound methods such as ``GaussianMixture.energy``);
- ``BoundEnergyFn``/``BoundScoreFn``: ``f(x, *args)`` with the parameters bound
  (samplers: ``functools.partial(energy_fn, params)``).
"""

from collections.abc import Callable
from typing import Any

import jax

Array = jax.Array
Key = jax.Array  # a typed key from ``jax.random.key(seed)``
Params = Any  # any pytree of arrays
PyTree = Any

EnergyFn = Callable[..., Array]  # energy_fn(params, x, *args) -> ()
ScoreFn = Callable[..., Array]  # score_fn(params, x, *args) -> like x
BoundEnergyFn = Callable[..., Array]  # energy_fn(x, *args) -> (), params bound
BoundScoreFn = Callable[..., Array]  # score_fn(x, *args) -> like x, params bound
LossFn = Callable[..., Array]  # loss_fn(params, key, batch) -> ()
