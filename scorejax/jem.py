"""Joint energy-based models: a classifier read as an energy (Grathwohl, Wang, Jacobsen,
Duvenaud, Norouzi & Swersky 2020, "Your Classifier is Secretly an Energy Based Model and You
Should Treat it Like One", ICLR).

A classifier's logits f(x) define p(x, y) = exp(f(x)[y]) / Z, i.e. E(x, y) = -f(x)[y]
(their Eq. 5), whose marginal has E(x) = -logsumexp_y f(x)[y] (Eq. 6) and whose conditional
p(y | x) is the usual softmax. JEM trains log p(x, y) = log p(y | x) + log p(x): the
cross-entropy plus the EBM's maximum-likelihood term, whose gradient is estimated with
persistent SGLD chains from a replay buffer (their Section 4 and Appendix: buffer of 10,000,
reinitialisation probability 0.05 from uniform noise, 20 steps of
x <- x - alpha grad E(x) + sigma z with the step alpha = 1 and the noise sigma = 0.01
decoupled). ``make_jem_train_step`` is ``replay.make_cd_train_step`` with the classifier's
energy, ``decoupled_langevin`` chains and the cross-entropy as its supervised term.

JEM training is known to diverge (the energies of samples run away and the loss turns
NaN); the train step reports ``diverged`` (non-finite values, or |E| above a limit) and
``energy_neg`` in its metrics, and the L2 energy penalty ``alpha`` and gradient clipping in
the optimiser are the guards (Du & Mordatch 2019, Section 3.3).
"""

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import Partial

from scorejax._checks import check_callable, check_positive, check_positive_int
from scorejax.replay import make_cd_train_step
from scorejax.samplers.langevin import decoupled_langevin
from scorejax.scores import score_from_energy
from scorejax.types import Array, Key, Params


def jem_energy(logits_fn: Callable) -> Callable:
    """E(params, x) = -logsumexp_y f(params, x)[y] (Grathwohl et al. 2020, Eq. 6), for one
    example, from ``logits_fn(params, x) -> (C,)``."""
    check_callable("logits_fn", logits_fn, "logits_fn(params, x) -> (num_classes,)")
    return Partial(_marginal_energy, logits_fn)


def _marginal_energy(logits_fn, params, x):
    return -jax.nn.logsumexp(logits_fn(params, x))


def class_energy(logits_fn: Callable) -> Callable:
    """E(params, x, y) = -f(params, x)[y] (Grathwohl et al. 2020, Eq. 5), for one example."""
    check_callable("logits_fn", logits_fn, "logits_fn(params, x) -> (num_classes,)")
    return Partial(_class_energy, logits_fn)


def _class_energy(logits_fn, params, x, y):
    return -logits_fn(params, x)[y]


def cross_entropy_loss(params: Params, key: Key, batch, *, logits_fn: Callable) -> Array:
    """-mean_i log softmax(f(x_i))[y_i] over a labelled batch ``(x, labels)``."""
    del key
    x, labels = batch
    logits = jax.vmap(logits_fn, in_axes=(None, 0))(params, x)
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def make_jem_train_step(
    logits_fn: Callable,
    optimizer: optax.GradientTransformation,
    noise_fn: Callable,
    *,
    num_mcmc_steps: int = 20,
    step_size: float = 1.0,
    noise_scale: float = 0.01,
    reinit_fraction: float = 0.05,
    alpha: float = 0.0,
    clip_range: tuple | None = None,
    energy_limit: float = 1e4,
    ema_decay: float = 0.999,
):
    """JEM's train step: cross-entropy + persistent contrastive divergence on E(x).

    ``state.extra`` must be a replay buffer (``replay_init``); batches are ``(x, labels)``.
    The defaults are Grathwohl et al.'s (20 SGLD steps, step 1, noise 0.01, reinitialisation
    0.05); ``noise_fn(key, n)`` draws the restarts (their uniform noise: ``uniform_noise``).

    Returns:
      ``train_step(state, key, (x, labels)) -> (state, metrics)``; the metrics are
      ``make_cd_train_step``'s (``diverged``, ``energy_pos``, ``energy_neg``, ...) with
      ``supervised_loss``, the cross-entropy.
    """
    check_callable("logits_fn", logits_fn, "logits_fn(params, x) -> (num_classes,)")
    check_positive_int("num_mcmc_steps", num_mcmc_steps)
    check_positive("step_size", step_size)
    check_positive("noise_scale", noise_scale)
    energy_fn = jem_energy(logits_fn)
    make_sampler = partial(_sgld, energy_fn, step_size, noise_scale, clip_range)
    return make_cd_train_step(
        energy_fn,
        make_sampler,
        optimizer,
        num_mcmc_steps=num_mcmc_steps,
        persistent=True,
        noise_fn=noise_fn,
        reinit_fraction=reinit_fraction,
        alpha=alpha,
        clip_range=clip_range,
        energy_limit=energy_limit,
        ema_decay=ema_decay,
        supervised_loss=partial(cross_entropy_loss, logits_fn=logits_fn),
    )


def _sgld(energy_fn, step_size, noise_scale, clip_range, params):
    score_fn = partial(score_from_energy(energy_fn), params)
    return decoupled_langevin(score_fn, step_size, noise_scale, clip_range=clip_range)
