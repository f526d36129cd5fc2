"""Contrastive-divergence training: CD-k, short-run MCMC and persistent CD with a replay buffer.

One train step, ``make_cd_train_step``, covers the three: its negatives come from chains
started at the data (CD-k), at fresh noise (short-run MCMC) or from a replay buffer of
persistent chains carried in ``TrainState.extra`` (PCD). The buffer is a NamedTuple of
arrays updated by pure functions, so a whole PCD step (sample from the buffer, run the
chains, push them back, one optimiser update) is one jitted function that ``fit`` scans
(docs/design.md §8). RBMs train through the same step (``scorejax.rbm.train_rbm``).

Negatives come from any scorejax ``Sampler``: the step takes ``make_sampler(params) ->
Sampler`` and calls it with the current parameters (gradients stopped), e.g.
``lambda params: mala(partial(energy_fn, params), 0.01)``, or
``lambda params: decoupled_langevin(partial(score_fn, params), 10.0, 0.005)``, or
``rbm.block_gibbs`` for an RBM. Diagnostics (energy magnitude, non-finite values, the
sampler's own info such as acceptance rates) are returned in the metrics.
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scorejax._checks import check_positive, check_positive_int
from scorejax.losses import cd_loss
from scorejax.samplers.base import Sampler, count_nonfinite, run_chains
from scorejax.training import TrainState, make_train_step
from scorejax.types import Array, EnergyFn, Key, Params

NoiseFn = Callable[[Key, int], Array]  # noise_fn(key, n) -> (n, ...) fresh chain starts


class ReplayBuffer(NamedTuple):
    """Persistent chains: ``x`` (size, ...) the stored chain states."""

    x: Array


def uniform_noise(low: float, high: float, shape) -> NoiseFn:
    """``noise_fn(key, n)``: n draws uniform on [low, high]^shape (Du & Mordatch 2019's init)."""
    if not low < high:
        raise ValueError(f"low must be below high, got {low} and {high}")
    shape = tuple(shape)

    def noise_fn(key, n):
        return jax.random.uniform(key, (n, *shape), minval=low, maxval=high)

    return noise_fn


def replay_init(key: Key, noise_fn: NoiseFn, size: int) -> ReplayBuffer:
    """A buffer of ``size`` chains started at fresh noise ``noise_fn(key, size)``."""
    check_positive_int("size", size)
    return ReplayBuffer(noise_fn(key, size))


def replay_sample(
    key: Key,
    buffer: ReplayBuffer,
    batch_size: int,
    noise_fn: NoiseFn,
    reinit_fraction: float = 0.05,
) -> tuple[Array, Array, Array]:
    """Draw chain starts from the buffer, a fraction ``reinit_fraction`` replaced by fresh noise.

    Du & Mordatch 2019 (Section 3.1, "sample replay buffer"): 95% of the chains continue
    from the buffer and 5% restart from noise, so the buffer keeps exploring new modes.
    Indices are drawn uniformly without replacement, so each chain is continued once per
    step; the reinitialisation is a Bernoulli(reinit_fraction) per chain.

    Args:
      key: PRNG key.
      buffer: the ReplayBuffer.
      batch_size: number of chains to draw (<= buffer size).
      noise_fn: ``noise_fn(key, n)`` fresh starts (None when ``reinit_fraction`` is 0).
      reinit_fraction: rho in [0, 1].

    Returns:
      (x0, indices, is_reinit): starts (batch_size, ...), their buffer rows, and the mask of
      chains restarted from noise.
    """
    size = buffer.x.shape[0]
    check_positive_int("batch_size", batch_size)
    if batch_size > size:
        raise ValueError(f"batch_size must not exceed the buffer size {size}, got {batch_size}")
    _check_reinit(reinit_fraction, noise_fn)
    key_index, key_mask, key_noise = jax.random.split(key, 3)
    indices = jax.random.choice(key_index, size, (batch_size,), replace=False)
    if noise_fn is None:
        return buffer.x[indices], indices, jnp.zeros(batch_size, bool)
    is_reinit = jax.random.bernoulli(key_mask, reinit_fraction, (batch_size,))
    fresh = noise_fn(key_noise, batch_size)
    mask = is_reinit.reshape((-1,) + (1,) * (buffer.x.ndim - 1))
    return jnp.where(mask, fresh, buffer.x[indices]), indices, is_reinit


def replay_push(buffer: ReplayBuffer, indices: Array, x: Array) -> ReplayBuffer:
    """Write the advanced chains ``x`` back into rows ``indices``; the size is unchanged."""
    if np.shape(x)[1:] != buffer.x.shape[1:]:
        raise ValueError(
            f"x must have the buffer's example shape {buffer.x.shape[1:]}, got {np.shape(x)[1:]}"
        )
    return ReplayBuffer(buffer.x.at[indices].set(x))


def _check_reinit(reinit_fraction, noise_fn) -> None:
    if not 0.0 <= reinit_fraction <= 1.0:
        raise ValueError(f"reinit_fraction must lie in [0, 1], got {reinit_fraction}")
    if noise_fn is None and reinit_fraction > 0:
        raise ValueError("reinit_fraction > 0 needs a noise_fn to draw the fresh chains from")


def _negatives(key, params, make_sampler, x0, num_mcmc_steps, clip_range, unroll):
    """Run one chain per row of x0 for num_mcmc_steps under the current (frozen) parameters."""
    sampler = make_sampler(jax.lax.stop_gradient(params))
    if not isinstance(sampler, Sampler):
        raise TypeError(f"make_sampler must return a scorejax Sampler, got {type(sampler)}")
    result = run_chains(key, sampler, x0, num_mcmc_steps, unroll=unroll, warn=False)
    x = jax.lax.stop_gradient(result.state.x)
    if clip_range is not None:
        x = jnp.clip(x, clip_range[0], clip_range[1])
    info = {
        f"sampler_{name}": jnp.mean(jnp.asarray(value, jnp.float32))
        for name, value in result.info._asdict().items()
    }
    return x, info


def _diagnostics(metrics, negatives, energy_limit):
    num_nonfinite = count_nonfinite(negatives) + (~jnp.isfinite(metrics["loss"])).astype(jnp.int32)
    diverged = (num_nonfinite > 0) | ~(metrics["energy_max_abs"] <= energy_limit)
    return {**metrics, "num_nonfinite": num_nonfinite, "diverged": diverged.astype(jnp.float32)}


def make_cd_train_step(
    energy_fn: EnergyFn,
    make_sampler: Callable[[Params], Sampler],
    optimizer: optax.GradientTransformation,
    *,
    num_mcmc_steps: int,
    persistent: bool = False,
    noise_fn: NoiseFn | None = None,
    reinit_fraction: float = 0.05,
    alpha: float = 0.0,
    clip_range: tuple | None = None,
    energy_limit: float = 1e4,
    ema_decay: float = 0.999,
    unroll: int = 1,
    supervised_loss: Callable | None = None,
):
    """The contrastive-divergence train step: CD-k, short-run MCMC or persistent CD.

    Each step draws negatives x- by ``num_mcmc_steps`` = k moves of the sampler under the
    current parameters, then takes one optimiser step on ``cd_loss``
    (mean E(x+) - mean E(x-) + alpha (E(x+)^2 + E(x-)^2)). The chains start

    - at the batch: CD-k (Hinton 2002), when ``persistent=False`` and ``noise_fn`` is None;
    - at fresh noise: short-run MCMC (Nijkamp et al. 2019), when ``persistent=False`` and
      ``noise_fn`` is given;
    - from the replay buffer in ``state.extra``: persistent CD (Tieleman 2008) with Du &
      Mordatch 2019's buffer, when ``persistent=True``. Batch-size chains are drawn from
      the buffer (``replay_sample``, a fraction ``reinit_fraction`` restarted from noise),
      advanced, and pushed back (``replay_push``); chains that produced NaN/Inf are
      restarted from noise before being stored. With slowly changing parameters they
      approach the model's stationary law, and the gradient the MLE gradient. A buffer as
      large as the batch and ``reinit_fraction=0`` is Tieleman's PCD with its fantasy
      particles all advanced every step.

    Args:
      energy_fn: ``energy_fn(params, x) -> ()`` for one example.
      make_sampler: ``make_sampler(params) -> Sampler``, the negatives' kernel under
        ``params`` (gradients stopped), e.g. ``lambda p: mala(partial(energy_fn, p), 0.01)``
        or ``rbm.block_gibbs``.
      optimizer: optax transformation. Gradient clipping is optax's:
        ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-4))`` (``grad_norm`` in
        the metrics is then the norm before clipping).
      num_mcmc_steps: k.
      persistent: PCD with a replay buffer in ``state.extra`` (make the state with
        ``init_train_state(params, optimizer, extra=replay_init(...))``).
      noise_fn: ``noise_fn(key, n)``: the starts of short-run chains, or the restarts of
        persistent ones (``uniform_noise``); None for CD-k, or PCD without restarts.
      reinit_fraction: PCD's probability that a drawn chain restarts from noise.
      alpha: L2 energy penalty.
      clip_range: (low, high) clamp of the negatives to the data range, or None.
      energy_limit: |E| above which a step is flagged as diverged.
      ema_decay: EMA of the parameters, as in ``make_train_step``.
      unroll: ``lax.scan`` unroll of the chains (``run``'s knob). XLA:CPU runs the
        gradients of ``lax.conv_general_dilated`` inside a loop body many times slower than
        unrolled ones; scorejax's own image networks avoid that (docs/performance.md,
        "Image score models"), but a convolutional energy written on ``lax`` directly runs
        faster with ``unroll=num_mcmc_steps`` on the CPU.
      supervised_loss: ``supervised_loss(params, key, (x, labels)) -> scalar`` added to the
        CD loss, for a hybrid model trained on labelled batches ``(x, labels)`` (the chains
        use x): JEM's cross-entropy (``jem``). Its value is in the metrics as
        ``supervised_loss``.

    Returns:
      ``train_step(state, key, batch) -> (state, metrics)`` with metrics loss, grad_norm,
      energy_pos, energy_neg, energy_max_abs, num_nonfinite, diverged (1.0 when non-finite
      values appeared or |E| > energy_limit), the sampler's info fields averaged over steps
      and chains (``sampler_<field>``, e.g. ``sampler_acceptance_rate`` for MALA) and, for
      PCD, ``reinit_fraction`` (the realised fraction this step).
    """
    num_mcmc_steps = check_positive_int("num_mcmc_steps", num_mcmc_steps)
    unroll = check_positive_int("unroll", unroll)
    if not callable(make_sampler):
        raise TypeError(f"make_sampler must be a function params -> Sampler, got {make_sampler!r}")
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    if clip_range is not None and (len(clip_range) != 2 or not clip_range[0] < clip_range[1]):
        raise ValueError(f"clip_range must be (low, high) with low < high, got {clip_range}")
    check_positive("energy_limit", energy_limit)
    if persistent:
        _check_reinit(reinit_fraction, noise_fn)
    loss_fn = partial(cd_loss, energy_fn=energy_fn, alpha=alpha)
    if supervised_loss is not None:
        if not callable(supervised_loss):
            raise TypeError(f"supervised_loss must be a function, got {supervised_loss!r}")
        loss_fn = partial(_with_supervised, loss_fn, supervised_loss)
    inner = make_train_step(loss_fn, optimizer, ema_decay=ema_decay, has_aux=True)

    def negatives_from(key, params, x0):
        return _negatives(key, params, make_sampler, x0, num_mcmc_steps, clip_range, unroll)

    def train_step(state: TrainState, key: Key, batch):
        key_start, key_chain, key_restart, key_loss = jax.random.split(key, 4)
        positives = batch if supervised_loss is None else batch[0]
        if persistent:
            if not isinstance(state.extra, ReplayBuffer):
                raise ValueError(
                    "state.extra must be a ReplayBuffer for PCD, got "
                    f"{type(state.extra).__name__}; use init_train_state(..., "
                    "extra=replay_init(...))"
                )
            x0, indices, is_reinit = replay_sample(
                key_start, state.extra, positives.shape[0], noise_fn, reinit_fraction
            )
        else:
            x0 = positives if noise_fn is None else noise_fn(key_start, positives.shape[0])
        negatives, info = negatives_from(key_chain, state.params, x0)
        state, metrics = inner(state, key_loss, (batch, negatives))
        metrics = {**_diagnostics(metrics, negatives, energy_limit), **info}
        if persistent:
            keep = negatives
            if noise_fn is not None:
                bad = ~jnp.all(jnp.isfinite(negatives.reshape(negatives.shape[0], -1)), axis=1)
                fresh = noise_fn(key_restart, negatives.shape[0])
                keep = jnp.where(bad.reshape((-1,) + (1,) * (negatives.ndim - 1)), fresh, keep)
            state = state._replace(extra=replay_push(state.extra, indices, keep))
            metrics["reinit_fraction"] = jnp.mean(is_reinit)
        return state, metrics

    return train_step


def _with_supervised(cd, supervised, params, key, batch):
    """cd_loss on (x, negatives) plus the supervised term on (x, labels)."""
    (x, labels), negatives = batch
    key_cd, key_supervised = jax.random.split(key)
    loss, aux = cd(params, key_cd, (x, negatives))
    extra = supervised(params, key_supervised, (x, labels))
    return loss + extra, {**aux, "supervised_loss": extra}
