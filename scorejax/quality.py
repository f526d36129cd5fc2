"""Offline sample quality of digit images: an in-project classifier and the metrics on it.

FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) are computed on the features of an
Inception network trained on ImageNet; no such weights can be downloaded here. This module
trains a small LeNet-style classifier (``nets.DigitClassifier``) on the *training split* of
the digits and computes, on its penultimate features and class probabilities, the same
statistics (``quality_report``):

- classifier FD: the Fréchet distance of Gaussians fitted to the features (FID's formula);
- KID: unbiased MMD^2 with the cubic polynomial kernel, with its standard error;
- the classifier's Inception-style score (Salimans et al. 2016);
- the fraction of confidently classified samples (max_y p(y|x) >= 0.9 by default);
- the entropy of the predicted-class histogram (mode coverage; ln 10 = 2.303 is its
  maximum for the ten digits);
- precision and recall on k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019, k = 3).

**These numbers are NOT comparable to published Inception FID, KID or IS values**, nor
between classifiers: they depend on this classifier's weights (its seed and training
steps), its feature dimension and on the sample size (FD is biased by O(D / N)). Compare
samples only against each other and against the sanity rows (``sanity_reports``) computed
with the same classifier, reference set and sample size: the floor (real training digits
vs the held-out reference), Gaussian-noise images, and real digits blurred or noised by
increasing amounts, which must score monotonically worse. To compare runs with each other
(or runs on machines whose floats differ, which train the same seed to slightly different
weights), save one run's classifier with ``save_classifier`` and load it in the others with
``load_classifier``.

Pixels are in [0, 1] (as ``data.load_digits`` and ``data.load_mnist_5k`` give them).
"""

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from scorejax import metrics
from scorejax._checks import check_integer, check_positive, check_rank
from scorejax.nets.classifier import DigitClassifier
from scorejax.training import fit, init_train_state, make_train_step
from scorejax.types import Array, Key, Params

DEFAULT_CLASSIFIER = DigitClassifier()


def _check_images(name: str, images) -> None:
    check_rank(name, images, 3, "(N, H, W)")
    if np.shape(images)[0] < 1:
        raise ValueError(f"{name} must hold at least one image, got shape {np.shape(images)}")


def _check_labels(images, labels, num_classes: int) -> None:
    check_rank("labels", labels, 1, "(N,)")
    if np.shape(labels)[0] != np.shape(images)[0]:
        raise ValueError(
            f"labels must have one entry per image, got {np.shape(labels)[0]} labels for "
            f"{np.shape(images)[0]} images"
        )
    values = np.asarray(labels)
    if (
        not np.issubdtype(values.dtype, np.integer)
        or values.min() < 0
        or values.max() >= num_classes
    ):
        raise ValueError(f"labels must be integers in [0, {num_classes}), got {values.dtype}")


@functools.cache
def _pair_sampler(batch_size: int):
    # as training.minibatches, for (images, labels) pairs drawn with the same rows
    def draw(images, labels, key):
        rows = jax.random.randint(key, (batch_size,), 0, images.shape[0])
        return images[rows], labels[rows]

    return draw


def _shift(key: Key, image: Array, max_shift: int) -> Array:
    """Translate one image by a uniform integer offset in [-max_shift, max_shift]^2
    (zero fill): the data augmentation LeCun et al. 1998 (Section III.C) used for MNIST."""
    if max_shift == 0:
        return image
    padded = jnp.pad(image, max_shift)
    offset = jax.random.randint(key, (2,), 0, 2 * max_shift + 1)
    return jax.lax.dynamic_slice(padded, (offset[0], offset[1]), image.shape)


def _cross_entropy(params, key, batch, *, model, max_shift):
    images, labels = batch
    keys = jax.random.split(key, images.shape[0])
    images = jax.vmap(_shift, in_axes=(0, 0, None))(keys, images, max_shift)
    logits = model.apply(params, images)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def train_classifier(
    key: Key,
    images: Array,
    labels: Array,
    *,
    num_steps: int,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    max_shift: int = 0,
    model: DigitClassifier = DEFAULT_CLASSIFIER,
    progress: bool = False,
) -> tuple[Params, dict]:
    """Train ``model`` to classify ``images`` by minimising the mean cross-entropy
    -log softmax(logits)_label with Adam (Kingma & Ba 2015) through ``training.fit``.

    Minibatches are drawn with replacement; with ``max_shift`` > 0 every training image is
    translated by a random offset of up to ``max_shift`` pixels per axis (augmentation).

    Args:
      key: PRNG key (initialisation, batches, shifts).
      images: (N, H, W) training images, pixels in [0, 1]; labels: (N,) integer classes.
      num_steps: optimiser steps. batch_size: images per step. learning_rate: Adam's rate.
      max_shift: augmentation shift in pixels (0 for none).
      model: the classifier (``nets.DigitClassifier()`` by default).
      progress: show ``fit``'s progress bar.

    Returns:
      (params, history): the exponential moving average of the parameters (Polyak
      averaging, ``make_train_step``'s EMA with decay 0.999), more accurate on held-out
      digits than the last iterate, and ``fit``'s per-step history (``loss``,
      ``grad_norm``).
    """
    _check_images("images", images)
    _check_labels(images, labels, model.num_classes)
    max_shift = check_integer("max_shift", max_shift, 0)
    check_positive("learning_rate", learning_rate)
    key_init, key_fit = jax.random.split(key)
    images = jnp.asarray(images, jnp.float32)
    params = model.init(key_init, images[:1])
    optimizer = optax.adam(learning_rate)
    loss = functools.partial(_cross_entropy, model=model, max_shift=max_shift)
    batch_fn = jax.tree_util.Partial(
        _pair_sampler(check_integer("batch_size", batch_size, 1)), images, jnp.asarray(labels)
    )
    state, history = fit(
        make_train_step(loss, optimizer),
        init_train_state(params, optimizer),
        key_fit,
        batch_fn,
        num_steps=num_steps,
        progress=progress,
        description="classifier",
    )
    return state.ema_params, history


def save_classifier(path, params: Params, **metadata) -> Path:
    """Write a classifier's parameters and ``metadata`` (JSON-serialisable keyword arguments,
    e.g. the data set and split it was trained on) to ``path`` in Flax's msgpack format
    (arrays and strings only, nothing pickled); the parent folder is created. Returns the
    path. Read it back with ``load_classifier``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"params": serialization.to_state_dict(params), "metadata": json.dumps(metadata)}
    path.write_bytes(serialization.msgpack_serialize(jax.device_get(payload)))
    return path


def load_classifier(
    path, image_shape: tuple[int, int], *, model: DigitClassifier = DEFAULT_CLASSIFIER
) -> tuple[Params, dict]:
    """The parameters and metadata written by ``save_classifier``.

    Args:
      path: the file ``save_classifier`` wrote.
      image_shape: (H, W) of the images the classifier is for.
      model: the classifier the parameters belong to.

    Returns:
      (params, metadata dict).

    Raises:
      ValueError: the file is missing or unreadable, or its parameters do not have the
      structure and shapes of ``model``'s on ``image_shape`` images (e.g. an 8x8
      classifier loaded for 28x28 digits).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no classifier file at {str(path)!r}")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        metadata = json.loads(payload["metadata"])
        saved = payload["params"]
    except Exception as error:  # msgpack, JSON and key errors alike: not a saved classifier
        raise ValueError(f"path: {str(path)!r} is not a saved classifier ({error})") from error
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
    want = jax.tree_util.tree_map(lambda a: a.shape, serialization.to_state_dict(template))
    got = jax.tree_util.tree_map(np.shape, saved)
    if want != got:
        raise ValueError(
            f"path: the classifier in {str(path)!r} does not fit {model!r} on "
            f"{tuple(image_shape)} images (parameter shapes {got}, expected {want})"
        )
    params = serialization.from_state_dict(template, jax.tree_util.tree_map(jnp.asarray, saved))
    return params, metadata


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def _features_and_probs(params, images, *, model, batch_size):
    def one(image):
        features, logits = model.apply(params, image, method=DigitClassifier.features_and_logits)
        return features, jax.nn.softmax(logits)

    return jax.lax.map(one, images, batch_size=batch_size)


def classify(
    params: Params,
    images: Array,
    *,
    model: DigitClassifier = DEFAULT_CLASSIFIER,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and class probabilities p(y|x) = softmax(logits) of ``images``.

    Args:
      params: the classifier's parameters (``train_classifier``).
      images: (N, H, W) images.
      model: the classifier they belong to.
      batch_size: images per vectorised chunk (bounds the memory of the activations).

    Returns:
      (features (N, feature_dim), probs (N, num_classes)) as float32 NumPy arrays.
    """
    _check_images("images", images)
    batch_size = check_integer("batch_size", batch_size, 1)
    features, probs = _features_and_probs(
        params, jnp.asarray(images, jnp.float32), model=model, batch_size=batch_size
    )
    return np.asarray(features), np.asarray(probs)


def accuracy(
    params: Params, images: Array, labels: Array, *, model: DigitClassifier = DEFAULT_CLASSIFIER
) -> float:
    """The fraction of ``images`` whose most probable class is their label."""
    _check_images("images", images)
    _check_labels(images, labels, model.num_classes)
    _, probs = classify(params, images, model=model)
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels)))


def quality_report(
    params: Params,
    samples: Array,
    reference: Array,
    *,
    model: DigitClassifier = DEFAULT_CLASSIFIER,
    num_subsets: int = 10,
    threshold: float = 0.9,
    k: int = 3,
    key: Key | None = None,
) -> dict[str, float]:
    """Sample quality of ``samples`` against real ``reference`` images on the classifier.

    See the module docstring: the distances are NOT comparable to published Inception FID
    or KID; compare them with the sanity rows at the same sample size.

    Args:
      params, model: the trained classifier.
      samples: (N, H, W) generated images; reference: (M, H, W) real held-out images,
        never trained on (by the classifier or the generative model).
      num_subsets: disjoint blocks for KID and its standard error (``metrics.kid``).
      threshold: the confidence of ``confident_fraction``, in (0, 1).
      k: the neighbour of the precision/recall manifolds.
      key: shuffles the rows before KID's blocks (None: row order, fine for shuffled sets).

    Returns:
      A dict of floats: ``fd`` (classifier FD), ``kid`` and ``kid_se``, ``inception_score``,
      ``confident_fraction``, ``class_entropy`` (nats), ``precision``, ``recall`` and
      ``num_samples``.
    """
    _check_images("samples", samples)
    _check_images("reference", reference)
    if np.shape(samples)[1:] != np.shape(reference)[1:]:
        raise ValueError(
            f"samples and reference must have the same image shape, got {np.shape(samples)} "
            f"and {np.shape(reference)}"
        )
    if not (isinstance(threshold, int | float | np.floating) and 0.0 < threshold < 1.0):
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    features, probs = classify(params, samples, model=model)
    reference_features, _ = classify(params, reference, model=model)
    kid_value, kid_se = metrics.kid(features, reference_features, num_subsets=num_subsets, key=key)
    precision, recall = metrics.precision_recall(reference_features, features, k=k)
    return {
        "fd": metrics.frechet_distance(features, reference_features),
        "kid": kid_value,
        "kid_se": kid_se,
        "inception_score": metrics.inception_score(probs),
        "confident_fraction": metrics.confident_fraction(probs, threshold),
        "class_entropy": metrics.class_entropy(probs),
        "precision": precision,
        "recall": recall,
        "num_samples": int(np.shape(samples)[0]),
    }


# --- sanity rows -------------------------------------------------------------------------


def gaussian_noise_images(
    key: Key, shape: tuple[int, ...], *, mean: float = 0.5, std: float = 0.5
) -> Array:
    """Pure-noise images: pixels i.i.d. N(mean, std^2), clipped to [0, 1]."""
    check_positive("std", std)
    return jnp.clip(mean + std * jax.random.normal(key, shape), 0.0, 1.0)


def add_gaussian_noise(key: Key, images: Array, std: float, *, clip: bool = False) -> Array:
    """images + std * N(0, I), pixels on the [0, 1] scale of the clean images; NOT clipped
    to [0, 1] unless ``clip``."""
    check_positive("std", std)
    noisy = images + std * jax.random.normal(key, jnp.shape(images))
    return jnp.clip(noisy, 0.0, 1.0) if clip else noisy


def gaussian_blur(images: Array, width: float) -> Array:
    """Blur (N, H, W) images with a Gaussian of std ``width`` pixels.

    A separable convolution: the normalised kernel g_i ∝ exp(-i^2 / (2 width^2)),
    |i| <= ceil(3 width), applied along H and then along W, zero padding outside the
    image (the digits' background is 0). ``width`` 0 returns the images unchanged.
    """
    _check_images("images", images)
    if not (np.isfinite(width) and width >= 0):
        raise ValueError(f"width must be >= 0 and finite, got {width!r}")
    if width == 0:
        return jnp.asarray(images)
    radius = int(np.ceil(3 * width))
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-(offsets**2) / (2.0 * width**2))
    kernel = kernel / jnp.sum(kernel)
    x = jnp.asarray(images, jnp.float32)[:, None]  # (N, 1, H, W)
    for shape in ((-1, 1), (1, -1)):
        x = jax.lax.conv_general_dilated(x, kernel.reshape(shape)[None, None], (1, 1), "SAME")
    return x[:, 0]


def sanity_reports(
    key: Key,
    params: Params,
    train_images: Array,
    reference: Array,
    *,
    model: DigitClassifier = DEFAULT_CLASSIFIER,
    blur_widths: tuple[float, ...] = (0.5, 1.0, 2.0),
    noise_stds: tuple[float, ...] = (0.1, 0.2, 0.4),
    **report_kwargs,
) -> dict[str, dict[str, float]]:
    """The sanity rows of a quality table, each a ``quality_report`` against ``reference``.

    The sample set of every row has as many images as ``reference`` (or all of
    ``train_images`` if fewer): ``"floor"`` is the first rows of ``train_images`` (real
    digits, what a perfect generator scores at this size); ``"blur <w>"`` the same rows
    blurred (``gaussian_blur``); ``"noise <s>"`` the same rows plus unclipped Gaussian noise
    of std s (``add_gaussian_noise``); ``"gaussian noise"`` pure-noise images
    (``gaussian_noise_images``). A sound metric rises from the floor monotonically in w
    and in s.
    """
    _check_images("train_images", train_images)
    _check_images("reference", reference)
    num = min(np.shape(train_images)[0], np.shape(reference)[0])
    real = jnp.asarray(train_images[:num], jnp.float32)
    key_noise, key_pure = jax.random.split(key)
    report = functools.partial(
        quality_report, params, reference=reference, model=model, **report_kwargs
    )
    rows = {"floor": report(real)}
    for width in blur_widths:
        rows[f"blur {width:g}"] = report(gaussian_blur(real, width))
    for std in noise_stds:
        rows[f"noise {std:g}"] = report(add_gaussian_noise(key_noise, real, std))
    rows["gaussian noise"] = report(gaussian_noise_images(key_pure, real.shape))
    return rows
