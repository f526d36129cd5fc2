"""scorejax's runners compile with XLA options chosen for the backend (scorejax/_compile.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax._compile import jit


def _mixture_score_norms():
    mixture = sj.data.eight_gaussians()
    score = sj.score_from_energy(sj.GaussianMixture.energy)
    return lambda x: jnp.sum(jax.vmap(lambda y: score(mixture, y))(x) ** 2, axis=-1)


def test_options_on_cpu_keep_ynnpack_for_dots_only():
    from scorejax import _compile

    f, x = _mixture_score_norms(), jnp.zeros((256, 2))
    options = sj.compiler_options()
    if not options:  # the fallback must mean this jaxlib rejects the option, nothing else
        with pytest.raises(Exception, match="xla_cpu_experimental_ynn_fusion_type"):
            jax.jit(f, compiler_options=_compile._CPU_OPTIONS).lower(x).compile()
        return
    assert options == _compile._CPU_OPTIONS
    # the mixture's per-chain reductions leave YNNPACK; the program is otherwise the same
    tuned = jax.jit(f, compiler_options=options).lower(x).compile().as_text()
    default = jax.jit(f).lower(x).compile().as_text()
    assert "ynn_fusion" in default and "ynn_fusion" not in tuned


def test_runner_jit_passes_the_options_at_top_level_only(monkeypatch):
    from scorejax import _compile

    # an option XLA rejects shows whether a call compiled with the options
    monkeypatch.setattr(_compile, "compiler_options", lambda: {"xla_no_such_option": True})
    f, x = _mixture_score_norms(), jnp.zeros((4, 2))
    with pytest.raises(Exception, match="xla_no_such_option"):
        jit(f)(x)
    jax.jit(jit(f))(x)  # nested: the outer jit's (default) options, no error


def test_tuned_jit_matches_plain_jit_at_top_level_and_nested():
    f = _mixture_score_norms()
    x = jax.random.normal(jax.random.key(0), (256, 2))
    tuned, plain = jit(f), jax.jit(f)
    # summation order may differ between fusions: float32 rounding, not a different result
    np.testing.assert_allclose(tuned(x), plain(x), rtol=1e-5)
    # inside a user's jit (where JAX refuses nested compiler options) and under vmap
    np.testing.assert_allclose(jax.jit(tuned)(x), plain(x), rtol=1e-5)
    np.testing.assert_allclose(jax.vmap(tuned)(x[:, None]).ravel(), plain(x), rtol=1e-5)


def test_run_inside_a_user_jit_works():
    sampler = sj.ula(lambda x: -x, 0.1)
    direct = sj.run(jax.random.key(0), sampler, jnp.ones(2), 10).state.x
    wrapped = jax.jit(lambda k: sj.run(k, sampler, jnp.ones(2), 10).state.x)(jax.random.key(0))
    np.testing.assert_allclose(wrapped, direct, rtol=1e-6)
