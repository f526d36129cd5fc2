"""scorejax's runners compile with XLA options chosen for the backend (scorejax/_compile.py)."""

import jax
import jax.numpy as jnp
import numpy as np

import scorejax as sj
from scorejax._compile import jit


def test_options_on_cpu_keep_ynnpack_for_dots_only():
    # the tests run on the CPU (conftest); a jaxlib without the option would give {}
    assert sj.compiler_options() in (
        {},
        {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    )


def test_tuned_jit_matches_plain_jit_at_top_level_and_nested():
    mixture = sj.data.eight_gaussians()
    score = sj.score_from_energy(sj.GaussianMixture.energy)
    f = lambda x: jnp.sum(jax.vmap(lambda y: score(mixture, y))(x) ** 2, axis=-1)
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
