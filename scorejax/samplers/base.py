"""The kernel contract and the one runner that scans any kernel.

A sampler is an ``init``/``step`` pair over NamedTuples (blackjax's contract, without its
API layers): ``init(x) -> state`` and ``step(key, state, *schedule_t) -> (state, info)``.
Kernels see one chain; many chains and many seeds are ``jax.vmap`` over the runner
(``run_chains``). scorejax's kernels are built from ``jax.tree_util.Partial`` objects, so a
``Sampler`` is a pytree whose numbers (step sizes, the parameters inside a score function)
are leaves: rebuilding one with new numbers reuses the compiled run (docs/design.md §17).

Keys: step t of a run uses ``jax.random.fold_in(key, start_step + t)``, derived inside the
loop from the key the user passed (its implementation is the user's choice, e.g.
``jax.random.key(seed, impl="rbg")``); ``run_chains`` gives chain i the key
``jax.random.split(key, num_chains)[i]``. So a run of n steps followed by a run of m steps
from its final position with ``start_step=n`` and the same key equals one run of n + m
steps (for kernels whose state is a function of the position, as all of scorejax's are
except parallel tempering's swap parity), and a chunked run equals an unchunked one.
"""

import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from scorejax._checks import check_integer, check_real_float
from scorejax._compile import jit
from scorejax.types import Array, Key, PyTree


class Sampler(NamedTuple):
    """A Markov kernel: ``init(x) -> state``, ``step(key, state, *schedule_t) -> (state, info)``."""

    init: Callable[[Array], Any]
    step: Callable[..., tuple[Any, Any]]


class RunResult(NamedTuple):
    """What ``run`` returns.

    state: the final state.
    trace: ``observable(state)`` (the state itself by default) every ``thin`` steps,
      stacked on a leading axis of length ``num_steps // thin`` (None when ``thin == 0``).
    info: each field of the kernel's info averaged over the steps of the run (acceptance
      rates; non-finite counts, where any value above zero means the chain diverged).
    """

    state: Any
    trace: Any
    info: Any


CHAIN_AXIS = "chains"  # the vmap axis of run_chains: a kernel may average over its chains


def chain_mean(x: Array) -> Array:
    """The mean of ``x`` over the chains of the ``run_chains`` call a kernel runs in (its vmap
    axis ``CHAIN_AXIS``; each device's chains in a sharded run), or ``x`` itself for a chain
    run alone (``run``, or a ``jax.vmap`` without that axis name)."""
    try:
        return jax.lax.pmean(x, CHAIN_AXIS)
    except NameError:  # no enclosing chain axis
        return x


def count_nonfinite(x: Array) -> Array:
    """Number of NaN or Inf entries of ``x`` (int32), the divergence signal kernels report."""
    return jnp.sum(~jnp.isfinite(x)).astype(jnp.int32)


def strong_array(x) -> Array:
    """``x`` as an array without JAX's weak type (``jnp.full(2, 1.0)`` is weakly typed), so a
    jitted sampler sees the same abstract value, and does not retrace, for any float32 input."""
    if isinstance(x, jax.Array) and not x.weak_type:
        return x
    x = jnp.asarray(x)
    return jnp.asarray(x, dtype=x.dtype)


def default_unroll() -> int:
    """The ``lax.scan`` unroll factor ``run`` uses when none is given: 1 on CPU, 8 elsewhere
    (on accelerators a step is a few small kernels and the loop's per-iteration overhead
    dominates; docs/performance.md has the measurements)."""
    return 1 if jax.default_backend() == "cpu" else 8


def check_sampler(name: str, sampler) -> None:
    """Raise TypeError unless ``sampler`` is a ``Sampler(init, step)`` of two functions."""
    if not isinstance(sampler, Sampler):
        raise TypeError(
            f"{name} must be a scorejax Sampler(init, step), such as ula(score_fn, step_size) "
            f"or mala(energy_fn, step_size); got {type(sampler).__name__}"
        )
    if not (callable(sampler.init) and callable(sampler.step)):
        raise TypeError(f"{name} must hold two functions init and step, got {sampler!r}")


class _RunArgs(NamedTuple):
    """run's arguments after the checks; everything the compiled body needs."""

    num_steps: int
    schedule: Any
    thin: int
    observable: Any
    unroll: int


def _check_run_args(sampler, x0, num_steps, schedule, thin, observable, unroll, start_step):
    check_sampler("sampler", sampler)
    num_steps = check_integer("num_steps", num_steps, 1)
    thin = check_integer("thin", thin, 0)
    if thin and num_steps % thin:
        raise ValueError(f"thin must be 0 or a divisor of num_steps={num_steps}, got {thin}")
    unroll = check_integer("unroll", default_unroll() if unroll is None else unroll, 1)
    if observable is not None and not callable(observable):
        raise TypeError(f"observable must be a function of the state, got {observable!r}")
    if isinstance(start_step, int | np.integer):
        check_integer("start_step", start_step, 0)
    schedule = tuple(schedule) if isinstance(schedule, list) else schedule
    for i, leaf in enumerate(jax.tree_util.tree_leaves(schedule)):
        if np.ndim(leaf) < 1 or np.shape(leaf)[0] != num_steps:
            raise ValueError(
                f"schedule[{i}] must have a leading axis of length num_steps={num_steps}, "
                f"got shape {np.shape(leaf)}"
            )
    check_real_float("x0", x0)
    return _RunArgs(num_steps, schedule, thin, observable, unroll)


def run(
    key: Key,
    sampler: Sampler,
    x0: Array,
    num_steps: int,
    *,
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
    """Run one chain of ``sampler`` for ``num_steps`` steps with ``lax.scan``, jitted.

    Step t uses the key ``jax.random.fold_in(key, start_step + t)``. A ``schedule`` (a tuple
    of arrays with leading axis ``num_steps``) is scanned alongside and passed as
    ``step(key, state, *schedule[t])``: a schedule is data (docs/design.md §5), so annealing and
    decaying step sizes cost no recompiles.

    Args:
      key: a typed PRNG key; the kernel receives keys of its implementation.
      sampler: the kernel. Its arrays are data: a sampler rebuilt with new numbers (a step
        size, the parameters in ``partial(score_fn, params)``) reuses the compiled run; a new
        plain function (a lambda) compiles again.
      x0: the initial position of one chain (real floating point; the state keeps its dtype).
      num_steps: number of steps.
      schedule: per-step arguments of ``step``.
      thin: keep ``observable(state)`` every ``thin`` steps (0 keeps no trace); must divide
        num_steps (with ``progress``, each call's steps too).
      observable: ``observable(state) -> pytree`` recorded in the trace instead of the whole
        state (an energy, a magnetisation), so long traces stay small.
      start_step: the index of the first step (to continue a chain: pass the final position
        and the number of steps already run, with the same key).
      unroll: ``lax.scan`` unroll factor; None picks ``default_unroll()``.
      progress: run in ``steps_per_call`` chunks (default num_steps / 20, a multiple of
        ``thin``) with a progress bar; the numbers are those of one call. Ignored under the
        user's ``jit`` or ``vmap``, where Python cannot look between steps.
      steps_per_call: the chunk length when ``progress`` is on.
      warn: warn (RuntimeWarning) when the chain produced NaN or Inf or had divergent
        transitions (``warn_if_diverged``). Under ``jit``/``vmap`` the counts stay in
        ``info`` only.
      trace_memory_fraction: warn before running when the trace would take more than this
        fraction of the device's memory (the host's on the CPU); checked when the run is
        compiled, so a repeated call of the same shapes says it once.

    Returns:
      RunResult(state, trace, info) with ``info`` averaged over the steps.

    For many chains: ``run_chains`` (or ``jax.vmap`` of ``run`` over keys and positions).
    The whole run (or each chunk) is one compiled program with no host round-trip; XLA
    updates the scan's carried state in place.
    """
    x0 = strong_array(x0)
    args = _check_run_args(sampler, x0, num_steps, schedule, thin, observable, unroll, start_step)
    return _drive(_run_one, key, sampler, x0, args, start_step, progress, steps_per_call,
                  warn, trace_memory_fraction, chain_axis=False)  # fmt: skip


def run_chains(
    key: Key,
    sampler: Sampler,
    x0: Array,
    num_steps: int,
    *,
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
    """``run`` vmapped over the leading axis of ``x0`` (one chain per row), one key per chain.

    Chain i uses ``jax.random.split(key, num_chains)[i]`` as ``run`` uses its key, so a
    chain's numbers do not depend on how many chains run beside it. Every field of the
    result gains a leading chain axis (a trace is (num_chains, num_steps // thin, ...));
    the keyword arguments are ``run``'s (a schedule is shared by all chains). The warning
    names how many chains diverged.
    """
    if np.ndim(x0) < 1:
        raise ValueError(f"x0 must have a leading chain axis, got shape {np.shape(x0)}")
    x0 = strong_array(x0)
    args = _check_run_args(sampler, x0, num_steps, schedule, thin, observable, unroll, start_step)
    return _drive(_run_many, key, sampler, x0, args, start_step, progress, steps_per_call,
                  warn, trace_memory_fraction, chain_axis=True)  # fmt: skip


def _drive(compiled, key, sampler, x0, args, start_step, progress, steps_per_call, warn,
           memory_fraction, chain_axis, **extra):  # fmt: skip
    """Call ``compiled`` once, or in chunks with a progress bar, then report divergence."""
    leaves = jax.tree_util.tree_leaves((key, x0, args.schedule, start_step, sampler))
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
    start = jnp.asarray(start_step, jnp.uint32)
    if not progress or traced:
        result = compiled(key, sampler, x0, args, start, False, memory_fraction, **extra)
    else:
        result = _chunked(compiled, key, sampler, x0, args, start, steps_per_call,
                          memory_fraction, chain_axis, extra)  # fmt: skip
    if warn and not traced:
        warn_if_diverged(result.info, "run_chains" if chain_axis else "run", stacklevel=3)
    return result


def _chunked(compiled, key, sampler, x0, args, start, steps_per_call, memory_fraction,
             chain_axis, extra):  # fmt: skip
    unit = max(args.thin, 1)
    if steps_per_call is None:
        steps_per_call = -(-max(args.num_steps // 20, 1) // unit) * unit
    steps_per_call = check_integer("steps_per_call", steps_per_call, 1)
    if steps_per_call % unit:
        raise ValueError(f"steps_per_call must be a multiple of thin={args.thin}")
    # every chunk continues a state, so one program serves them all (init is its own)
    state, infos, traces = _initial_state(sampler, x0, chain_axis), [], []
    bar = tqdm(total=args.num_steps, desc="sampling", leave=False)
    for begin in range(0, args.num_steps, steps_per_call):
        n = min(steps_per_call, args.num_steps - begin)
        part = args._replace(
            num_steps=n,
            schedule=jax.tree_util.tree_map(lambda a, b=begin, n=n: a[b : b + n], args.schedule),
        )
        result = compiled(key, sampler, state, part, start + begin, True, memory_fraction,
                          **extra)  # fmt: skip
        if begin == 0 and result.trace is not None:
            size = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(result.trace))
            _check_trace_memory(size * -(-args.num_steps // n), memory_fraction)
        state = result.state
        infos.append((n, result.info))
        traces.append(result.trace)
        bar.update(n)
    bar.close()
    info = jax.tree_util.tree_map(
        lambda *values: (
            sum(n * v for (n, _), v in zip(infos, values, strict=True)) / args.num_steps
        ),
        *[i for _, i in infos],
    )
    trace = None
    if args.thin:
        axis = 1 if chain_axis else 0
        trace = jax.tree_util.tree_map(lambda *t: jnp.concatenate(t, axis=axis), *traces)
    return RunResult(state, trace, info)


@jit
def _initial_state(sampler, x0, chain_axis):
    init = lambda x: _init(sampler, x)
    return jax.vmap(init)(x0) if chain_axis else init(x0)


def _device_memory_bytes() -> int:
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # not every backend reports it
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_trace_memory(num_bytes: int, fraction: float) -> None:
    limit = _device_memory_bytes()
    if num_bytes > fraction * limit:
        warnings.warn(
            f"the trace will take {num_bytes / 2**30:.2f} GiB, more than {fraction:.0%} of "
            f"the device's {limit / 2**30:.1f} GiB; thin more, record a smaller observable, "
            "or run fewer chains at a time",
            ResourceWarning,
            stacklevel=5,
        )


def _trace_bytes(trace) -> int:
    return sum(int(np.prod(leaf.shape)) * leaf.dtype.itemsize
               for leaf in jax.tree_util.tree_leaves(trace))  # fmt: skip


@jit(training=False)
def _run_one(key, sampler, x0, args, start, from_state, memory_fraction):
    result = _scan(key, sampler, x0, args, start, from_state)
    if not from_state:  # chunked runs are checked from their first chunk
        _check_trace_memory(_trace_bytes(result.trace), memory_fraction)
    return result


def _num_chains(x0_or_state) -> int:
    """The leading axis of a batch of positions, or of a batch of states (chunked runs)."""
    return jax.tree_util.tree_leaves(x0_or_state)[0].shape[0]


@jit(training=False)
def _run_many(key, sampler, x0, args, start, from_state, memory_fraction):
    keys = jax.random.split(key, _num_chains(x0))  # chain i's key, whatever the chunk
    one = lambda k, x: _scan(k, sampler, x, args, start, from_state)
    result = jax.vmap(one, axis_name=CHAIN_AXIS)(keys, x0)
    if not from_state:
        _check_trace_memory(_trace_bytes(result.trace), memory_fraction)
    return result


def _check_step_keeps_state(state, new_state) -> None:
    """A step must return a state of the init's structure, shapes and dtypes (the carry)."""
    old_paths, old_tree = jax.tree_util.tree_flatten_with_path(state)
    new_paths, new_tree = jax.tree_util.tree_flatten_with_path(new_state)
    if old_tree != new_tree:
        raise ValueError(
            f"sampler.step must return a state of the structure sampler.init returns; "
            f"init gave {old_tree}, step gave {new_tree}"
        )
    for (path, old), (_, new) in zip(old_paths, new_paths, strict=True):
        old_sd = (np.shape(old), jnp.result_type(old))
        new_sd = (tuple(new.shape), new.dtype)
        if old_sd != new_sd:
            raise ValueError(
                f"sampler.step must keep the state's shapes and dtypes (the scan's carry): "
                f"state{jax.tree_util.keystr(path)} is {old_sd[1]}{list(old_sd[0])} from "
                f"init and {new_sd[1]}{list(new_sd[0])} after a step"
            )


def _init(sampler, x0):
    try:
        return sampler.init(x0)
    except ValueError as error:  # name the runner's argument too
        raise ValueError(
            f"sampler.init(x0) failed for one chain's x0 of shape {tuple(x0.shape)} (run takes "
            f"one chain's position, run_chains a leading chain axis): {error}"
        ) from error


def _scan(key, sampler, x0, args, start, from_state):
    """The runner's loop for one chain: the final state, the trace and the mean info."""
    state = x0 if from_state else _init(sampler, x0)
    schedule_0 = jax.tree_util.tree_map(lambda a: a[0], args.schedule)
    new_state, info_shape = jax.eval_shape(sampler.step, key, state, *schedule_0)
    _check_step_keeps_state(state, new_state)
    info_sum = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), info_shape)

    def one_step(carry, inputs):
        state, info_sum = carry
        t, schedule_t = inputs
        # step t's key is derived in the loop, not pre-split: a pre-split (num_steps, key)
        # array per chain is chains x steps x 8 bytes (8 GB at 1e6 chains x 1,000 steps)
        state, info = sampler.step(jax.random.fold_in(key, t), state, *schedule_t)
        info_sum = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), info_sum, info)
        return (state, info_sum), None

    steps = start + jnp.arange(args.num_steps, dtype=jnp.uint32)
    inputs = (steps, args.schedule)
    observe = (lambda s: s) if args.observable is None else args.observable
    if args.thin:
        blocks = jax.tree_util.tree_map(
            lambda a: a.reshape(args.num_steps // args.thin, args.thin, *a.shape[1:]), inputs
        )

        def one_block(carry, block):
            carry, _ = jax.lax.scan(one_step, carry, block, unroll=min(args.unroll, args.thin))
            return carry, observe(carry[0])

        (state, info_sum), trace = jax.lax.scan(one_block, (state, info_sum), blocks)
    else:
        (state, info_sum), _ = jax.lax.scan(one_step, (state, info_sum), inputs,
                                            unroll=args.unroll)  # fmt: skip
        trace = None
    info = jax.tree_util.tree_map(lambda s: s / args.num_steps, info_sum)
    return RunResult(state, trace, info)


def _local_values(x) -> np.ndarray:
    """``x`` on this host: on several hosts, the blocks of chains this process holds."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        blocks = {str(s.index): np.asarray(s.data) for s in x.addressable_shards}
        return np.concatenate([b.reshape(-1) for b in blocks.values()])
    return np.asarray(x)


def warn_if_diverged(info, name: str = "sampler", *, stacklevel: int = 2) -> int:
    """Warn when a run's info reports non-finite values or divergent transitions; return
    the number of chains concerned.

    ``info.num_nonfinite`` (the per-step mean count of NaN/Inf in the state) and, for the
    gradient-based Metropolis kernels, ``info.is_divergent`` (the fraction of steps whose
    proposal had a non-finite energy or an energy error above 1000) are read per chain (one
    value per chain after ``run_chains``). Infos without these fields report nothing. Call
    it on concrete values, outside ``jit``; ``run`` and ``run_chains`` call it by default.
    On several hosts each process reports the chains it holds.
    """
    fields = getattr(info, "_fields", ())
    counts = {}
    for field in ("num_nonfinite", "is_divergent"):
        if field in fields:
            counts[field] = np.atleast_1d(_local_values(getattr(info, field)) > 0)
    if not counts:
        return 0
    bad = np.zeros_like(next(iter(counts.values())))
    for flags in counts.values():
        bad = bad | flags.reshape(bad.shape)
    total = bad.size
    parts = []
    if "num_nonfinite" in counts and counts["num_nonfinite"].any():
        parts.append(
            f"{int(counts['num_nonfinite'].sum())} of {total} chain(s) produced NaN or Inf"
        )
    if "is_divergent" in counts and counts["is_divergent"].any():
        parts.append(
            f"{int(counts['is_divergent'].sum())} of {total} chain(s) had divergent transitions "
            "(a proposal with a non-finite energy or an energy error above 1000)"
        )
    if parts:
        warnings.warn(
            f"{name}: " + "; ".join(parts) + ". Reduce the step size or check the energy/score.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
    return int(bad.sum())
