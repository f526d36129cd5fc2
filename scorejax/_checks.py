"""Argument checks at the API boundary, raised in Python before tracing (DESIGN §15)."""

import numpy as np


def _concrete(value):
    """Return ``value`` as a NumPy array, or None when it is a tracer."""
    try:
        return np.asarray(value)
    except Exception:  # a tracer: the check is left to the caller's caller
        return None


def check_positive(name: str, value) -> None:
    """Raise ValueError unless every entry of ``value`` is finite and > 0."""
    arr = _concrete(value)
    if arr is not None and not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


def check_positive_int(name: str, value) -> None:
    """Raise ValueError unless ``value`` is a Python int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_rank(name: str, x, rank: int, what: str) -> None:
    """Raise ValueError unless ``x`` has ``rank`` dimensions (``what`` names them)."""
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have shape {what}, got shape {np.shape(x)}")


def check_decreasing(name: str, sigmas) -> None:
    """Raise ValueError unless ``sigmas`` is a 1-D, positive, strictly decreasing ladder."""
    arr = _concrete(sigmas)
    if arr is None:
        return
    if arr.ndim != 1 or arr.size < 1:
        raise ValueError(f"{name} must be a 1-D array of noise levels, got shape {arr.shape}")
    check_positive(name, arr)
    if np.any(np.diff(arr) >= 0):
        raise ValueError(
            f"{name} must be strictly decreasing (largest noise first, as in NCSN), got {arr}"
        )
