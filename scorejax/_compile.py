"""How scorejax compiles its outermost loops (private).

``jit`` is ``jax.jit`` with one rule for every argument: arrays are data, everything else
is code (docs/design.md §17). Every JAX or NumPy array reachable in an argument's pytree is
traced; everything else (functions, ints, strings, None, Python floats) is held static and is part
of the compilation cache's key. ``functools.partial`` objects and bound methods count as
pytrees of their arguments, so a sampler rebuilt with a new step size, or a score function
``partial(score_fn, params)`` with new parameters, reuses the compiled program. A plain
closure (``lambda x: score_fn(params, x)``) is code: a new one compiles again.

On the CPU the two outermost loops (the sampler runner and ``fit``'s scan) also pass XLA
options, chosen per kind of program, when the jaxlib is one they were measured on; any
other jaxlib or backend gets plain ``jax.jit``. The measurements are in
docs/performance.md.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np

# YNNPACK fuses dots only in samplers, and is off in training loops (docs/performance.md)
_SAMPLER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
_TRAINING_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_MEASURED_JAXLIB = "0.10."  # the options name an experimental flag of this jaxlib series


@functools.cache
def _options(training: bool) -> tuple:
    """The XLA options for a top-level loop here, as a hashable tuple (empty off the CPU or
    on a jaxlib the options were not measured on)."""
    from jaxlib import version

    if jax.default_backend() != "cpu" or not version.__version__.startswith(_MEASURED_JAXLIB):
        return ()
    options = _TRAINING_OPTIONS if training else _SAMPLER_OPTIONS
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # the option is gone from this build: plain jit
        return ()
    return tuple(options.items())


def _is_array(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray | np.generic)


def _is_callable_data(x) -> bool:
    """A functools.partial (not already a jax Partial, which is a pytree) or a bound method."""
    return type(x) is functools.partial or type(x) is types.MethodType


def as_pytree(tree):
    """``tree`` with every functools.partial and bound method made a jax Partial, recursively,
    so that the arrays they hold are leaves. Kernel factories apply it to the functions they
    are given, so their runs need not convert them again."""

    def convert(x):
        if type(x) is types.MethodType:
            return jax.tree_util.Partial(x.__func__, as_pytree(x.__self__))
        if type(x) is functools.partial:
            args = as_pytree(x.args)
            keywords = as_pytree(dict(x.keywords))
            return jax.tree_util.Partial(convert(x.func), *args, **keywords)
        return x

    return jax.tree_util.tree_map(convert, tree, is_leaf=_is_callable_data)


class _ById:
    """An unhashable static value, compared by identity (a new one compiles again)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __hash__(self):
        return id(self.value)

    def __eq__(self, other):
        return isinstance(other, _ById) and other.value is self.value


def _hashable(x):
    try:
        hash(x)
    except TypeError:
        return _ById(x)
    return x


class _Static:
    """The non-array part of an argument: its tree structure and its non-array leaves."""

    __slots__ = ("_hash", "leaves", "treedef")

    def __init__(self, treedef, leaves):
        self.treedef = treedef
        self.leaves = tuple(leaves)
        self._hash = hash((treedef, self.leaves))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return (
            isinstance(other, _Static)
            and self.treedef == other.treedef
            and self.leaves == other.leaves
        )


_ARRAY = object()  # marks where an array leaf goes back


def partition(tree):
    """Split ``tree`` into its arrays (a tuple) and a hashable static rest."""
    leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=_is_callable_data)
    if any(_is_callable_data(leaf) for leaf in leaves):  # convert only when needed
        leaves, treedef = jax.tree_util.tree_flatten(as_pytree(tree))
    arrays = tuple(leaf for leaf in leaves if _is_array(leaf))
    static = [_ARRAY if _is_array(leaf) else _hashable(leaf) for leaf in leaves]
    return arrays, _Static(treedef, static)


def combine(arrays, static):
    """Inverse of ``partition``."""
    it = iter(arrays)
    leaves = [
        next(it) if leaf is _ARRAY else (leaf.value if isinstance(leaf, _ById) else leaf)
        for leaf in static.leaves
    ]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


@functools.cache
def _compiled(fn, donate_argnums: tuple, options: tuple):
    def inner(donated_arrays, arrays, static):
        donated_static, rest_static = static
        donated = combine(donated_arrays, donated_static)
        args, kwargs = combine(arrays, rest_static)
        args = list(args)
        for i, value in zip(donate_argnums, donated, strict=True):
            args[i] = value
        return fn(*args, **kwargs)

    kwargs = {"compiler_options": dict(options)} if options else {}
    donate = (0,) if donate_argnums else ()
    return jax.jit(inner, static_argnums=(2,), donate_argnums=donate, **kwargs)


def jit(fn=None, *, training: bool | None = None, donate_argnums: tuple = ()):
    """``jax.jit`` for scorejax's loops: arrays traced, everything else static (see above).

    ``training`` picks the XLA options of a top-level training loop (True), sampler loop
    (False), or none (None). Options apply only at top level: under a user's ``jit`` or
    ``vmap`` the outer program's own options rule, so the function is jitted plainly.
    ``donate_argnums`` donates those positional arguments' arrays.
    """
    if fn is None:
        return functools.partial(jit, training=training, donate_argnums=donate_argnums)
    donate_argnums = tuple(donate_argnums)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        donated = tuple(args[i] for i in donate_argnums)
        rest = tuple(None if i in donate_argnums else a for i, a in enumerate(args))
        donated_arrays, donated_static = partition(donated)
        arrays, rest_static = partition((rest, kwargs))
        traced = any(isinstance(a, jax.core.Tracer) for a in arrays + donated_arrays)
        options = () if training is None or traced else _options(training)
        compiled = _compiled(fn, donate_argnums, options)
        return compiled(donated_arrays, arrays, (donated_static, rest_static))

    return call


def as_data(value):
    """A number given as a Python float or int becomes a (weakly typed) array, so that it is
    data to ``jit`` (a new value reuses the program); arrays pass through."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return jnp.asarray(float(value))
