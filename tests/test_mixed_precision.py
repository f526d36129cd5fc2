"""Mixed precision: bfloat16 compute, float32 parameters, state and accumulation.

Tolerance: bfloat16 keeps 8 significant bits, unit roundoff u = 2^-8. A three-layer MLP
rounds its input and each weight matrix to bfloat16 at every layer (about 2u each, adding
in quadrature across layers), so the relative output error should be a few u; we state the
bound 8u ~ 3.1e-2 for the relative L2 error of a network's output, and the same 8u for the
quantities computed from it below (a DSM loss, the end point of a short Langevin run whose
drift h * s changes x by a small fraction per step, and a short training run on the same keys).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax import nets

U = 2.0**-8
TOL = 8 * U


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))


@pytest.mark.parametrize("kind", ["score", "energy", "noise_conditional"])
def test_outputs_within_tolerance_and_float32(kind):
    x = 2.0 * jax.random.normal(jax.random.key(1), (2048, 2))
    if kind == "score":
        model, args = nets.MLPScore(), ()
    elif kind == "energy":
        model, args = nets.MLPEnergy(), ()
    else:
        model, args = nets.NoiseConditionalMLP(), (jnp.full((2048,), 0.5),)
    params = model.init(jax.random.key(0), x[:1], *(a[:1] for a in args))
    low = nets.mixed_precision(model)
    assert low.dtype == jnp.bfloat16 and model.dtype is None
    out32, out16 = model.apply(params, x, *args), low.apply(params, x, *args)
    assert out16.dtype == jnp.float32
    err = _rel(out32, out16)
    # the bf16 path is really taken: exact agreement would mean nothing was rounded
    assert 0.0 < err < TOL


def test_gradients_and_params_stay_float32_and_loss_within_tolerance():
    model = nets.MLPScore(hidden=(64, 64))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    batch = sj.data.sample_eight_gaussians(jax.random.key(1), 512)
    key = jax.random.key(2)
    losses, grads = [], []
    for m in (model, nets.mixed_precision(model)):
        loss_fn = partial(sj.dsm_loss, score_fn=nets.apply_fn(m), sigma=0.5)
        loss, grad = jax.jit(jax.value_and_grad(loss_fn))(params, key, batch)
        assert loss.dtype == jnp.float32
        assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(grad))
        losses.append(loss)
        grads.append(jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grad)]))
    assert abs(float(losses[1] - losses[0])) / float(losses[0]) < TOL
    assert _rel(grads[0], grads[1]) < TOL


def test_training_and_sampling_in_bf16_track_float32():
    model = nets.MLPScore(hidden=(64, 64))
    params = model.init(jax.random.key(0), jnp.zeros(2))
    optimizer = optax.adam(1e-3)
    batch_fn = lambda k: sj.data.sample_eight_gaussians(k, 256)
    finals, samples = [], []
    for m in (model, nets.mixed_precision(model)):
        loss_fn = partial(sj.dsm_loss, score_fn=nets.apply_fn(m), sigma=0.5)
        state = sj.init_train_state(jax.tree_util.tree_map(jnp.copy, params), optimizer)
        state, history = sj.fit(
            sj.make_train_step(loss_fn, optimizer), state, jax.random.key(3), batch_fn,
            num_steps=100, steps_per_call=100, progress=False,
        )  # fmt: skip
        assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(state.params))
        finals.append(np.mean(history["loss"][-25:]))
        # sample from the float32-trained parameters with each compute dtype
        sampler = sj.ula(partial(nets.apply_fn(m), params), 0.01)
        x0 = jax.random.normal(jax.random.key(4), (256, 2))
        x = sj.run_chains(jax.random.key(5), sampler, x0, 100).state.x
        assert x.dtype == jnp.float32
        samples.append(x)
    assert abs(finals[1] - finals[0]) / finals[0] < TOL
    assert _rel(samples[0], samples[1]) < TOL
