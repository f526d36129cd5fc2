"""Argument checks at the API boundary (docs/design.md §15).

Values are checked in Python before tracing where they are concrete; a traced value (an
argument of a function under the user's ``jit``) cannot be looked at, and its check is
skipped: a run's divergence report then catches what it would have caught. The outputs of
user functions are checked on their shapes with ``jax.eval_shape``, which costs one abstract
evaluation and runs no computation; kernels do it when they are traced, once per compile.
"""

import operator

import jax
import jax.numpy as jnp
import numpy as np


def concrete(value):
    """Return ``value`` as a NumPy array, or None when it is a tracer."""
    try:
        return np.asarray(value)
    except Exception:  # a tracer: the check is left to the caller's caller
        return None


def check_positive(name: str, value) -> None:
    """Raise ValueError unless every entry of ``value`` is finite and > 0."""
    arr = concrete(value)
    if arr is not None and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


def check_integer(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising ValueError unless it is an integer >= ``minimum``.

    Any integer type is accepted (``np.int64(10)`` as well as ``10``); bools are not.
    """
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def check_positive_int(name: str, value) -> int:
    """Return ``value`` as an int, raising ValueError unless it is an integer >= 1."""
    return check_integer(name, value, 1)


def check_callable(name: str, fn, form: str) -> None:
    """Raise TypeError unless ``fn`` is callable; ``form`` says how it is called."""
    if not callable(fn):
        raise TypeError(f"{name} must be a function {form}, got {fn!r}")


def check_rank(name: str, x, rank: int, what: str) -> None:
    """Raise ValueError unless ``x`` has ``rank`` dimensions (``what`` names them)."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have shape {what}, got shape {np.shape(x)}")


def check_real_float(name: str, x) -> None:
    """Raise ValueError unless ``x`` holds real floating-point numbers (any precision)."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        kind = "complex" if jnp.issubdtype(dtype, jnp.complexfloating) else str(dtype)
        raise ValueError(
            f"{name} must be a real floating-point array (float16, bfloat16, float32 or "
            f"float64), got {kind}; convert it, e.g. jnp.asarray({name}, jnp.float32)"
        )


def check_score_output(name: str, score_fn, x, *args) -> None:
    """Raise ValueError unless ``score_fn(x, *args)`` has the shape of ``x`` and a float dtype.

    A score is a vector field: one entry per coordinate of the one example ``x``. Checked
    with ``jax.eval_shape`` (an abstract evaluation, no computation).
    """
    out = jax.eval_shape(score_fn, x, *args)
    shape = getattr(out, "shape", None)
    if shape != np.shape(x):
        raise ValueError(
            f"{name} must return an array shaped like its input x {np.shape(x)} (one example; "
            f"batch with jax.vmap), got {_describe(out)}"
        )
    check_real_float(f"the output of {name}", out)


def check_energy_output(name: str, energy_fn, x, *args) -> None:
    """Raise ValueError unless ``energy_fn(x, *args)`` is a real scalar (one example in)."""
    out = jax.eval_shape(energy_fn, x, *args)
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"{name} must return a scalar for one example x of shape {np.shape(x)} (an energy "
            f"returns a scalar per example; batch with jax.vmap), got {_describe(out)}"
        )
    check_real_float(f"the output of {name}", out)


def _describe(out) -> str:
    if hasattr(out, "shape"):
        return f"shape {out.shape} ({out.dtype})"
    return f"a {type(out).__name__}"


def check_decreasing(name: str, sigmas) -> None:
    """Raise ValueError unless ``sigmas`` is a 1-D, positive, strictly decreasing ladder."""
    arr = concrete(sigmas)
    if arr is None:
        return
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a 1-D array of noise levels, got shape {arr.shape}")
    check_positive(name, arr)
    if np.any(np.diff(arr) >= 0):
        raise ValueError(
            f"{name} must be strictly decreasing (largest noise first, as in NCSN), got {arr}"
        )
