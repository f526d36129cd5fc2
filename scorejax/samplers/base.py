"""The kernel contract and the one runner that scans any kernel.

A sampler is an ``init``/``step`` pair over NamedTuples (blackjax's contract, without its
API layers): ``init(x) -> state`` and ``step(key, state, *schedule_t) -> (state, info)``.
Kernels are specialised by closure (the score or energy function, a step size) and see
one chain; many chains and many seeds are ``jax.vmap`` over the runner.
"""

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_positive_int
from scorejax._compile import jit
from scorejax.prng import fast_key
from scorejax.types import Array, Key, PyTree


class Sampler(NamedTuple):
    """A Markov kernel: ``init(x) -> state``, ``step(key, state, *schedule_t) -> (state, info)``."""

    init: Callable[[Array], Any]
    step: Callable[..., tuple[Any, Any]]


class RunResult(NamedTuple):
    """What ``run`` returns.

    state: the final state.
    trace: the state every ``thin`` steps, stacked on a leading axis of length
      ``num_steps // thin`` (None when ``thin == 0``).
    info: each field of the kernel's info averaged over the steps of the run (acceptance
      rates, mean non-finite counts: any value above zero there means the chain diverged).
    """

    state: Any
    trace: Any
    info: Any


def count_nonfinite(x: Array) -> Array:
    """Number of NaN or Inf entries of ``x`` (int32), the divergence signal kernels report."""
    return jnp.sum(~jnp.isfinite(x)).astype(jnp.int32)


def strong_array(x) -> Array:
    """``x`` as an array without JAX's weak type (``jnp.full(2, 1.0)`` is weakly typed), so a
    jitted sampler sees the same abstract value, and does not retrace, for any float32 input."""
    x = jnp.asarray(x)
    return jnp.asarray(x, dtype=x.dtype)


def default_unroll() -> int:
    """The ``lax.scan`` unroll factor ``run`` uses when none is given: 1 on CPU, 8 elsewhere.

    Measured on the CPU (2-core Xeon, 15 interleaved rounds in one process): unroll=4 left
    ULA on an MLP score and on the 2-D mixture, MALA and HMC (10^4 chains) unchanged, and
    sped up only the purely elementwise double well (4,096 x 32), by 1.3x, where XLA fuses
    consecutive steps into one pass; it lengthened compilation 1.3-1.65x everywhere. So
    CPUs keep 1; pass ``unroll=4`` for a cheap elementwise energy. On a GPU a step is
    several small kernels and the while-loop's per-iteration overhead dominates at few
    chains: the issue's H100 reference figures (double well, 4,096 chains x 32 dims, 1,000
    steps) fall from 7.8 ms to 1.29 ms with unroll=10 and from 202 to 176 ms with unroll=4
    at 1,048,576 chains, so accelerators get 8. Pass ``unroll`` explicitly to override.
    """
    return 1 if jax.default_backend() == "cpu" else 8


def _check_schedule(schedule, num_steps: int) -> None:
    for i, leaf in enumerate(jax.tree_util.tree_leaves(schedule)):
        if np.ndim(leaf) < 1 or np.shape(leaf)[0] != num_steps:
            raise ValueError(
                f"schedule[{i}] must have a leading axis of length num_steps={num_steps}, "
                f"got shape {np.shape(leaf)}"
            )


def _check_run_args(num_steps, schedule, thin, unroll):
    check_positive_int("num_steps", num_steps)
    unroll = default_unroll() if unroll is None else unroll
    check_positive_int("unroll", unroll)
    if not isinstance(thin, int) or thin < 0 or (thin and num_steps % thin):
        raise ValueError(
            f"thin must be 0 or a positive divisor of num_steps={num_steps}, got {thin}"
        )
    schedule = tuple(schedule) if isinstance(schedule, list) else schedule
    _check_schedule(schedule, num_steps)
    return schedule, unroll


def run(
    key: Key,
    sampler: Sampler,
    x0: Array,
    num_steps: int,
    *,
    schedule: PyTree = (),
    thin: int = 0,
    unroll: int | None = None,
) -> RunResult:
    """Run one chain of ``sampler`` for ``num_steps`` steps with ``lax.scan``, jitted.

    Step t uses the key ``jax.random.fold_in(key, t)``, derived inside the loop (on the CPU a
    threefry key is first re-wrapped by ``scorejax.prng.fast_key``: the same numbers, drawn
    faster; so the kernel may see a ``THREEFRY_UNROLLED`` key). A
    ``schedule`` (a tuple of arrays with leading axis ``num_steps``) is scanned alongside and
    passed as ``step(key, state, *schedule[t])``: a schedule is data (DESIGN §5), so
    annealing and decaying step sizes cost no recompiles.

    Args:
      key: a typed PRNG key.
      sampler: the kernel. It is a static argument: build it once and reuse it, or the
        run is traced again.
      x0: the initial position of one chain.
      num_steps: number of steps.
      schedule: per-step arguments of ``step``.
      thin: keep the state every ``thin`` steps (0 keeps no trace); must divide num_steps.
      unroll: ``lax.scan`` unroll factor. None (the default) picks ``default_unroll()``:
        1 on CPU, 8 on GPU/TPU, where a step is a few tiny kernels and the loop overhead
        between them dominates (see ``default_unroll``).

    Returns:
      RunResult(state, trace, info) with ``info`` averaged over the steps.

    For many chains: ``jax.vmap(lambda k, x: run(k, sampler, x, n))(keys, x0s)`` or
    ``run_chains``.

    Performance: the whole run is one compiled program with no host round-trip; inside it
    XLA updates the scan's carried state in place. ``x0`` is not donated (researchers reuse
    their initial positions), so a run costs one extra copy of ``x0``, nothing per step.
    """
    schedule, unroll = _check_run_args(num_steps, schedule, thin, unroll)
    return _run(key, sampler, strong_array(x0), num_steps, schedule, thin, unroll)


@jit(static_argnames=("sampler", "num_steps", "thin", "unroll"))
def _run(key, sampler, x0, num_steps, schedule, thin, unroll):
    key = fast_key(key)  # the same numbers, hashed in one fused loop on the CPU
    state = sampler.init(x0)
    _, info_shape = jax.eval_shape(
        lambda k, s, sch: sampler.step(k, s, *sch),
        key,
        state,
        jax.tree_util.tree_map(lambda a: a[0], schedule),
    )
    info_sum = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), info_shape)

    def one_step(carry, inputs):
        state, info_sum = carry
        t, schedule_t = inputs
        # step t's key is derived in the loop, not pre-split: a pre-split (num_steps, key)
        # array per chain is chains x steps x 8 bytes (8 GB at 1e6 chains x 1,000 steps)
        state, info = sampler.step(jax.random.fold_in(key, t), state, *schedule_t)
        info_sum = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), info_sum, info)
        return (state, info_sum), None

    inputs = (jnp.arange(num_steps, dtype=jnp.uint32), schedule)
    if thin:
        blocks = jax.tree_util.tree_map(
            lambda a: a.reshape(num_steps // thin, thin, *a.shape[1:]), inputs
        )

        def one_block(carry, block):
            carry, _ = jax.lax.scan(one_step, carry, block, unroll=min(unroll, thin))
            return carry, carry[0]

        (state, info_sum), trace = jax.lax.scan(one_block, (state, info_sum), blocks)
    else:
        (state, info_sum), _ = jax.lax.scan(one_step, (state, info_sum), inputs, unroll=unroll)
        trace = None
    info = jax.tree_util.tree_map(lambda s: s / num_steps, info_sum)
    return RunResult(state, trace, info)


def run_chains(key: Key, sampler: Sampler, x0: Array, num_steps: int, **kwargs) -> RunResult:
    """``run`` vmapped over the leading axis of ``x0`` (one chain per row), one key per chain.

    Every field of the result gains a leading chain axis; keyword arguments go to ``run``
    (a schedule is shared by all chains).
    """
    if np.ndim(x0) < 1:
        raise ValueError(f"x0 must have a leading chain axis, got shape {np.shape(x0)}")
    keys = jax.random.split(key, np.shape(x0)[0])
    # run validates its arguments in Python; the vmapped call is then one jitted program,
    # so a repeated call costs no re-tracing or re-batching on the host.
    return _run_chains(keys, sampler, strong_array(x0), num_steps, **kwargs)


def _run_chains(keys, sampler, x0, num_steps, *, schedule=(), thin=0, unroll=None):
    schedule, unroll = _check_run_args(num_steps, schedule, thin, unroll)
    return _vmapped_run(keys, sampler, x0, num_steps, schedule, thin, unroll)


@jit(static_argnames=("sampler", "num_steps", "thin", "unroll"))
def _vmapped_run(keys, sampler, x0, num_steps, schedule, thin, unroll):
    return jax.vmap(lambda k, x: _run(k, sampler, x, num_steps, schedule, thin, unroll))(keys, x0)


def warn_if_diverged(info, name: str = "sampler") -> int:
    """Warn when a run's info reports non-finite values; return the number of bad chains.

    ``info.num_nonfinite`` is the per-step mean count from ``run`` (one value per chain
    after ``run_chains``). Call it on concrete values, outside ``jit``.
    """
    bad = int(np.sum(np.asarray(info.num_nonfinite) > 0))
    if bad:
        warnings.warn(
            f"{name}: {bad} chain(s) produced NaN or Inf; reduce the step size",
            RuntimeWarning,
            stacklevel=2,
        )
    return bad
