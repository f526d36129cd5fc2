"""How scorejax compiles its loops: ``jax.jit`` with XLA options chosen for the backend.

On the CPU, recent XLA (jaxlib 0.10) hands reductions to YNNPACK fusions as well as dots.
For the small reductions of a sampler step (over the 8 components and 2 coordinates of a
mixture energy, per chain) those fusions were slow: ULA on the 2-D eight-Gaussian mixture at
10^4 chains ran at 5.4e6 chain-steps/s with XLA's default and 1.6e7 with YNNPACK kept for
dots only, the same numbers up to float32 summation order (2-core CPU, 11 shuffled rounds in
one process). The MLP score's ULA step was within noise (+10%), the double well unchanged.
So scorejax compiles its runners with YNNPACK fusing dots only. Other backends, and a jaxlib
that does not know the option, get XLA's defaults.
"""

import functools

import jax
import numpy as np

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.cache
def compiler_options() -> dict:
    """The XLA options scorejax's runners compile with here (empty off the CPU).

    Pass them to your own ``jax.jit(..., compiler_options=sj.compiler_options())`` when you
    wrap scorejax's samplers in a jit of your own: the outermost jit's options are the ones
    XLA uses.
    """
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # a jaxlib without the option: keep XLA's defaults
        return {}
    return dict(_CPU_OPTIONS)


def jit(fn=None, **jit_kwargs):
    """``jax.jit`` with ``compiler_options()`` when called at top level.

    JAX accepts compiler options on the outermost jit only, so inside another transformation
    (a user's jit or vmap, or scorejax's own ``run_chains``) the function is jitted plainly
    and the outer program's options apply. The options are chosen at the first call, not at
    import: importing scorejax must not start JAX's backend (``jax.distributed.initialize``
    has to come first on several hosts).
    """
    if fn is None:
        return functools.partial(jit, **jit_kwargs)
    plain = jax.jit(fn, **jit_kwargs)
    tuned = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return plain(*args, **kwargs)
        if not tuned:
            tuned.append(jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs))
        return tuned[0](*args, **kwargs)

    return call
