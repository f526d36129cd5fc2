"""The image networks' convolution (scorejax.nets._conv): XLA's value and derivatives in
every transformation, with the reverse pass in XLA:CPU's fast layout."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from scorejax.nets._conv import conv_general_dilated as conv

DN = ("NHWC", "HWIO", "NHWC")
KEYS = jax.random.split(jax.random.key(0), 3)


def _reference(padding):
    return lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


def _ours(padding):
    return lambda x, w: conv(x, w, (1, 1), padding, dimension_numbers=DN)


def _derivatives(c, x, w, v):
    """Value, gradients, JVP, batched JVP, gradient of a JVP (sliced score matching), the
    Hessian in w and the gradient of an input gradient (an energy's score, trained)."""
    loss = lambda x, w: jnp.sum(jnp.tanh(c(x, w)) ** 2)
    jvp = lambda w, u: jax.jvp(lambda x: jnp.tanh(c(x, w)), (x,), (u,))[1]
    return {
        "value": c(x, w),
        "grad": jax.grad(loss, (0, 1))(x, w),
        "jvp": jax.jvp(c, (x, w), (v, w))[1],
        "vmap jvp": jax.vmap(lambda u: jvp(w, u))(jnp.stack([v, -2 * v])),
        "grad of jvp": jax.grad(lambda w: jnp.sum(jvp(w, v) ** 2))(w),
        "hessian": jax.hessian(loss, 1)(x, w),
        "grad of grad": jax.grad(lambda w: jnp.sum(jax.grad(loss)(x, w) ** 2))(w),
        "vmap grad": jax.vmap(jax.grad(loss, 1), (0, None))(x[:, None], w),
    }


@pytest.mark.parametrize(
    "padding, size",
    [
        ("SAME", 3),
        pytest.param("VALID", 3, marks=pytest.mark.slow),
        pytest.param(((2, 0), (1, 1)), 3, marks=pytest.mark.slow),
        pytest.param("SAME", 1, marks=pytest.mark.slow),
    ],
)
def test_value_and_every_derivative_equal_xla(padding, size):
    x = jax.random.normal(KEYS[0], (3, 6, 5, 2))
    w = jax.random.normal(KEYS[1], (size, size, 2, 4))
    v = jax.random.normal(KEYS[2], x.shape)
    expected = _derivatives(_reference(padding), x, w, v)
    got = _derivatives(_ours(padding), x, w, v)
    for name in expected:
        for a, b in zip(jax.tree.leaves(expected[name]), jax.tree.leaves(got[name]), strict=True):
            scale = float(jnp.max(jnp.abs(a)))
            np.testing.assert_allclose(b, a, atol=2e-5 * scale, rtol=0, err_msg=name)


@pytest.mark.slow
def test_bfloat16_gradient_keeps_the_dtype_and_agrees():
    x = jax.random.normal(KEYS[0], (2, 5, 5, 3)).astype(jnp.bfloat16)
    w = jax.random.normal(KEYS[1], (3, 3, 3, 2)).astype(jnp.bfloat16)
    grads = [
        jax.grad(lambda w: jnp.sum(c(x, w).astype(jnp.float32) ** 2))(w)
        for c in (_reference("SAME"), _ours("SAME"))
    ]
    assert grads[1].dtype == jnp.bfloat16
    np.testing.assert_allclose(
        grads[1].astype(np.float32), grads[0].astype(np.float32), rtol=0.05, atol=0.05
    )


def test_other_convolutions_pass_through_to_lax():
    x = jax.random.normal(KEYS[0], (2, 8, 8, 3))
    w = jax.random.normal(KEYS[1], (3, 3, 3, 4))
    strided = dict(window_strides=(2, 2), padding="SAME", dimension_numbers=DN)
    np.testing.assert_array_equal(conv(x, w, **strided), lax.conv_general_dilated(x, w, **strided))
    nchw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    xt, wt = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    np.testing.assert_array_equal(conv(xt, wt, **nchw), lax.conv_general_dilated(xt, wt, **nchw))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's layouts")
def test_a_training_loop_runs_every_convolution_in_the_forward_layout():
    """Inside a loop body XLA's own gradients are convolutions with swapped kernel
    dimensions or a whole-image window, which XLA:CPU runs on its slow path; ours are all
    b01f_01io->b01f (the kernel's gradient is matrix products)."""
    x = jax.random.normal(KEYS[0], (4, 8, 8, 3))

    def loop(c):
        def step(w, _):
            grads = jax.grad(lambda w, x: jnp.sum(jnp.tanh(c(jnp.tanh(c(x, w[0])), w[1]))), (0, 1))
            dw, dx = grads(w, x)
            return jax.tree.map(lambda a, b: a - 1e-3 * b, w, dw), jnp.sum(dx)

        w = (jnp.ones((3, 3, 3, 3)), jnp.ones((3, 3, 3, 3)))
        text = jax.jit(lambda w: lax.scan(step, w, None, length=3)).lower(w).compile().as_text()
        return set(re.findall(r"dim_labels=(\S+?),", text))

    assert loop(_ours("SAME")) == {"b01f_01io->b01f"}
    assert loop(_reference("SAME")) != {"b01f_01io->b01f"}  # what the rewrite avoids
