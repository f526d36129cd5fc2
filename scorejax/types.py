"""Type aliases shared across scorejax.

Shapes are written in the docstrings (``x: (D,)``); these aliases name the roles
so signatures read like the papers.
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
LossFn = Callable[..., Array]  # loss_fn(params, key, batch) -> ()
