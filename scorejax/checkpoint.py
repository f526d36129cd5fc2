"""Checkpoints of whole training runs (orbax) and TensorBoard logs (tensorboardX), and the
``fit`` callbacks that write them.

A checkpoint holds everything a run needs to continue: the ``TrainState`` (parameters,
optimiser state, global step, EMA parameters, any replay buffer), the run's key and a
user config dict (JSON). Writes are atomic (orbax writes a temporary directory and renames
it when complete); the last ``max_to_keep`` are kept; nothing is pickled. Because ``fit``
derives step t's key from the run's key and t, continuing from a checkpoint is
bit-identical to the uninterrupted run::

    state = sj.init_train_state(params, optimizer)
    callbacks = [checkpoint_callback("ckpt", key, every=1000)]
    if resume:
        state, key, config, step = restore_checkpoint("ckpt", state)
    state, history = sj.fit(train_step, state, key, batch_fn,
                            num_steps=total - int(state.step), callbacks=callbacks)

A truncated or corrupted checkpoint is reported with a warning naming it, and the newest
readable one before it is used.
"""

import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from scorejax._checks import check_positive_int
from scorejax.training import TrainState
from scorejax.types import Array, Key


class Restored(NamedTuple):
    """What ``restore_checkpoint`` returns: the state, the run's key, the config dict and the
    step of the checkpoint read."""

    state: TrainState
    key: Key
    config: dict
    step: int


def _manager(directory, max_to_keep: int | None = None):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def _key_meta(key: Key) -> dict:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        return {"key_data": np.asarray(jax.random.key_data(key)).tolist(), "key_impl": impl}
    return {"key_data": np.asarray(key).tolist(), "key_impl": None}  # a legacy uint32 key


def _key_from_meta(meta: dict) -> Key:
    data = np.asarray(meta["key_data"], np.uint32)
    impl = meta["key_impl"]
    if impl is None:
        return jax.numpy.asarray(data)
    from scorejax.prng import THREEFRY_UNROLLED

    if impl == str(jax.random.key_impl(jax.random.key(0, impl=THREEFRY_UNROLLED))):
        impl = THREEFRY_UNROLLED
    return jax.random.wrap_key_data(data, impl=impl)


def save_checkpoint(
    directory,
    state: TrainState,
    key: Key,
    *,
    config: dict | None = None,
    max_to_keep: int | None = 3,
    manager=None,
) -> Path:
    """Save ``state``, the run's ``key`` and ``config`` as checkpoint ``state.step``.

    Args:
      directory: the run's checkpoint folder (created if needed); each checkpoint is a
        sub-folder named by its step.
      state: the TrainState.
      key: the run's key (the one passed to ``fit``).
      config: a JSON-serialisable dict (e.g. ``dataclasses.asdict(cfg)``).
      max_to_keep: keep the newest this many (None keeps all).
      manager: an orbax CheckpointManager to reuse (``checkpoint_callback`` passes its own).

    Returns:
      the checkpoint's folder.
    """
    import orbax.checkpoint as ocp

    if not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState, got {type(state).__name__}")
    manager = _manager(directory, max_to_keep) if manager is None else manager
    step = int(state.step)
    meta = {"config": config or {}, "step": step, **_key_meta(key)}
    manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    manager.wait_until_finished()
    return Path(directory) / str(step)


def checkpoint_steps(directory) -> list[int]:
    """The steps of the complete checkpoints in ``directory``, oldest first."""
    if not Path(directory).exists():
        return []
    return sorted(_manager(directory).all_steps())


def restore_checkpoint(directory, template: TrainState, *, step: int | None = None) -> Restored:
    """Read a checkpoint of ``directory``: the newest readable one, or ``step``.

    Args:
      directory: the run's checkpoint folder.
      template: a TrainState of the run's structure, shapes and dtypes (a fresh
        ``init_train_state`` of the same model and optimiser; its values are not used).
      step: the checkpoint to read; None reads the newest, falling back (with a warning) to
        older ones when it is truncated or corrupted.

    Returns:
      Restored(state, key, config, step).

    Raises:
      FileNotFoundError: when ``directory`` holds no checkpoint (or not ``step``).
      ValueError: when no checkpoint could be read, naming each one's error.
    """
    import orbax.checkpoint as ocp

    if not isinstance(template, TrainState):
        raise TypeError(f"template must be a TrainState, got {type(template).__name__}")
    steps = checkpoint_steps(directory)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint of step {step} in {directory}: {steps}")
        steps = [step]
    manager = _manager(directory)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    errors = []
    for candidate in reversed(steps):
        try:
            restored = manager.restore(
                candidate,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
            state, meta = restored.state, restored.meta
            _check_restored(state, template)
        except Exception as error:  # a truncated, corrupted or mismatched checkpoint
            errors.append(f"step {candidate}: {type(error).__name__}: {error}")
            warnings.warn(
                f"checkpoint {Path(directory) / str(candidate)} could not be read "
                f"({type(error).__name__}: {str(error)[:200]}); trying an older one",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        return Restored(TrainState(*state), _key_from_meta(meta), meta["config"], candidate)
    raise ValueError(f"no readable checkpoint in {directory}:\n" + "\n".join(errors))


def _check_restored(state, template) -> None:
    if jax.tree_util.tree_structure(state) != jax.tree_util.tree_structure(template):
        raise ValueError("the checkpoint's structure differs from the template's")
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(template),
                    strict=True):  # fmt: skip
        if np.shape(a) != np.shape(b):
            raise ValueError(f"a leaf of shape {np.shape(a)} where the template has {np.shape(b)}")


def checkpoint_callback(
    directory, key: Key, *, every: int, max_to_keep: int | None = 3, config: dict | None = None
) -> Callable:
    """A ``fit`` callback that saves a checkpoint whenever the global step passes a multiple of
    ``every`` (at the end of the compiled call that passes it: make ``every`` a multiple of
    ``fit``'s ``steps_per_call`` for checkpoints at exactly those steps).

    Args:
      directory: the run's checkpoint folder.
      key: the run's key (the one passed to ``fit``), stored with each checkpoint.
      every: the checkpoint interval in steps.
      max_to_keep: keep the newest this many.
      config: a JSON-serialisable dict stored with each checkpoint.
    """
    every = check_positive_int("every", every)
    manager = _manager(directory, max_to_keep)

    def callback(step: int, state: TrainState, metrics: dict) -> None:
        first = step - len(metrics["loss"])
        if step // every > first // every:
            save_checkpoint(directory, state, key, config=config, manager=manager)

    return callback


def tensorboard_callback(
    logdir,
    *,
    images: Callable[[TrainState], Array] | None = None,
    image_every: int = 1000,
    flush: bool = True,
) -> Callable:
    """A ``fit`` callback writing every step's metrics (and sample grids) for TensorBoard.

    Writes with tensorboardX (no TensorFlow needed); read the files with
    ``tensorboard --logdir`` or ``read_events``. Each metric is a scalar per step, at the
    global step its update reached (a metric with more axes is averaged over them).

    Args:
      logdir: the folder for the event files.
      images: ``images(state) -> (N, H, W)`` or ``(N, H, W, 3)`` images (e.g. samples from
        the EMA parameters), written as one grid (``plot.tile_images``) whenever the step
        passes a multiple of ``image_every``.
      image_every: the interval of the image grids in steps.
      flush: flush the writer after each call, so the files are complete at every moment.

    Returns:
      the callback; its ``close()`` closes the writer.
    """
    from tensorboardX import SummaryWriter

    from scorejax.plot import tile_images

    image_every = check_positive_int("image_every", image_every)
    writer = SummaryWriter(str(logdir))

    def callback(step: int, state: TrainState, metrics: dict) -> None:
        first = step - len(metrics["loss"])
        for name, values in metrics.items():
            values = np.asarray(values, np.float64).reshape(len(values), -1).mean(axis=1)
            for i, value in enumerate(values):
                writer.add_scalar(name, value, first + i + 1)
        if images is not None and step // image_every > first // image_every:
            grid = tile_images(np.asarray(images(state)))
            writer.add_image("samples", grid, step, dataformats="HWC" if grid.ndim == 3 else "HW")
        if flush:
            writer.flush()

    callback.close = writer.close
    return callback


def read_events(logdir) -> dict[str, list[tuple[int, Any]]]:
    """Read TensorBoard event files back: ``{tag: [(step, value), ...]}`` in file order.

    Scalars come back as floats and images as uint8 arrays (H, W, C). The files are TFRecord
    streams (a little-endian uint64 length, its masked CRC-32C, the serialised ``Event``
    protocol buffer, its CRC); the CRCs are not checked.
    """
    from tensorboardX.proto import event_pb2

    events: dict[str, list] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("image"):
                    events.setdefault(value.tag, []).append(
                        (event.step, _decode_png(value.image.encoded_image_string))
                    )
                elif value.HasField("simple_value"):
                    events.setdefault(value.tag, []).append((event.step, value.simple_value))
    return events


def _decode_png(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))
