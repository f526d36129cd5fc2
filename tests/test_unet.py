"""The image U-Net: shapes, conditioning, parametrisations, the loss and sampler contracts,
bad input, sizes, mixed precision. Small widths keep each test to a few seconds on a CPU."""

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import nets, samplers
from scorejax import sde as sdes

SMALL_28 = (8, 16, 16)  # 28 -> 14 -> 7
SMALL_8 = (8, 8)  # 8 -> 4

# The tests' programs run once on tiny inputs: compile them without LLVM's expensive
# passes (several times faster to compile a U-Net; same results up to rounding)
_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                          "xla_llvm_disable_expensive_passes": True})  # fmt: skip


def _init(model, x):
    """Parameters of ``model`` for images like ``x``: they depend on the widths and the
    channels only (not on the sde, the parametrisation or the image size), so each tree is
    initialised once per module (compiling an initialiser takes seconds)."""
    channels = x.shape[2] if x.ndim == 3 else 0
    return _cached_init(tuple(model.widths), channels)


@functools.cache
def _cached_init(widths, channels):
    x = jnp.zeros((8, 8, channels) if channels else (8, 8))
    init = _jit(nets.UNet(widths=widths).init)  # one compilation, not op-by-op dispatch
    return init(jax.random.key(0), x, jnp.ones(()))


def _apply(model, params, x, c):
    return _jit(model.apply)(params, x, jnp.asarray(c, jnp.float32))


def _images(shape, seed=1):
    return jax.random.uniform(jax.random.key(seed), shape)


@pytest.mark.parametrize(
    ("widths", "shape"),
    [(SMALL_28, (28, 28)), (SMALL_8, (8, 8, 1)), ((6, 12, 12), (8, 8, 2))],  # 8 -> 4 -> 2
)
@pytest.mark.slow
def test_output_is_shaped_like_one_image_or_a_batch(widths, shape):
    model = nets.UNet(widths=widths)
    x = _images(shape)
    params = _init(model, x)
    out = _apply(model, params, x, 0.5)
    assert out.shape == shape and out.dtype == jnp.float32
    batch = _images((3, *shape))
    out = _apply(model, params, batch, jnp.array([0.1, 0.5, 1.0]))
    assert out.shape == (3, *shape) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("sde", [None, sdes.VPSDE()])
def test_a_batch_equals_the_vmapped_single_example_call(sde):
    model = nets.UNet(widths=SMALL_8, sde=sde)
    x = _images((4, 8, 8, 1))
    c = jnp.array([0.05, 0.2, 0.5, 0.9])
    params = _init(model, x[0])
    one_by_one = _jit(jax.vmap(model.apply, in_axes=(None, 0, 0)))(params, x, c)
    np.testing.assert_allclose(_apply(model, params, x, c), one_by_one, rtol=1e-5, atol=1e-5)
    # a batch of one is the single image
    np.testing.assert_allclose(_apply(model, params, x[:1], c[:1])[0], one_by_one[0], rtol=1e-5,
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("sde", [None, sdes.VPSDE()])
def test_changing_the_condition_changes_the_output(sde):
    # score_output: the raw network, so only the embedding can make the difference
    model = nets.UNet(widths=SMALL_8, sde=sde, parametrisation=nets.score_output)
    x = _images((8, 8, 1))
    params = _init(model, x)
    a, b = _apply(model, params, x, 0.3), _apply(model, params, x, 0.6)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3 * float(jnp.max(jnp.abs(a)))


def test_a_class_conditional_network_reads_its_label():
    """num_classes=C adds a label embedding (row C: the null class); the label changes the
    output, and a missing or misshapen label, or a label to an unconditional net, raises."""
    model = nets.UNet(widths=SMALL_8, sde=sdes.VPSDE(), num_classes=3, attention=False,
                      parametrisation=nets.score_output)  # fmt: skip
    x = _images((2, 8, 8))
    t = jnp.array([0.3, 0.3])
    params = _jit(model.init)(jax.random.key(0), x, t, jnp.array([0, 3]))
    apply = _jit(model.apply)
    a = apply(params, x, t, jnp.array([0, 1]))
    b = apply(params, x, t, jnp.array([2, 3]))
    assert a.shape == x.shape
    assert float(jnp.min(jnp.max(jnp.abs(a - b), axis=(1, 2)))) > 1e-4 * float(jnp.max(jnp.abs(a)))
    with pytest.raises(ValueError, match="label"):
        model.apply(params, x, t)
    with pytest.raises(ValueError, match="label"):
        model.apply(params, x, t, jnp.array(1))
    unconditional = nets.UNet(widths=SMALL_8)
    with pytest.raises(ValueError, match="label"):
        unconditional.apply(_init(unconditional, x[0]), x, t, jnp.array([0, 1]))


@pytest.mark.slow
def test_parametrisations_convert_the_same_network():
    x = _images((8, 8, 1))
    raw_vp = nets.UNet(widths=SMALL_8, sde=sdes.VPSDE(), parametrisation=nets.score_output)
    params = _init(raw_vp, x)  # parametrisations have no parameters: one tree serves all
    t = 0.4
    mean, std = sdes.VPSDE().kernel(jnp.float32(t))
    out = _apply(raw_vp, params, x, t)
    vp = lambda p: nets.UNet(widths=SMALL_8, sde=sdes.VPSDE(), parametrisation=p)
    np.testing.assert_allclose(_apply(vp(nets.epsilon_output), params, x, t), -out / std,
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(_apply(vp(nets.std_scaled_output), params, x, t), out / std,
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(_apply(vp(nets.data_output), params, x, t),
                               (mean * out - x) / std**2, rtol=1e-4, atol=1e-4)  # fmt: skip
    # sde=None: the condition is sigma (m = 1, s = sigma), the default divides by sigma
    raw = nets.UNet(widths=SMALL_8, parametrisation=nets.score_output)
    sigma = 0.3
    out = _apply(raw, params, x, sigma)
    np.testing.assert_allclose(_apply(nets.UNet(widths=SMALL_8), params, x, sigma), out / sigma,
                               rtol=1e-5)  # fmt: skip
    ncsn_eps = nets.UNet(widths=SMALL_8, parametrisation=nets.epsilon_output)
    np.testing.assert_allclose(_apply(ncsn_eps, params, x, sigma), -out / sigma, rtol=1e-5)


def _finite_loss_and_grad(loss_fn, params, batch):
    loss, grads = _jit(jax.value_and_grad(loss_fn))(params, jax.random.key(3), batch)
    assert bool(jnp.isfinite(loss))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    return loss


@pytest.mark.slow
@pytest.mark.parametrize(("widths", "shape"), [(SMALL_8, (8, 8, 1)), (SMALL_28, (28, 28))])
def test_plugs_into_the_ncsn_loss(widths, shape):
    model = nets.UNet(widths=widths)
    batch = _images((4, *shape))
    params = _init(model, batch[0])
    loss_fn = partial(sj.ncsn_loss, score_fn=nets.apply_fn(model),
                      sigmas=sj.geometric_sigmas(1.0, 0.01, 5))  # fmt: skip
    _finite_loss_and_grad(loss_fn, params, batch)


@pytest.mark.slow
@pytest.mark.parametrize("sde", [sdes.VPSDE(), sdes.VESDE(sigma_max=5.0)])
def test_plugs_into_the_sde_loss(sde):
    output = nets.epsilon_output if isinstance(sde, sdes.VPSDE) else nets.std_scaled_output
    model = nets.UNet(widths=SMALL_8, sde=sde, parametrisation=output)
    batch = _images((4, 8, 8, 1))
    params = _init(model, batch[0])
    loss_fn = partial(sj.sde_dsm_loss, score_fn=nets.apply_fn(model), sde=sde)
    _finite_loss_and_grad(loss_fn, params, batch)


@pytest.mark.slow
def test_one_reverse_sampler_step():
    sde = sdes.VPSDE()
    model = nets.UNet(widths=SMALL_8, sde=sde, parametrisation=nets.epsilon_output)
    x0 = jax.random.normal(jax.random.key(4), (2, 8, 8, 1))
    params = _init(model, x0[0])
    score_fn = partial(nets.apply_fn(model), params)
    sampler = sj.pc_sampler(sde, score_fn, samplers.reverse_diffusion,
                            samplers.langevin_corrector, snr=0.16)  # fmt: skip
    grid = samplers.reverse_time_grid(sde, 1)
    result = sj.run_chains(jax.random.key(5), sampler, x0, 1, schedule=grid)
    assert result.state.x.shape == x0.shape
    assert bool(jnp.all(jnp.isfinite(result.state.x)))
    assert bool(jnp.any(result.state.x != x0))


@pytest.mark.parametrize(
    ("shape", "c", "match"),
    [
        ((28, 28, 1), jnp.ones(()), "divisible by 2"),  # four levels need 8 | 28
        ((8,), jnp.ones(()), "one image"),
        ((2, 8, 8, 1, 1), jnp.ones(()), "one image"),
        ((2, 8, 8, 1), jnp.ones(3), "sigma of shape"),
        ((8, 8, 1), jnp.ones(3), "sigma of shape"),
        ((2, 8, 8, 1), jnp.ones((2, 1)), "sigma must be a scalar"),
    ],
)
def test_bad_shapes_raise_naming_the_argument(shape, c, match):
    widths = (8, 8, 8, 8) if shape[0] == 28 else SMALL_8
    model = nets.UNet(widths=widths)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape), c)  # no compilation


def test_the_time_conditional_model_names_t():
    model = nets.UNet(widths=SMALL_8, sde=sdes.VPSDE())
    with pytest.raises(ValueError, match="with t of shape"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 8, 8)), jnp.ones(3))


@pytest.mark.parametrize(
    ("widths", "shape", "low", "high"),
    [(nets.CPU_WIDTHS, (28, 28, 1), 2e5, 6e5),  # CPU default: a few hundred thousand
     (nets.GPU_WIDTHS, (28, 28, 1), 0.8e6, 1.25e6),  # GPU setting: about a million
     (nets.DIGITS_WIDTHS, (8, 8, 1), 1e5, 3e5)],
)  # fmt: skip
def test_default_sizes(widths, shape, low, high):
    model = nets.UNet(widths=widths)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape), jnp.ones(()))
    assert low <= nets.parameter_count(shapes) <= high


def test_parameter_count_and_flops():
    params = {"a": jnp.zeros((3, 4)), "b": [jnp.zeros(5), jnp.zeros(())]}
    assert nets.parameter_count(params) == 18
    # a (m, k) @ (k, n) product: 2 m k n flops
    count = nets.flops(jnp.dot, jnp.ones((8, 16)), jnp.ones((16, 4)))
    assert np.isnan(count) or count == pytest.approx(2 * 8 * 16 * 4, rel=0.05)


def test_small_widths_get_valid_groups():
    for width in (1, 2, 3, 6, 8, 12, 48, 96, 128, 256):
        groups = nets.unet.num_groups(width)
        assert width % groups == 0 and groups <= 32
    assert nets.unet.num_groups(8) == 2 and nets.unet.num_groups(128) == 32


@pytest.mark.slow
def test_bfloat16_runs_and_returns_float32():
    model = nets.UNet(widths=SMALL_8)
    x = _images((8, 8, 1))
    params = _init(model, x)
    out32 = _apply(model, params, x, 0.5)
    out16 = _apply(nets.mixed_precision(model), params, x, 0.5)
    assert out16.dtype == jnp.float32 and out16.shape == x.shape
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda p: p.dtype == jnp.float32, params))
    # bfloat16 keeps 8 significant bits; a few layers of rounding stay within a few percent
    scale = float(jnp.max(jnp.abs(out32)))
    assert float(jnp.max(jnp.abs(out16 - out32))) < 0.1 * scale


@pytest.mark.parametrize("widths", [nets.CPU_WIDTHS, nets.DIGITS_WIDTHS])
def test_the_torch_reference_unet_has_the_same_parameter_count(widths):
    """The benchmark compares equal networks: torch_ref.UNet has as many parameters."""
    pytest.importorskip("torch")
    from benchmarks import torch_ref

    shapes = jax.eval_shape(nets.UNet(widths=widths).init, jax.random.key(0),
                            jnp.zeros((8, 8, 1)), jnp.ones(()))  # fmt: skip
    jax_count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
    assert torch_ref.unet_parameter_count(widths) == jax_count
