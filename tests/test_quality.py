"""The offline sample-quality metrics: closed forms, unbiasedness, and the sanity ordering on
real digits with a classifier trained in the test.

Statistical tolerances: a mean over R repeats is compared with its exact value within
4.5 standard errors of the mean (two-sided false-alarm rate ~7e-6 per check under a normal
approximation); an ordering of two quality rows is asserted only with a gap of more than
3 combined standard errors (the rows share the reference set and base images, which
correlates them positively, so the combined SE sqrt(se_a^2 + se_b^2) overstates the SE
of the gap: the check is conservative).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from scorejax import data, metrics, quality
from scorejax.nets import DigitClassifier

K_SIGMA = 4.5
K_GAP = 3.0


# --- Fréchet distance --------------------------------------------------------------------


def test_gaussian_frechet_distance_matches_closed_forms():
    # 1-D: the squared W2 distance (m1 - m2)^2 + (s1 - s2)^2
    got = metrics.gaussian_frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]])
    np.testing.assert_allclose(got, 1.5**2 + (2.0 - 0.5) ** 2, rtol=1e-12)
    # commuting (diagonal) covariances: sum (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 2.0, 9.0]), np.array([4.0, 0.5, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    got = metrics.gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    np.testing.assert_allclose(got, 5.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rtol=1e-12)
    # 2-D, not commuting: C1 C2 has eigenvalues l1, l2 > 0, so
    # Tr (C1 C2)^(1/2) = sqrt(l1) + sqrt(l2) = sqrt(Tr(C1 C2) + 2 sqrt(det(C1 C2)))
    c1 = np.array([[2.0, 0.8], [0.8, 1.0]])
    c2 = np.array([[1.0, -0.3], [-0.3, 0.5]])
    m = c1 @ c2
    trace_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    exact = 2.0 + np.trace(c1) + np.trace(c2) - 2 * trace_sqrt
    got = metrics.gaussian_frechet_distance([1.0, 0.0], c1, [0.0, 1.0], c2)
    np.testing.assert_allclose(got, exact, rtol=1e-12)


def test_gaussian_frechet_distance_agrees_with_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(0)
    dim = 6
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    c1, c2 = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    exact = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * root)
    np.testing.assert_allclose(metrics.gaussian_frechet_distance(mu1, c1, mu2, c2), exact, 1e-9)
    np.testing.assert_allclose(metrics.gaussian_frechet_distance(mu2, c2, mu1, c1), exact, 1e-9)
    # singular covariances (rank 1) are PSD too: eigenvalues clipped, no NaN
    u = rng.normal(size=(dim, 1))
    assert np.isfinite(metrics.gaussian_frechet_distance(mu1, u @ u.T, mu2, c2))


def _with_moments(z, mean, cov):
    """Rows whose sample mean is ``mean`` and sample covariance (ddof 1) is ``cov``."""
    z = z - z.mean(0)
    whitened = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return mean + whitened @ np.linalg.cholesky(cov).T


def test_frechet_distance_of_samples_is_the_closed_form_of_their_moments():
    """Samples built to have exactly the given mean and covariance score the closed form."""
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 0.0])
    c1 = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.5], [0.0, 0.5, 1.5]])
    c2 = np.array([[0.5, 0.0, 0.1], [0.0, 1.0, 0.0], [0.1, 0.0, 3.0]])
    x = _with_moments(rng.normal(size=(500, 3)), mu1, c1)
    y = _with_moments(rng.normal(size=(300, 3)), mu2, c2)
    exact = metrics.gaussian_frechet_distance(mu1, c1, mu2, c2)
    np.testing.assert_allclose(metrics.frechet_distance(x, y), exact, rtol=1e-9)
    assert metrics.frechet_distance(x, x) < 1e-9
    # a shift by c moves only the mean: FD = |c|^2
    np.testing.assert_allclose(metrics.frechet_distance(x, x + 2.0), 12.0, rtol=1e-9)


# --- KID -----------------------------------------------------------------------------------


def test_polynomial_mmd_matches_a_direct_double_sum():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 4)), 0.5 + rng.normal(size=(9, 4))
    k = lambda a, b: (float(np.dot(a, b)) / 4 + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(a, b) for a in x for b in y) / (12 * 9)
    np.testing.assert_allclose(metrics.polynomial_mmd2(x, y), xx + yy - 2 * xy, rtol=1e-10)


def _mean_within(values, exact):
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - exact) < K_SIGMA * se, (values.mean(), exact, se)


def test_kid_is_unbiased_for_equal_laws_and_for_the_one_dimensional_closed_form():
    """E MMD^2_u = MMD^2. Equal laws: 0. In 1-D the cubic kernel (xy + 1)^3 has the feature
    map (x^3, sqrt3 x^2, sqrt3 x, 1), so MMD^2 = (m3 - m3')^2 + 3 (m2 - m2')^2 +
    3 (m1 - m1')^2 with N(a, 1)'s moments m1 = a, m2 = a^2 + 1, m3 = a^3 + 3a."""
    rng = np.random.default_rng(3)
    repeats = 300
    same = [
        metrics.kid(rng.normal(size=(60, 5)), rng.normal(size=(60, 5)))[0] for _ in range(repeats)
    ]
    _mean_within(same, 0.0)
    a = 0.5
    exact = (a**3 + 3 * a) ** 2 + 3 * (a**2) ** 2 + 3 * a**2
    shifted = [
        metrics.polynomial_mmd2(rng.normal(size=(40, 1)), a + rng.normal(size=(30, 1)))
        for _ in range(repeats)
    ]
    _mean_within(shifted, exact)


def test_kid_standard_error_matches_the_spread_across_repeats():
    """E[se^2] = Var(KID) for disjoint blocks: compare mean(se^2) with the variance of the
    KID values over repeats, within 4.5 SEs of their difference."""
    rng = np.random.default_rng(4)
    repeats = 400
    draws = [
        metrics.kid(rng.normal(size=(100, 3)), 0.3 + rng.normal(size=(100, 3)), num_subsets=5)
        for _ in range(repeats)
    ]
    values, se = np.array(draws).T
    squared_dev = (values - values.mean()) ** 2 * repeats / (repeats - 1)
    diff = se**2 - squared_dev
    assert abs(diff.mean()) < K_SIGMA * diff.std(ddof=1) / np.sqrt(repeats)


def test_kid_uses_disjoint_blocks_and_shuffles_with_the_key():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(41, 3))
    value, _ = metrics.kid(x, y, num_subsets=2)
    blocks = [metrics.polynomial_mmd2(x[:20], y[:20]), metrics.polynomial_mmd2(x[20:], y[20:40])]
    np.testing.assert_allclose(value, np.mean(blocks), rtol=1e-12)
    key = jax.random.key(0)
    assert metrics.kid(x, y, num_subsets=2, key=key) == metrics.kid(x, y, num_subsets=2, key=key)
    assert metrics.kid(x, y, num_subsets=2, key=key)[0] != value


# --- Inception score, confidence, class entropy ---------------------------------------------


def test_inception_score_bounds():
    rng = np.random.default_rng(6)
    soft = rng.dirichlet(np.ones(10))
    np.testing.assert_allclose(metrics.inception_score(np.tile(soft, (50, 1))), 1.0, rtol=1e-12)
    one_hot = np.eye(10)[np.arange(50) % 10]
    np.testing.assert_allclose(metrics.inception_score(one_hot), 10.0, rtol=1e-12)
    random = rng.dirichlet(np.full(10, 0.3), size=200)
    assert 1.0 < metrics.inception_score(random) < 10.0


def test_class_entropy_and_confident_fraction():
    uniform = np.eye(7)[np.arange(70) % 7] * 0.5 + 0.5 / 7
    np.testing.assert_allclose(metrics.class_entropy(uniform), np.log(7), rtol=1e-12)
    assert metrics.class_entropy(np.tile(np.eye(4)[2], (9, 1))) == 0.0
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    assert metrics.confident_fraction(probs) == 0.5  # 0.9 counts (>=)
    assert metrics.confident_fraction(probs, threshold=0.7) == 0.75


# --- precision and recall ------------------------------------------------------------------


def test_precision_recall_identical_far_and_half_sets():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(200, 4))
    assert metrics.precision_recall(real, real) == (1.0, 1.0)
    assert metrics.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # half copies of real points (inside every real ball: distance 0), half far away
    fake = np.concatenate([real[:50], rng.normal(size=(50, 4)) + 100.0])
    precision, _ = metrics.precision_recall(real, fake, k=3)
    assert precision == 0.5


# --- classifier and image helpers -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("size", [8, 28])
def test_classifier_takes_one_image_or_a_batch(size):
    model = DigitClassifier()
    images = jax.random.uniform(jax.random.key(0), (3, size, size))
    params = model.init(jax.random.key(1), images[0])
    logits = model.apply(params, images)
    features = model.apply(params, images, method=DigitClassifier.features)
    assert logits.shape == (3, 10) and features.shape == (3, 128)
    np.testing.assert_allclose(model.apply(params, images[1]), logits[1], rtol=1e-5, atol=1e-6)
    got_features, got_probs = quality.classify(params, images, model=model)
    np.testing.assert_allclose(got_features, features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_probs, jax.nn.softmax(logits), rtol=1e-5, atol=1e-6)


def test_saved_classifier_loads_with_equal_parameters_and_metadata(tmp_path):
    model = DigitClassifier()
    params = model.init(jax.random.key(1), jnp.zeros((1, 8, 8)))
    path = quality.save_classifier(tmp_path / "sub" / "c.msgpack", params, dataset="digits")
    loaded, metadata = quality.load_classifier(path, (8, 8), model=model)
    assert metadata == {"dataset": "digits"}
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_loading_a_classifier_checks_the_file_and_the_shapes(tmp_path):
    params = DigitClassifier().init(jax.random.key(1), jnp.zeros((1, 8, 8)))
    path = quality.save_classifier(tmp_path / "c.msgpack", params)
    with pytest.raises(ValueError, match=r"path: the classifier in .* does not fit"):
        quality.load_classifier(path, (28, 28))
    with pytest.raises(ValueError, match="path: no classifier file"):
        quality.load_classifier(tmp_path / "missing.msgpack", (8, 8))
    (tmp_path / "junk").write_bytes(b"not msgpack at all")
    with pytest.raises(ValueError, match=r"path: .* is not a saved classifier"):
        quality.load_classifier(tmp_path / "junk", (8, 8))


def test_gaussian_blur_equals_the_two_dimensional_convolution():
    images = jax.random.uniform(jax.random.key(0), (2, 12, 12))
    width = 1.3
    radius = int(np.ceil(3 * width))
    g = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * width**2))
    kernel = np.outer(g, g) / g.sum() ** 2
    padded = np.pad(np.asarray(images, np.float64), ((0, 0), (radius, radius), (radius, radius)))
    direct = np.zeros((2, 12, 12))
    for i in range(12):
        for j in range(12):
            window = padded[:, i : i + 2 * radius + 1, j : j + 2 * radius + 1]
            direct[:, i, j] = np.sum(window * kernel, axis=(1, 2))
    np.testing.assert_allclose(quality.gaussian_blur(images, width), direct, atol=1e-5)
    np.testing.assert_array_equal(quality.gaussian_blur(images, 0.0), images)


def test_noise_rows_have_the_stated_law():
    images = jnp.full((100, 8, 8), 0.5)
    noisy = quality.add_gaussian_noise(jax.random.key(0), images, 0.2)
    residual = np.asarray(noisy - images, np.float64).ravel()
    # mean 0 within 4.5 SE; variance s^2 within 4.5 SE of the sample variance (normal: 2 s^4/n)
    assert abs(residual.mean()) < K_SIGMA * 0.2 / np.sqrt(residual.size)
    assert abs(residual.var() - 0.04) < K_SIGMA * np.sqrt(2 / residual.size) * 0.04
    assert float(jnp.max(noisy)) > 1.0 - 0.5  # unclipped by default (0.5 + 4 s > 1)
    clipped = quality.add_gaussian_noise(jax.random.key(0), images + 0.5, 0.2, clip=True)
    assert float(jnp.max(clipped)) <= 1.0
    pure = quality.gaussian_noise_images(jax.random.key(1), (10, 8, 8))
    assert pure.shape == (10, 8, 8) and 0.0 <= float(pure.min()) and float(pure.max()) <= 1.0


# --- bad input -------------------------------------------------------------------------------

X = np.zeros((30, 4))
P = np.full((30, 10), 0.1)
KEY = jax.random.key(0)
IMAGES = np.zeros((30, 8, 8))
GAUSSIAN_FD = metrics.gaussian_frechet_distance
TRAIN = quality.train_classifier
REPORT = quality.quality_report

BAD_INPUTS = [
    (lambda: metrics.frechet_distance(X, np.zeros((30, 5))), "x and y must have the same"),
    (lambda: metrics.frechet_distance(X[:1], X), "x needs at least 2 samples"),
    (lambda: metrics.frechet_distance(X[0], X), r"x must have shape \(N, D\)"),
    (lambda: GAUSSIAN_FD(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "cov1 must have shape"),
    (lambda: metrics.kid(X[:15], X), "x needs at least 20 samples"),
    (lambda: metrics.kid(X, X, num_subsets=1), "num_subsets must be"),
    (lambda: metrics.kid(X, np.zeros((30, 3))), "x and y must have the same"),
    (lambda: metrics.precision_recall(X[:3], X), "real needs at least 4 samples"),
    (lambda: metrics.precision_recall(X, X, k=0), "k must be"),
    (lambda: metrics.confident_fraction(P, threshold=1.0), "threshold must lie in"),
    (lambda: metrics.confident_fraction(P, threshold=0.0), "threshold must lie in"),
    (lambda: metrics.inception_score(2 * P), "probs must hold class probabilities"),
    (lambda: quality.gaussian_blur(IMAGES, -1.0), "width must be"),
    (lambda: quality.gaussian_blur(IMAGES[0], 1.0), r"images must have shape \(N, H, W\)"),
    (lambda: TRAIN(KEY, IMAGES, np.zeros(4, int), num_steps=1), "labels must have one entry"),
    (lambda: TRAIN(KEY, IMAGES, np.full(30, 10), num_steps=1), r"labels must be .* \[0, 10\)"),
    (lambda: REPORT({}, IMAGES, np.zeros((30, 28, 28))), "same image shape"),
    (lambda: REPORT({}, IMAGES, IMAGES, threshold=1.5), "threshold must lie in"),
]


@pytest.mark.parametrize("call, match", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- trained classifiers and the sanity ordering -------------------------------------------

DIGITS_STEPS = 600  # batch 64, learning rate 2e-3 (train_classifier's defaults)
MNIST_STEPS = 2000


@pytest.fixture(scope="module")
def digits():
    images = data.load_digits()
    params, history = quality.train_classifier(
        jax.random.key(0), images.train_images, images.train_labels, num_steps=DIGITS_STEPS
    )
    return images, params, history


def _check_accuracy(params, images, labels, minimum):
    """The held-out accuracy must reach ``minimum`` (each test states how it was set)."""
    got = quality.accuracy(params, images, labels)
    print(f"held-out accuracy {got:.4f} on {len(labels)} images")
    assert got >= minimum, got
    return got


@pytest.mark.slow
def test_digits_classifier_held_out_accuracy(digits):
    """8x8 digits, 600 steps: measured 97.5% on the 359 held-out digits; the binomial SE
    there is 0.008, so the bound 0.95 lies 3 SE below."""
    images, params, history = digits
    assert np.all(np.isfinite(history["loss"]))
    _check_accuracy(params, images.test_images, images.test_labels, 0.95)


def _rows_by_block(params, train_images, reference, rows, num_blocks):
    """FD and KID of every corrupted copy of ``train_images`` against ``reference``, on
    ``num_blocks`` disjoint blocks of the training images of the reference's size: the mean
    over blocks and its standard error (FD's spread across blocks; KID's pooled SEs)."""
    size = reference.shape[0]
    reference_features, _ = quality.classify(params, reference)
    out = {}
    for name, images in rows.items():
        features, _ = quality.classify(params, images)
        fd, kid, kid_var = [], [], []
        for b in range(num_blocks):
            block = features[b * size : (b + 1) * size]
            fd.append(metrics.frechet_distance(block, reference_features))
            value, se = metrics.kid(block, reference_features)
            kid.append(value)
            kid_var.append(se**2)
        fd_se = np.std(fd, ddof=1) / np.sqrt(num_blocks)
        out[name] = (np.mean(fd), fd_se, np.mean(kid), np.sqrt(np.sum(kid_var)) / num_blocks)
    return out


def _check_sanity_ordering(table, chains):
    """FD rises along each chain, every step by more than K_GAP combined SEs. KID, whose
    block estimates are noisier at these sizes, must never fall by more than K_GAP combined
    SEs from one row to the next, and each chain's last row must exceed its first (the
    floor) by more than K_GAP combined SEs."""
    print({name: tuple(round(float(v), 4) for v in row) for name, row in table.items()})

    def gap(a, b, column):
        return table[b][column] - table[a][column], np.hypot(
            table[a][column + 1], table[b][column + 1]
        )

    for chain in chains:
        for a, b in itertools.pairwise(chain):
            fd_gap, fd_se = gap(a, b, 0)
            assert fd_gap > K_GAP * fd_se, ("FD", a, b, table[a], table[b])
            kid_gap, kid_se = gap(a, b, 2)
            assert kid_gap > -K_GAP * kid_se, ("KID", a, b, table[a], table[b])
        kid_gap, kid_se = gap(chain[0], chain[-1], 2)
        assert kid_gap > K_GAP * kid_se, (
            "KID",
            chain[0],
            chain[-1],
            table[chain[0]],
            table[chain[-1]],
        )


def _sanity_rows(key, train_images, blur_widths, noise_stds):
    key_noise, key_pure = jax.random.split(key)
    rows = {"floor": train_images}
    rows |= {f"blur {w:g}": quality.gaussian_blur(train_images, w) for w in blur_widths}
    rows |= {
        f"noise {s:g}": quality.add_gaussian_noise(key_noise, train_images, s) for s in noise_stds
    }
    rows["gaussian noise"] = quality.gaussian_noise_images(key_pure, train_images.shape)
    return rows


@pytest.mark.slow
def test_digits_sanity_ordering(digits):
    """floor < blur 0.5 < blur 1 < Gaussian noise, and floor < noise 0.2 < 0.3 < 0.4
    (``_check_sanity_ordering``), on 4 disjoint blocks of 359 train digits against the 359
    held-out ones. Blur widths are in pixels of the 8x8 images."""
    images, params, _ = digits
    rows = _sanity_rows(jax.random.key(1), images.train_images, (0.5, 1.0), (0.2, 0.3, 0.4))
    table = _rows_by_block(params, images.train_images, images.test_images, rows, 4)
    _check_sanity_ordering(
        table,
        [
            ["floor", "blur 0.5", "blur 1", "gaussian noise"],
            ["floor", "noise 0.2", "noise 0.3", "noise 0.4"],
        ],
    )
    # the report itself: the floor is real digits, confidently classified, all classes seen
    reports = quality.sanity_reports(
        jax.random.key(2), params, images.train_images, images.test_images,
        blur_widths=(1.0,), noise_stds=(0.3,),
    )  # fmt: skip
    assert list(reports) == ["floor", "blur 1", "noise 0.3", "gaussian noise"]
    floor = reports["floor"]
    assert floor["num_samples"] == images.test_images.shape[0]
    assert all(
        floor["fd"] < r["fd"] and floor["kid"] < r["kid"]
        for r in reports.values()
        if r is not floor
    )
    assert floor["class_entropy"] > 0.95 * np.log(10)
    assert floor["precision"] > 0.5 and floor["recall"] > 0.5


@pytest.fixture(scope="module")
def mnist():
    images = data.load_mnist_5k()
    params, _ = quality.train_classifier(
        jax.random.key(0), images.train_images, images.train_labels, num_steps=MNIST_STEPS
    )
    return images, params


@pytest.mark.slow
def test_mnist_classifier_held_out_accuracy(mnist):
    """28x28 MNIST (4,000 train, 1,000 held out), 2,000 steps: >= 97%, issue 20's target
    (not a derived bound: measured 97.8% with these settings, binomial SE 0.0046, so the
    margin is under 2 SE; 98.1% in a trial run with another key)."""
    images, params = mnist
    _check_accuracy(params, images.test_images, images.test_labels, 0.97)


@pytest.mark.slow
def test_mnist_sanity_ordering(mnist):
    """As for the 8x8 digits, on 4 disjoint blocks of 1,000 MNIST training digits against
    the 1,000 held-out ones; blur widths in pixels of the 28x28 images."""
    images, params = mnist
    rows = _sanity_rows(jax.random.key(1), images.train_images, (1.0, 2.0), (0.2, 0.3, 0.4))
    table = _rows_by_block(params, images.train_images, images.test_images, rows, 4)
    _check_sanity_ordering(
        table,
        [
            ["floor", "blur 1", "blur 2", "gaussian noise"],
            ["floor", "noise 0.2", "noise 0.3", "noise 0.4"],
        ],
    )
