"""Figures: energy landscapes, score fields, samples, trajectories, loss curves, image grids.

Each function draws on a matplotlib Axes it is given and returns it, so figures compose;
``save`` writes a PNG and closes the figure. Functions take plain callables of one
example (parameters closed over) and evaluate them with ``jax.vmap`` on a grid.
"""

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from scorejax.types import Array


def grid_2d(lim: float | tuple, num_points: int) -> tuple[np.ndarray, np.ndarray, Array]:
    """A square grid over [-lim, lim]^2 (or (lo, hi)): returns X, Y meshes and (n*n, 2) points."""
    lo, hi = (-lim, lim) if np.isscalar(lim) else lim
    ticks = np.linspace(lo, hi, num_points)
    xs, ys = np.meshgrid(ticks, ticks)
    return xs, ys, jnp.asarray(np.stack([xs.ravel(), ys.ravel()], axis=1), jnp.float32)


def energy_landscape(ax, energy_fn: Callable, lim=4.0, num_points: int = 150, density: bool = True):
    """Filled contours of exp(-E) (``density``) or of E itself, over a 2-D grid."""
    xs, ys, pts = grid_2d(lim, num_points)
    energy = np.asarray(jax.vmap(energy_fn)(pts)).reshape(xs.shape)
    if density:
        values = np.exp(-(energy - np.nanmin(energy)))
        ax.contourf(xs, ys, values, levels=30, cmap="viridis")
    else:
        ax.contourf(xs, ys, np.clip(energy, None, np.nanpercentile(energy, 95)), levels=30)
    ax.set_aspect("equal")
    return ax


def score_field(ax, score_fn: Callable, lim=4.0, num_points: int = 21, color="white"):
    """Quiver plot of a 2-D score field s(x), arrows normalised to show direction."""
    xs, ys, pts = grid_2d(lim, num_points)
    s = np.asarray(jax.vmap(score_fn)(pts))
    norm = np.linalg.norm(s, axis=1, keepdims=True) + 1e-12
    u, v = (s / norm).T
    ax.quiver(xs, ys, u.reshape(xs.shape), v.reshape(xs.shape), color=color, alpha=0.8)
    ax.set_aspect("equal")
    return ax


def samples(ax, x, data=None, lim=None, label="samples", s: float = 2.0):
    """Scatter samples, optionally over the data (grey)."""
    if data is not None:
        data = np.asarray(data)
        ax.scatter(data[:, 0], data[:, 1], s=s, c="0.7", label="data", alpha=0.6)
    x = np.asarray(x)
    ax.scatter(x[:, 0], x[:, 1], s=s, c="tab:red", label=label, alpha=0.6)
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    return ax


def trajectories(ax, trace, num_chains: int = 10):
    """Paths of a few chains; ``trace`` is (num_chains, T, 2) as from ``run_chains``."""
    trace = np.asarray(trace)
    for path in trace[:num_chains]:
        ax.plot(path[:, 0], path[:, 1], lw=0.7, alpha=0.8)
        ax.plot(path[0, 0], path[0, 1], "k.", ms=4)
        ax.plot(path[-1, 0], path[-1, 1], "r*", ms=6)
    ax.set_aspect("equal")
    return ax


def loss_curve(ax, history: dict, key: str = "loss", window: int = 50):
    """Training loss with a running mean over ``window`` steps."""
    values = np.asarray(history[key])
    ax.plot(values, lw=0.5, alpha=0.4, label=key)
    if len(values) >= window:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(values)), smooth, label=f"{key} (mean of {window})")
    ax.set_xlabel("step")
    ax.legend()
    return ax


def _value_range(images: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.nanmin(images)), float(np.nanmax(images))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if lo >= -1.0 and hi <= 1.0:
        return -1.0, 1.0
    return lo, hi if hi > lo else lo + 1.0


def tile_images(images, num_columns: int = 10, value_range: tuple | None = None) -> np.ndarray:
    """Tile (N, H, W) or (N, H, W, C) images (C = 1 or 3) into one picture with values in [0, 1].

    ``value_range`` (low, high) maps to [0, 1]; None picks [0, 1] when the images lie in it,
    [-1, 1] when they lie in that (the scaling of score models trained on centred data),
    and their own minimum and maximum otherwise. Returns (rows, columns) for single-channel
    images and (rows, columns, 3) for RGB, with a one-pixel white border between tiles.
    """
    images = np.asarray(images, np.float64)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(
            f"images must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got {images.shape}"
        )
    num_columns = max(1, min(int(num_columns), images.shape[0]))
    lo, hi = _value_range(images) if value_range is None else value_range
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    n, h, w = images.shape[:3]
    rows = -(-n // num_columns)
    canvas = np.ones((rows * (h + 1) + 1, num_columns * (w + 1) + 1, *images.shape[3:]))
    for i, img in enumerate(images):
        r, c = divmod(i, num_columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    return canvas


def image_grid(ax, images, num_columns: int = 10, cmap: str = "gray", value_range=None):
    """Show (N, H, W) or (N, H, W, 3) images as one tiled picture (``tile_images``; images in
    [0, 1] or [-1, 1] are recognised, or pass ``value_range``)."""
    canvas = tile_images(images, num_columns, value_range)
    ax.imshow(canvas, cmap=cmap if canvas.ndim == 2 else None, vmin=0, vmax=1)
    ax.axis("off")
    return ax


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating folders) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
