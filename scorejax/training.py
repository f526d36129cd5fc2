"""Training: a pure train step and a thin loop around it (docs/design.md §8).

``make_train_step(loss_fn, optimizer)`` returns ``train_step(state, key, batch)``; ``fit``
compiles ``steps_per_call`` of them into one ``lax.scan`` and does the progress bar,
history and callbacks (checkpoints, logs) in Python between calls, so no step waits on the
host.

Reproducible by construction (docs/design.md §22): step t uses the key
``jax.random.fold_in(key, t)`` with t the global step ``state.step``, so the numbers do not
depend on ``steps_per_call``, and a run resumed from a checkpoint of step t continues
exactly as the uninterrupted run.
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from scorejax._checks import check_positive, check_positive_int
from scorejax._compile import jit
from scorejax.types import Array, Key, LossFn, Params


class TrainState(NamedTuple):
    """Everything a training run carries, as arrays only.

    params: model parameters. opt_state: optimiser state. step: int32 count of the steps
    taken (the global step). ema_params: exponential moving average of params (Polyak
    averaging; used for sampling in NCSNv2, Song & Ermon 2020, Technique 5). extra: any
    further carried arrays, e.g. a persistent-chain replay buffer (None when unused).
    """

    params: Params
    opt_state: Any
    step: Array
    ema_params: Params
    extra: Any = None


def init_train_state(params: Params, optimizer: optax.GradientTransformation, extra=None):
    """A fresh TrainState: optimiser initialised, EMA equal to params, step 0."""
    # fit donates the state: copy, so the caller's params stay valid and the EMA does not
    # share (and doubly donate) the parameters' buffers
    params = jax.tree_util.tree_map(jnp.copy, params)
    ema = jax.tree_util.tree_map(jnp.copy, params)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), ema, extra)


def adam_with_warmup(
    learning_rate: float, *, warmup_steps: int = 5000, grad_clip: float | None = 1.0
) -> optax.GradientTransformation:
    """Adam with a linear learning-rate warm-up and gradient clipping, the optimiser of the
    score-SDE recipe (Song et al. 2021, Appendix H: learning rate 2e-4, 5,000 warm-up steps,
    gradients clipped to global norm 1; NCSNv2 trains with plain Adam and an EMA of the
    weights, which ``make_train_step`` keeps).

    Args:
      learning_rate: the rate after warm-up.
      warmup_steps: steps of the linear ramp from 0 (0 for none).
      grad_clip: the global-norm clip, or None for none.
    """
    check_positive("learning_rate", learning_rate)
    if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    rate = (
        optax.linear_schedule(0.0, learning_rate, warmup_steps) if warmup_steps else learning_rate
    )
    adam = optax.adam(rate)
    return adam if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adam)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.999,
    has_aux: bool = False,
) -> Callable:
    """Build ``train_step(state, key, batch) -> (state, metrics)``.

    One optimiser update on ``grad loss_fn(params, key, batch)`` followed by the EMA update
    with warm-up,

        ema <- d_t * ema + (1 - d_t) * params,   d_t = min(d, (1 + t) / (10 + t)),

    t the number of steps taken before this one (TensorFlow's ExponentialMovingAverage with
    ``num_updates``): early on the average follows the parameters (d_0 = 0.1), so a short run
    does not sample from near-initial weights, and after ~10 / (1 - d) steps d_t = d.
    ``metrics`` holds ``loss`` and ``grad_norm``, plus the loss's auxiliary dict when
    ``has_aux`` (then ``loss_fn`` returns ``(loss, aux)``).

    Args:
      loss_fn: ``loss_fn(params, key, batch)``, keywords bound with ``functools.partial``.
      optimizer: an optax transformation.
      ema_decay: d in [0, 1).
      has_aux: whether ``loss_fn`` returns ``(loss, aux_dict)``.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def train_step(state: TrainState, key: Key, batch) -> tuple[TrainState, dict]:
        out, grads = grad_fn(state.params, key, batch)
        loss, aux = out if has_aux else (out, {})
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
        ema = jax.tree_util.tree_map(
            lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), state.ema_params, params
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return state._replace(
            params=params, opt_state=opt_state, step=state.step + 1, ema_params=ema
        ), metrics

    return train_step


def minibatches(data, batch_size: int) -> jax.tree_util.Partial:
    """A batch sampler ``batch_fn(key) -> (batch_size, ...)`` drawing rows of ``data`` uniformly
    with replacement, on device (no host round-trip inside ``fit``). ``data`` is an array or
    a pytree of arrays with a common leading axis (``(images, labels)``: the same rows of
    each).

    It is a ``jax.tree_util.Partial`` holding ``data`` as a leaf, so ``fit`` passes the data
    to its compiled loop as an argument: the data are not baked into the program as a
    constant, and a new sampler over data of the same shape and batch size reuses the
    compiled loop.
    """
    check_positive_int("batch_size", batch_size)
    data = jax.tree.map(jnp.asarray, data)
    if len({leaf.shape[:1] for leaf in jax.tree.leaves(data)}) != 1:
        shapes = [leaf.shape for leaf in jax.tree.leaves(data)]
        raise ValueError(f"data's arrays must share their leading axis, got shapes {shapes}")
    return jax.tree_util.Partial(_row_sampler(batch_size), data)


@functools.cache
def _row_sampler(batch_size: int) -> Callable[[Array, Key], Array]:
    # one function per batch size: a Partial's function is part of its tree structure, so
    # samplers with equal batch sizes hit the same entry of jit's cache
    def draw_rows(data, key):
        num_rows = jax.tree.leaves(data)[0].shape[0]
        rows = jax.random.randint(key, (batch_size,), 0, num_rows)
        return jax.tree.map(lambda leaf: leaf[rows], data)

    return draw_rows


@jit(training=True, donate_argnums=(0,))
def _scan_steps(state, key, batch_fn, train_step, num_steps, unroll):
    def body(state, _):
        key_batch, key_step = jax.random.split(jax.random.fold_in(key, state.step))
        return train_step(state, key_step, batch_fn(key_batch))

    return jax.lax.scan(body, state, None, length=num_steps, unroll=unroll)


Callback = Callable[[int, TrainState, dict], None]


def fit(
    train_step: Callable,
    state: TrainState,
    key: Key,
    batch_fn: Callable[[Key], Any],
    *,
    num_steps: int,
    steps_per_call: int = 100,
    progress: bool = True,
    description: str = "training",
    unroll: int = 1,
    callbacks: tuple[Callback, ...] = (),
) -> tuple[TrainState, dict]:
    """Run ``num_steps`` training steps, ``steps_per_call`` per compiled ``lax.scan``.

    Step t (the global step ``state.step``) draws its batch and its loss's key from
    ``jax.random.fold_in(key, t)``, so the result does not depend on ``steps_per_call``, and
    ``fit`` called again on its own output with the same key continues the same run: 20 + 20
    steps equal 40. Between calls it updates a tqdm bar with the running loss and calls the
    ``callbacks``; the metrics of every step come back as NumPy arrays, and a non-finite
    loss raises a RuntimeWarning naming the first bad step. ``state`` is donated: do not
    reuse the state passed in.

    The host never waits inside a call, and calls are pipelined: call i + 1 is dispatched
    before the metrics of call i are copied to the host and the callbacks see them, so the
    device is not idle while the progress bar, logs and checkpoints are written (when
    there are callbacks, the state is copied on the device for them before call i + 1
    takes it over).

    Args:
      train_step: from ``make_train_step`` (build it once: a new function compiles again).
      state: initial TrainState (its ``step`` is the global step to start from).
      key: the run's PRNG key (the same for the whole run, and after a resume).
      batch_fn: ``batch_fn(key) -> batch``, e.g. ``lambda k: sample_two_gaussians(k, 512)``
        or ``minibatches(data, 512)``. A plain function is code: a new lambda on every
        ``fit`` call compiles again, so build it once and pass the same function each time.
        A ``jax.tree_util.Partial`` (what ``minibatches`` returns) passes its arrays as
        arguments instead, so new data of the same shapes reuse the program.
      num_steps: how many steps to take; a last shorter call covers any remainder.
      steps_per_call: K steps per compiled call.
      progress: show the progress bar.
      unroll: ``lax.scan`` unroll factor of the K steps.
      callbacks: ``callback(step, state, metrics)`` functions called on the host after each
        compiled call, with the global step reached, the state at that step and the metrics
        of that call's steps (NumPy arrays); see ``scorejax.checkpoint`` for checkpoints
        and TensorBoard logs.

    Returns:
      (final state, history) with history[name] of shape (num_steps,).
    """
    num_steps = check_positive_int("num_steps", num_steps)
    steps_per_call = check_positive_int("steps_per_call", steps_per_call)
    unroll = check_positive_int("unroll", unroll)
    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState (init_train_state), got {type(state)}")
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be functions (step, state, metrics), got {callback}")
    chunks: dict[str, list] = {}
    bar = tqdm(total=num_steps, desc=description, disable=not progress, leave=False)

    def collect(pending):
        metrics, k, snapshot = pending
        metrics = {name: np.asarray(v) for name, v in jax.device_get(metrics).items()}
        for name, values in metrics.items():
            chunks.setdefault(name, []).append(values)
        bar.update(k)
        bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.4g}")
        if snapshot is not None:
            step = int(snapshot.step)
            for callback in callbacks:
                callback(step, snapshot, metrics)

    done, pending = 0, None
    while done < num_steps:
        k = min(steps_per_call, num_steps - done)
        state, metrics = _scan_steps(state, key, batch_fn, train_step, k, unroll)
        # the next call takes the state over (donation): copy it for the callbacks first
        snapshot = jax.tree_util.tree_map(jnp.copy, state) if callbacks else None
        if pending is not None:
            collect(pending)
        pending = (metrics, k, snapshot)
        done += k
    collect(pending)
    bar.close()
    history = {name: np.concatenate(parts) for name, parts in chunks.items()}
    if not np.all(np.isfinite(history["loss"])):
        bad = int(np.argmax(~np.isfinite(history["loss"])))
        warnings.warn(
            f"{description} diverged: non-finite loss first at step {bad}",
            RuntimeWarning,
            stacklevel=2,
        )
    return state, history
