"""How scorejax compiles its loops: ``jax.jit`` with XLA options chosen for the backend.

On the CPU, recent XLA (jaxlib 0.10) hands reductions to YNNPACK fusions as well as dots.
For the small reductions of a sampler step (over the 8 components and 2 coordinates of a
mixture energy, per chain) those fusions were slow: ULA on the 2-D eight-Gaussian mixture at
10^4 chains ran at 5.4e6 chain-steps/s with XLA's default and 1.6e7 with YNNPACK kept for
dots only, the same numbers up to float32 summation order (2-core CPU, 11 shuffled rounds in
one process). The MLP score's ULA step was within noise (+10%), the double well unchanged.
So scorejax compiles its samplers with YNNPACK fusing dots only.

Training loops (``fit``, ``shard_train_step``) compile with YNNPACK off, XLA's own dots and
reductions. A train step differentiates with respect to the parameters, so besides the
forward products it has the transposed products of the backward pass, and there YNNPACK ran
one thread at these sizes where XLA's dot ran two. Against YNNPACK for dots only, fit's loop
ran 1.12-1.22x faster for DSM at batch 512 on the 2-D mixture MLP, 1.14x for NCSN, 1.28x for
CD-10 and 1.13x for PCD with an MLP energy, 1.24x for sliced score matching, 1.05-1.28x for
DSM at D=2, 16 and 256 (batch 128), 1.17x for CD-1 on a 784-64 RBM, and 0.95x for DSM at
D=64 and 0.97x at batch 65,536; the losses were the same to the bit (NCSN's to 1e-7
relative; 20-200 steps, 2-core AMD EPYC, 7-9 alternating rounds in one process). ``python -m
benchmarks --only dsm_train,ncsn_train`` measures it again: its ``scorejax[ynn_dots]`` rows
run fit's loop with the samplers' options (1.14x DSM and 1.12x NCSN at batch 512, 1.00x and
1.09x at 65,536, in one run). Samplers keep YNNPACK for dots: there XLA fused an MLP
energy's whole forward and backward pass into one YNNPACK fusion, and turning it off slowed
MLP ULA at 10^3 to 10^5 chains by 6-26%. Other backends, and a jaxlib that does not know the
option, get XLA's defaults.
"""

import functools

import jax
import numpy as np

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
_CPU_TRAINING_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # YNNPACK off


@functools.cache
def compiler_options(training: bool = False) -> dict:
    """The XLA options scorejax's runners compile with here (empty off the CPU).

    ``training=True`` gives those of its training loops (``fit``, ``shard_train_step``),
    otherwise those of its samplers. Pass them to your own
    ``jax.jit(..., compiler_options=sj.compiler_options())`` when you wrap scorejax's
    samplers (or, with ``training=True``, a train step) in a jit of your own: the outermost
    jit's options are the ones XLA uses.
    """
    if jax.default_backend() != "cpu":
        return {}
    options = _CPU_TRAINING_OPTIONS if training else _CPU_OPTIONS
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # a jaxlib without the option: keep XLA's defaults
        return {}
    return dict(options)


def jit(fn=None, *, training: bool = False, **jit_kwargs):
    """``jax.jit`` with ``compiler_options(training)`` when called at top level.

    JAX accepts compiler options on the outermost jit only, so inside another transformation
    (a user's jit or vmap, or scorejax's own ``run_chains``) the function is jitted plainly
    and the outer program's options apply. The options are looked up at call time, not at
    import: importing scorejax must not start JAX's backend (``jax.distributed.initialize``
    has to come first on several hosts).
    """
    if fn is None:
        return functools.partial(jit, training=training, **jit_kwargs)
    plain = jax.jit(fn, **jit_kwargs)
    tuned = {}  # one jit per set of options (they are fixed for a process; tests patch them)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return plain(*args, **kwargs)
        options = compiler_options(training)
        name = tuple(options.items())
        if name not in tuned:
            tuned[name] = jax.jit(fn, compiler_options=options, **jit_kwargs)
        return tuned[name](*args, **kwargs)

    return call
