"""Sample-quality and score-quality metrics.

MMD is only meaningful next to its noise floor, the MMD between two independent true
samples of the same size: ``mmd_noise_floor`` gives it, and experiments report both.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_integer, concrete
from scorejax.types import Array, BoundScoreFn, Key


def _check_samples(name: str, x, min_rows: int = 2) -> None:
    if np.ndim(x) != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {np.shape(x)}")
    if np.shape(x)[0] < min_rows:
        raise ValueError(
            f"{name} needs at least {min_rows} samples (the unbiased MMD averages over pairs), "
            f"got {np.shape(x)[0]}"
        )
    values = concrete(x)
    if values is not None and not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or Inf")


def _sq_dists(x: Array, y: Array) -> Array:
    return jnp.maximum(jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None, :] - 2.0 * x @ y.T, 0.0)


def median_bandwidth(x: Array, y: Array) -> Array:
    """Median heuristic: the median pairwise distance of the pooled sample (Gretton et al. 2012)."""
    z = jnp.concatenate([x, y])
    d = jnp.sqrt(_sq_dists(z, z))
    n = z.shape[0]
    return jnp.median(d[jnp.triu_indices(n, k=1)])


def mmd(x: Array, y: Array, bandwidths: Array | None = None) -> Array:
    """Unbiased squared MMD with an RBF kernel, or a sum of RBF kernels (Gretton et al. 2012,
    Eq. 3): k(a, b) = sum_j exp(-|a - b|^2 / (2 h_j^2)).

    Args:
      x: (N, D) samples; y: (M, D) samples.
      bandwidths: kernel widths h_j; None uses the median heuristic times (0.5, 1, 2)
        (multi-bandwidth, robust to the scale of the data).

    Returns:
      MMD^2_u, which can be slightly negative when the two laws agree.
    """
    _check_samples("x", x)
    _check_samples("y", y)
    if np.shape(x)[1] != np.shape(y)[1]:
        raise ValueError(f"x and y must have the same dimension, got {np.shape(x)}, {np.shape(y)}")
    if bandwidths is None:
        median = median_bandwidth(x, y)
        value = concrete(median)
        if value is not None and not value > 0:
            raise ValueError(
                "the median heuristic gives bandwidth 0: the pooled points are (nearly) all "
                "identical; pass bandwidths explicitly"
            )
        bandwidths = median * jnp.array([0.5, 1.0, 2.0])
    bandwidths = jnp.atleast_1d(jnp.asarray(bandwidths))
    values = concrete(bandwidths)
    if values is not None and not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError(f"bandwidths must be positive and finite, got {values}")

    def kernel(a, b):
        d2 = _sq_dists(a, b)[..., None]
        return jnp.sum(jnp.exp(-d2 / (2.0 * bandwidths**2)), axis=-1)

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    sum_xx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    sum_yy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return sum_xx + sum_yy - 2.0 * jnp.mean(kxy)


def mmd_noise_floor(
    key: Key, sample_fn: Callable[[Key, int], Array], n: int, num_repeats: int = 10
) -> Array:
    """Mean |MMD^2| between two independent true samples of size n: what a perfect sampler scores.

    Uses the same median-heuristic kernel as ``mmd``. ``sample_fn(key, n)`` draws exact samples.
    """
    check_integer("n", n, 2)
    check_integer("num_repeats", num_repeats, 1)

    def one(k):
        k1, k2 = jax.random.split(k)
        return jnp.abs(mmd(sample_fn(k1, n), sample_fn(k2, n)))

    return jnp.mean(jax.lax.map(one, jax.random.split(key, num_repeats)))


def energy_distance(x: Array, y: Array) -> Array:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo 2013), V-statistic."""

    def mean_dist(a, b):
        return jnp.mean(jnp.sqrt(_sq_dists(a, b) + 1e-12))

    return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def mode_weights(samples: Array, means: Array) -> Array:
    """Fraction of samples nearest each of ``means`` (K, D); non-finite rows are excluded."""
    finite = jnp.all(jnp.isfinite(samples), axis=1)
    nearest = jnp.argmin(_sq_dists(jnp.where(finite[:, None], samples, 0.0), means), axis=1)
    counts = jnp.sum(jax.nn.one_hot(nearest, means.shape[0]) * finite[:, None], axis=0)
    return counts / jnp.maximum(jnp.sum(finite), 1)


def fisher_divergence(
    score_fn: BoundScoreFn, exact_score_fn: BoundScoreFn, x: Array, weights: Array | None = None
) -> Array:
    """Fisher divergence 1/2 E_p |s(x) - s*(x)|^2, estimated on points ``x`` (N, D).

    With ``weights`` None the points are samples of p (a Monte Carlo average); otherwise
    ``weights`` (N,) are quadrature weights proportional to p(x_i) on a grid and are
    normalised here. Both scores take one example.
    """
    diff = jax.vmap(score_fn)(x) - jax.vmap(exact_score_fn)(x)
    sq = 0.5 * jnp.sum(diff**2, axis=-1)
    if weights is None:
        return jnp.mean(sq)
    return jnp.sum(weights * sq) / jnp.sum(weights)


def auroc(scores_in: Array, scores_out: Array) -> Array:
    """Area under the ROC curve with the in-distribution set as the positive class.

    AUROC = P(S_in > S_out) + 1/2 P(S_in = S_out) = U / (n_in n_out), the Mann–Whitney U
    statistic of the in-scores (Mann & Whitney 1947; Hanley & McNeil 1982, Eq. 1), computed
    from mid-ranks of the pooled sample in O(n log n): U = sum rank(in) - n_in (n_in + 1) / 2.
    Higher scores must mean "more in-distribution": for an EBM pass -E (the unnormalised
    log-likelihood; Z cancels). 0.5 is chance, 1 is perfect separation.

    Args:
      scores_in: (n_in,) scores of in-distribution examples.
      scores_out: (n_out,) scores of out-of-distribution examples.

    Returns:
      AUROC in [0, 1].
    """
    scores_in, scores_out = jnp.ravel(scores_in), jnp.ravel(scores_out)
    if scores_in.size == 0 or scores_out.size == 0:
        raise ValueError(
            f"scores_in and scores_out must be non-empty, got {scores_in.size} and "
            f"{scores_out.size} entries"
        )
    for name, scores in (("scores_in", scores_in), ("scores_out", scores_out)):
        values = concrete(scores)
        if values is not None and np.any(np.isnan(values)):
            raise ValueError(
                f"{name} contains {int(np.isnan(values).sum())} NaN score(s): a NaN cannot be "
                "ranked (drop or fix the diverged examples first)"
            )
    pooled = jnp.concatenate([scores_in, scores_out]).astype(jnp.float32)
    ordered = jnp.sort(pooled)
    # mid-rank (1-based) of each value: ties share the average of their ranks
    below = jnp.searchsorted(ordered, scores_in.astype(jnp.float32), side="left")
    upto = jnp.searchsorted(ordered, scores_in.astype(jnp.float32), side="right")
    ranks = 0.5 * (below + upto + 1).astype(jnp.float32)
    n_in, n_out = scores_in.size, scores_out.size
    u = jnp.sum(ranks) - n_in * (n_in + 1) / 2.0
    return u / (n_in * n_out)
