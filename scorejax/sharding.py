"""Scaling past one device with JAX's own sharding: chains and batches over a device mesh.

The same user code runs on 1 or N devices. A one-axis ``Mesh`` spans the devices; the
chains of a sampler (``run_chains_sharded``) and the batch of a train step
(``shard_train_step``, or ``shard_batch_fn`` inside ``fit``) are split along it, and
parameters, optimiser state and keys are replicated. Keys are split exactly as in the
unsharded code (JAX's partitionable threefry, the default, draws the same numbers however
an array is laid out), so a sharded run reproduces the unsharded one for the same key: up to
floating-point summation order where a gradient is reduced across devices. (An ``rbg`` or
``unsafe_rbg`` key draws numbers that depend on the layout.)

Devices:
- GPUs/TPUs: ``jax.devices()`` lists them; nothing to configure.
- CPU: XLA runs each device's program on its own thread, so splitting chains over
  several host devices uses several cores for the element-wise work that one device runs
  on one core. Ask for them before JAX initialises its backend:
  ``jax.config.update("jax_num_cpu_devices", 2)`` right after ``import jax`` (or
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before it). scorejax never sets
  this itself (that would be global state); ``benchmarks/`` measures what it buys.
- Several hosts: call ``initialize_distributed()`` first on every process (importing
  scorejax starts no backend, so it may come before); ``make_mesh`` then spans the devices
  of all hosts, and ``global_batch`` assembles each process's slice. Tested with two CPU
  processes on one machine (gloo collectives, JAX's CPU default).

Chains and batches must divide evenly by the number of devices on the mesh.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from scorejax._checks import check_positive_int
from scorejax._compile import combine, jit, partition
from scorejax.samplers.base import (
    CHAIN_AXIS,
    RunResult,
    Sampler,
    _check_run_args,
    _check_trace_memory,
    _drive,
    _num_chains,
    _scan,
    _trace_bytes,
    strong_array,
)
from scorejax.types import Array, Key, PyTree

AXIS = "batch"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Start multi-host JAX (``jax.distributed.initialize``); call once per process, first.

    On Slurm, Open MPI and Cloud TPU the arguments are detected and may be left out;
    elsewhere pass the coordinator's ``"host:port"``, the number of processes and this
    process's rank. After it, ``jax.devices()`` lists every host's devices, so
    ``make_mesh()`` spans them all, while ``jax.local_devices()`` are this host's.

    Args:
      coordinator_address: ``"host:port"`` of process 0.
      num_processes: total number of processes.
      process_id: this process's rank in [0, num_processes).
    """
    if num_processes is not None:
        check_positive_int("num_processes", num_processes)
    if process_id is not None and (num_processes is None or not 0 <= process_id < num_processes):
        raise ValueError(
            f"process_id must lie in [0, num_processes={num_processes}), got {process_id}"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def make_mesh(num_devices: int | None = None, axis_name: str = AXIS) -> Mesh:
    """A one-axis mesh over the first ``num_devices`` devices (all devices, all hosts, by default).

    Args:
      num_devices: how many devices; None takes ``len(jax.devices())``.
      axis_name: the name of the mesh axis that chains and batches are split along.
    """
    devices = jax.devices()
    num_devices = len(devices) if num_devices is None else num_devices
    check_positive_int("num_devices", num_devices)
    if num_devices > len(devices):
        raise ValueError(f"num_devices={num_devices} exceeds the {len(devices)} devices available")
    return Mesh(np.asarray(devices[:num_devices]), (axis_name,))


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must have one axis, got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def _check_divisible(name: str, size: int, mesh: Mesh) -> None:
    if size % mesh.size:
        raise ValueError(
            f"{name} has {size} rows, which does not divide evenly over {mesh.size} devices"
        )


def shard_leading(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``tree`` split along its leading axis over ``mesh``."""
    sharding = NamedSharding(mesh, PartitionSpec(_axis(mesh)))
    for leaf in jax.tree_util.tree_leaves(tree):
        _check_divisible("an array", np.shape(leaf)[0], mesh)
    return jax.device_put(tree, sharding)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place a full copy of every leaf of ``tree`` on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def run_chains_sharded(
    key: Key,
    sampler: Sampler,
    x0: Array,
    num_steps: int,
    *,
    mesh: Mesh | None = None,
    schedule: PyTree = (),
    thin: int = 0,
    observable: Callable | None = None,
    start_step: int = 0,
    unroll: int | None = None,
    progress: bool = False,
    steps_per_call: int | None = None,
    warn: bool = True,
    trace_memory_fraction: float = 0.5,
) -> RunResult:
    """``run_chains`` with the chains split over the devices of ``mesh``: same key, same result.

    Each device runs its block of chains with ``shard_map`` (no communication: chains are
    independent); the per-chain keys are ``jax.random.split(key, num_chains)``, as in
    ``run_chains``, so the two agree for the same key on any number of devices.

    Args:
      key: PRNG key.
      sampler: the kernel (its arrays are data, as in ``run``).
      x0: (num_chains, ...) initial positions; num_chains divisible by the mesh size.
      num_steps: steps per chain.
      mesh: a one-axis mesh (``make_mesh()``, all devices, by default).
      schedule, thin, observable, start_step, unroll, progress, steps_per_call, warn,
        trace_memory_fraction: as in ``run``.

    Returns:
      RunResult with a leading chain axis, sharded along it.
    """
    mesh = make_mesh() if mesh is None else mesh
    if np.ndim(x0) < 1:
        raise ValueError(f"x0 must have a leading chain axis, got shape {np.shape(x0)}")
    _check_divisible("x0", np.shape(x0)[0], mesh)
    x0 = strong_array(x0)
    args = _check_run_args(sampler, x0, num_steps, schedule, thin, observable, unroll, start_step)
    return _drive(_sharded_run, key, sampler, x0, args, start_step, progress, steps_per_call,
                  warn, trace_memory_fraction, chain_axis=True, mesh=mesh)  # fmt: skip


@jit(training=False)
def _sharded_run(key, sampler, x0, args, start, from_state, memory_fraction, mesh):
    chains = PartitionSpec(_axis(mesh))
    keys = jax.random.split(key, _num_chains(x0))  # as run_chains: chain i's key
    # shard_map takes arrays only: the sampler's and the arguments' arrays go in replicated,
    # their code stays static
    arrays, static = partition((sampler, args))

    def block(keys, x0, arrays, start):
        sampler, args = combine(arrays, static)
        one = lambda k, x: _scan(k, sampler, x, args, start, from_state)
        return jax.vmap(one, axis_name=CHAIN_AXIS)(keys, x0)

    # check_vma=False: the runner's zero-initialised info accumulator is device-invariant
    # until the first step makes it vary per block; chains never communicate, so there is
    # nothing for the check to guard.
    result = jax.shard_map(
        block,
        mesh=mesh,
        in_specs=(chains, chains, PartitionSpec(), PartitionSpec()),
        out_specs=chains,
        check_vma=False,
    )(keys, x0, arrays, start)
    if not from_state:
        _check_trace_memory(_trace_bytes(result.trace), memory_fraction)
    return result


def shard_batch_fn(batch_fn: Callable[[Key], Any], mesh: Mesh) -> Callable[[Key], Any]:
    """Wrap ``batch_fn(key)`` so its batch is laid out split along its leading axis over ``mesh``.

    Use it with ``fit`` and a replicated state: ``fit(train_step, replicate(state, mesh), key,
    shard_batch_fn(batch_fn, mesh), ...)``. XLA then computes each device's part of the loss
    and gradient and sums the gradients across devices (data parallelism), and the rest of
    the user code is unchanged. A ``jax.tree_util.Partial`` (``minibatches``) stays one, so
    its data remain an argument of ``fit``'s compiled loop.
    """
    sharding = NamedSharding(mesh, PartitionSpec(_axis(mesh)))
    partial_fn = isinstance(batch_fn, jax.tree_util.Partial)
    inner = batch_fn.func if partial_fn else batch_fn

    def sharded(*args, **kwargs):
        return jax.lax.with_sharding_constraint(inner(*args, **kwargs), sharding)

    if partial_fn:
        return jax.tree_util.Partial(sharded, *batch_fn.args, **batch_fn.keywords)
    return sharded


def shard_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """Jit ``train_step(state, key, batch)`` with the batch split over ``mesh`` (data parallel).

    The state and key are replicated, the batch is split along its leading axis; gradients
    are averaged across devices by XLA (the loss is a mean over the batch, so the result
    equals the unsharded step up to summation order). The state is donated.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(_axis(mesh)))

    return jax.jit(
        train_step,
        in_shardings=(replicated, replicated, split),
        out_shardings=replicated,
        donate_argnums=(0,),
    )


def global_batch(local_batch: Array, mesh: Mesh) -> Array:
    """Assemble a global batch from each process's ``local_batch`` (multi-host data loading).

    Every process passes its own rows; the result is one array split over all the mesh's
    devices along the leading axis (``jax.make_array_from_process_local_data``). With one
    process it equals ``shard_leading(local_batch, mesh)``.
    """
    sharding = NamedSharding(mesh, PartitionSpec(_axis(mesh)))
    return jax.make_array_from_process_local_data(sharding, np.asarray(local_batch))
