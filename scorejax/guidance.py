"""Class-conditional generation by guidance: a classifier's gradient added to the score, or a
conditional and an unconditional score mixed (classifier-free), with their training losses.

For a label y, Bayes' rule for the noised marginals gives the conditional score

    grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)

(Song et al. 2021, Section 5, Eq. 14 and Appendix I.1), so any sampler of the library turns
into a conditional sampler when handed ``classifier_guided_score``. Scaling the classifier's
term by w (Dhariwal & Nichol 2021, Section 4: w > 1 samples p_t(x) p_t(y | x)^w, sharper and
less diverse) trades diversity for fidelity. Classifier-free guidance (Ho & Salimans 2021,
Eq. 6) trains one network s(x, t, c) on labelled data with the label replaced by a null
class at a rate, and samples with (1 + w) s(x, t, y) - w s(x, t, null).

A conditional score here takes ``(x, t)`` like every SDE score; labels and scales are closed
over, so the samplers see the same contract.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import check_callable, check_positive_int
from scorejax._compile import as_pytree
from scorejax.energies import GaussianMixture
from scorejax.losses import perturb, sde_dsm_terms
from scorejax.sde import SDE, check_sde
from scorejax.types import Array, Key, Params


def _check_label(label, num_classes: int, name: str = "label") -> Array:
    """The label as an int32 array (data to the compiled samplers: a sweep over labels
    compiles once), after checking it is a class index."""
    num_classes = check_positive_int("num_classes", num_classes)
    value = np.asarray(label)
    if not (
        value.shape == ()
        and np.issubdtype(value.dtype, np.integer)
        and 0 <= int(value) < num_classes
    ):
        raise ValueError(f"{name} must be a class index in [0, {num_classes}), got {label!r}")
    return jnp.asarray(value, jnp.int32)


def _check_scale(scale) -> Array:
    """The guidance scale as a float32 array (data: a sweep over scales compiles once)."""
    value = np.asarray(scale)
    if not (value.shape == () and np.isreal(value) and np.isfinite(value) and value >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    return jnp.asarray(value, jnp.float32)


def classifier_guided_score(
    score_fn: Callable, log_prob_fn: Callable, label: int, *, scale, num_classes: int
) -> Callable:
    """s(x, t) + w grad_x log p_t(y | x): classifier guidance of an unconditional score.

    Args:
      score_fn: ``score_fn(x, t)``, the unconditional score, one example.
      log_prob_fn: ``log_prob_fn(x, t) -> (C,)`` a noise-conditional classifier's log
        probabilities (log-softmax of its logits), one example.
      label: the class y to sample, in [0, num_classes) (an int or a 0-d integer array;
        label and scale are data to the compiled sampler, so sweeping them compiles once).
      scale: w >= 0 (1: the exact conditional score for an exact classifier; 0: unguided).
      num_classes: C.

    Returns:
      ``score(x, t)``, for any sampler.
    """
    check_callable("score_fn", score_fn, "score_fn(x, t) -> array shaped like x")
    check_callable("log_prob_fn", log_prob_fn, "log_prob_fn(x, t) -> (num_classes,)")
    label, scale = _check_label(label, num_classes), _check_scale(scale)
    return Partial(_guided, as_pytree(score_fn), as_pytree(log_prob_fn), label, scale)


def _guided(score_fn, log_prob_fn, label, scale, x, t):
    grad = jax.grad(lambda v: jnp.take(log_prob_fn(v, t), label))(x)
    return score_fn(x, t) + scale * grad


def classifier_free_score(
    score_fn: Callable, label: int, *, scale, num_classes: int, null_label: int | None = None
) -> Callable:
    """(1 + w) s(x, t, y) - w s(x, t, null) (Ho & Salimans 2021, Eq. 6).

    Args:
      score_fn: ``score_fn(x, t, c)`` of one network trained with labels dropped to the null
        class at a rate (``conditional_sde_dsm_loss``); c an int32 class index.
      label: y in [0, num_classes) (as for ``classifier_guided_score``).
      scale: w >= 0 (0: the conditional score alone).
      num_classes: C, the real classes.
      null_label: the null class's index (default C, one past the real classes).

    Returns:
      ``score(x, t)``, for any sampler.
    """
    check_callable("score_fn", score_fn, "score_fn(x, t, label) -> array shaped like x")
    label, scale = _check_label(label, num_classes), _check_scale(scale)
    null_label = num_classes if null_label is None else null_label
    if null_label in range(num_classes):
        raise ValueError(f"null_label must not be a real class, got {null_label}")
    return Partial(_free, as_pytree(score_fn), label, null_label, scale)


def _free(score_fn, label, null_label, scale, x, t):
    conditional = score_fn(x, t, label)
    unconditional = score_fn(x, t, jnp.asarray(null_label, jnp.int32))
    return (1.0 + scale) * conditional - scale * unconditional


def mixture_classifier(mixture: GaussianMixture, sde: SDE) -> Callable:
    """The exact noise-conditional classifier of a mixture whose classes are its components:
    log p_t(k | x) = the log responsibilities of ``mixture.marginal(sde, t)``."""
    check_sde(sde)
    return Partial(_mixture_log_probs, mixture, sde)


def _mixture_log_probs(mixture, sde, x, t):
    return jax.nn.log_softmax(mixture.marginal(sde, t).component_log_probs(x))


def noisy_classifier_loss(
    params: Params, key: Key, batch, *, logits_fn: Callable, sde: SDE
) -> Array:
    """Cross-entropy of a time-conditional classifier on noised data: t ~ U(eps, 1),
    x(t) = m(t) x + s(t) z, -log softmax(logits_fn(params, x(t), t))[y], averaged over the
    batch; the classifier of classifier guidance (Song et al. 2021, Appendix I.1).

    Args:
      batch: (images (B, ...), labels (B,) int).
      logits_fn: ``logits_fn(params, x, t) -> (C,)`` for one example.
    """
    check_sde(sde)
    x, labels = batch
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, (x.shape[0],), x.dtype, sde.eps, 1.0)
    x_t, _, _ = perturb(key_z, sde, x, t)
    logits = jax.vmap(logits_fn, in_axes=(None, 0, 0))(params, x_t, t)
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def conditional_sde_dsm_loss(
    params: Params,
    key: Key,
    batch,
    *,
    score_fn: Callable,
    sde: SDE,
    drop_rate: float = 0.1,
    null_label: int,
) -> Array:
    """``sde_dsm_loss`` (default weighting) of a class-conditional score
    ``score_fn(params, x, t, c)``, with each label replaced by ``null_label`` with
    probability ``drop_rate`` (Ho & Salimans 2021, Algorithm 1), so one network learns
    s(x, t, y) and s(x, t, null).

    Args:
      batch: (images (B, ...), labels (B,) int).
    """
    check_sde(sde)
    if not 0.0 <= drop_rate <= 1.0:
        raise ValueError(f"drop_rate must lie in [0, 1], got {drop_rate}")
    x, labels = batch
    key_drop, key_loss = jax.random.split(key)
    drop = jax.random.bernoulli(key_drop, drop_rate, labels.shape)
    labels = jnp.where(drop, null_label, labels).astype(jnp.int32)
    scores_at = lambda x_t, t: jax.vmap(score_fn, in_axes=(None, 0, 0, 0))(params, x_t, t, labels)
    return sde_dsm_terms(key_loss, x, scores_at, sde)
