"""Sample-quality and score-quality metrics.

MMD is only meaningful next to its noise floor, the MMD between two independent true
samples of the same size: ``mmd_noise_floor`` gives it, and experiments report both.

Feature-space metrics of generative models (``frechet_distance``, ``kid``,
``precision_recall``, ``inception_score``, ``confident_fraction``, ``class_entropy``) take
features (N, D) or class probabilities (N, K) of any classifier; ``scorejax.quality``
feeds them an in-project digit classifier. They are evaluated on the host in float64
NumPy (matrix square roots and cubic kernels lose digits in float32), not under ``jit``.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_integer, concrete
from scorejax.types import Array, BoundScoreFn, Key


def _check_samples(
    name: str, x, min_rows: int = 2, why: str = "the unbiased MMD averages over pairs"
) -> None:
    if np.ndim(x) != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {np.shape(x)}")
    if np.shape(x)[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples ({why}), got {np.shape(x)[0]}")
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


# --- feature-space metrics of generative models (float64, on the host) -------------------


def _features_pair(name_x: str, x, name_y: str, y, min_rows: int, why: str):
    _check_samples(name_x, x, min_rows, why)
    _check_samples(name_y, y, min_rows, why)
    if np.shape(x)[1] != np.shape(y)[1]:
        raise ValueError(
            f"{name_x} and {name_y} must have the same feature dimension, got shapes "
            f"{np.shape(x)} and {np.shape(y)}"
        )
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def _check_probs(name: str, probs) -> np.ndarray:
    _check_samples(name, probs, 1, "one row per sample")
    probs = np.asarray(probs, np.float64)
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(
            f"{name} must hold class probabilities, rows >= 0 summing to 1 (apply a softmax "
            "to logits first)"
        )
    return probs


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def gaussian_frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """Fréchet distance between N(mean1, cov1) and N(mean2, cov2) (Dowson & Landau 1982):

        d^2 = |mean1 - mean2|^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)),

    the squared 2-Wasserstein distance between the Gaussians, the formula of FID (Heusel et
    al. 2017). Tr (cov1 cov2)^(1/2) is computed stably as the sum of the square roots
    of the eigenvalues of the symmetric PSD matrix S cov2 S, S = cov1^(1/2) (similar to
    cov1 cov2, so it has the same eigenvalues), with round-off negatives clipped at 0.

    Args:
      mean1, mean2: (D,) means. cov1, cov2: (D, D) symmetric PSD covariances.

    Returns:
      d^2 >= 0 (a float; float64 NumPy).
    """
    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    for name, mean in (("mean1", mean1), ("mean2", mean2)):
        if mean.ndim != 1:
            raise ValueError(f"{name} must have shape (D,), got shape {mean.shape}")
    dim = mean1.shape[0]
    for name, value in (("mean2", mean2), ("cov1", cov1), ("cov2", cov2)):
        expected = (dim,) if name == "mean2" else (dim, dim)
        if value.shape != expected:
            raise ValueError(f"{name} must have shape {expected} to match mean1, got {value.shape}")
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    eigenvalues = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
    distance = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance(x, y) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    FID's formula on any features: ``gaussian_frechet_distance`` of the sample means and
    sample covariances (divisor N - 1) of ``x`` and ``y``. It is a biased estimator (the
    bias grows with D / N), so compare values only at equal sample sizes.

    Args:
      x: (N, D) features; y: (M, D) features.
    """
    x, y = _features_pair("x", x, "y", y, 2, "a covariance needs two")
    cov = lambda a: np.atleast_2d(np.cov(a, rowvar=False))
    return gaussian_frechet_distance(x.mean(0), cov(x), y.mean(0), cov(y))


def polynomial_mmd2(x, y, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, Eq. 3) with the polynomial kernel of KID
    (Bińkowski et al. 2018): k(a, b) = (a.b / D + coef0)^degree.

        MMD^2_u = sum_{i != j} k(x_i, x_j) / (N(N-1)) + sum_{i != j} k(y_i, y_j) / (M(M-1))
                  - 2 sum_{i, j} k(x_i, y_j) / (N M)

    Args:
      x: (N, D) features; y: (M, D) features; N, M >= 2.
    """
    x, y = _features_pair("x", x, "y", y, 2, "the unbiased MMD averages over pairs")
    degree = check_integer("degree", degree, 1)
    dim = x.shape[1]
    kernel = lambda a, b: (a @ b.T / dim + coef0) ** degree
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = x.shape[0], y.shape[0]
    term_xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    term_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(term_xx + term_yy - 2.0 * kxy.mean())


def kid(x, y, *, num_subsets: int = 10, key: Key | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 with the cubic
    kernel k(a, b) = (a.b / D + 1)^3 (``polynomial_mmd2``), averaged over subsets, with its
    standard error.

    The subsets are disjoint: ``x`` and ``y`` are cut into ``num_subsets`` blocks of
    floor(N / num_subsets) and floor(M / num_subsets) rows (a remainder is left out). Each
    block's MMD^2_u is unbiased and the blocks are independent, so the mean is unbiased
    and SE = std(blocks, ddof=1) / sqrt(num_subsets) is an honest standard error
    (overlapping subsets, as in the paper's code, make the spread understate it).

    Args:
      x: (N, D) features of the samples; y: (M, D) features of the reference set; both
        need at least 2 rows per subset.
      num_subsets: number of disjoint blocks, >= 2.
      key: if given, rows are shuffled with it first; otherwise blocks are taken in row
        order, which is right when the rows are already in random order (sampler output,
        a shuffled data split) and wrong when they are sorted, e.g. by class.

    Returns:
      (KID, its standard error), floats.
    """
    num_subsets = check_integer("num_subsets", num_subsets, 2)
    why = f"two per subset with num_subsets={num_subsets}"
    x, y = _features_pair("x", x, "y", y, 2 * num_subsets, why)
    if key is not None:
        key_x, key_y = jax.random.split(key)
        x = x[np.asarray(jax.random.permutation(key_x, x.shape[0]))]
        y = y[np.asarray(jax.random.permutation(key_y, y.shape[0]))]
    size_x, size_y = x.shape[0] // num_subsets, y.shape[0] // num_subsets
    values = np.array(
        [
            polynomial_mmd2(x[i * size_x : (i + 1) * size_x], y[i * size_y : (i + 1) * size_y])
            for i in range(num_subsets)
        ]
    )
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(num_subsets))


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    A set's manifold is the union of balls centred at its points, each with radius the
    distance to that point's k-th nearest neighbour in the set (itself not counted):

        f(phi, Phi) = 1 if |phi - phi'| <= NN_k(phi') for some phi' in Phi, else 0,
        precision = mean_{phi in fake} f(phi, real),  recall = mean_{phi in real} f(phi, fake).

    Precision is the fraction of samples that fall on the real data's manifold (quality),
    recall the fraction of real data covered by the samples' manifold (coverage).
    Distances are Euclidean, in float64, in row blocks of 1,024 (memory O(1024 N)).

    Args:
      real: (N, D) features of real data; fake: (M, D) features of samples.
      k: the neighbour that sets each radius (the paper's default 3); both sets need more
        than k points.

    Returns:
      (precision, recall), floats in [0, 1].
    """
    k = check_integer("k", k, 1)
    real, fake = _features_pair("real", real, "fake", fake, k + 1, f"more than k={k}")

    def distances(a, b):
        sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
        return np.sqrt(np.maximum(sq, 0.0))

    def radii(points):
        # index k of the sorted row: index 0 is the point itself (distance 0)
        return np.concatenate(
            [
                np.partition(distances(points[i : i + 1024], points), k, axis=1)[:, k]
                for i in range(0, len(points), 1024)
            ]
        )

    def coverage(queries, points, point_radii):
        inside = [
            np.any(distances(queries[i : i + 1024], points) <= point_radii[None, :], axis=1)
            for i in range(0, len(queries), 1024)
        ]
        return float(np.mean(np.concatenate(inside)))

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


def inception_score(probs) -> float:
    """Inception score exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016, Section 4), with
    p(y) = mean_x p(y|x) the marginal of the predictions, computed on the whole set.

    It lies in [1, K]: 1 when every sample gets the same prediction, K when each is
    classified with certainty and the classes are used equally.

    Args:
      probs: (N, K) class probabilities p(y|x) of the samples, rows summing to 1.
    """
    probs = _check_probs("probs", probs)
    marginal = np.broadcast_to(probs.mean(axis=0, keepdims=True), probs.shape)
    # 0 log 0 = 0; wherever p(y|x) > 0 the marginal is > 0 too
    positive = probs > 0
    log_ratio = np.log(np.where(positive, probs, 1.0)) - np.log(np.where(positive, marginal, 1.0))
    kl = np.sum(probs * log_ratio, axis=1)
    return float(np.exp(kl.mean()))


def confident_fraction(probs, threshold: float = 0.9) -> float:
    """The fraction of samples classified with max_y p(y|x) >= ``threshold``.

    Confidence alone is no quality score (a classifier can rate noise confidently); report
    it beside a distance such as ``frechet_distance`` or ``kid``.

    Args:
      probs: (N, K) class probabilities.
      threshold: in (0, 1); 0.9 by default.
    """
    probs = _check_probs("probs", probs)
    if not (isinstance(threshold, int | float | np.floating) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    return float(np.mean(probs.max(axis=1) >= threshold))


def class_entropy(probs) -> float:
    """Entropy -sum_c h_c ln h_c of the histogram h of predicted classes (argmax p(y|x)).

    A measure of mode coverage: ln K (nats) when the samples spread evenly over the K
    classes, 0 when all are predicted to be one class (the hard-label version of the
    Inception score's marginal entropy H(y), Salimans et al. 2016).

    Args:
      probs: (N, K) class probabilities (or logits: only the argmax is used).
    """
    _check_samples("probs", probs, 1, "one row per sample")
    probs = np.asarray(probs, np.float64)
    counts = np.bincount(np.argmax(probs, axis=1), minlength=probs.shape[1])
    hist = counts[counts > 0] / probs.shape[0]
    return float(-np.sum(hist * np.log(hist)))


def expected_calibration_error(probs, labels, num_bins: int = 15) -> tuple[float, dict]:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over equal-width bins of the
    confidence max_y p(y|x) (Naeini, Cooper & Hauskrecht 2015; Guo, Pleiss, Sun & Weinberger
    2017, Eq. 3), with the per-bin table of a reliability diagram.

    Args:
      probs: (N, K) class probabilities.
      labels: (N,) true classes.
      num_bins: B equal-width bins over [0, 1] (15 as in Guo et al.).

    Returns:
      (ece, {"confidence", "accuracy", "count"}): per-bin mean confidence, accuracy and size
      (empty bins hold 0).
    """
    probs = _check_probs("probs", probs)
    labels = np.asarray(labels)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {labels.shape}")
    num_bins = check_integer("num_bins", num_bins, 1)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.minimum((confidence * num_bins).astype(int), num_bins - 1)
    count = np.bincount(bins, minlength=num_bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean_conf = np.bincount(bins, confidence, num_bins) / safe
    accuracy = np.bincount(bins, correct, num_bins) / safe
    ece = float(np.sum(count / probs.shape[0] * np.abs(accuracy - mean_conf)))
    return ece, {"confidence": mean_conf, "accuracy": accuracy, "count": count}
