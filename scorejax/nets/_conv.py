"""The convolution of scorejax's image networks (private): ``lax.conv_general_dilated``'s
value, with derivatives written so that XLA:CPU runs them fast.

For a stride-1 2-D convolution y = conv(x, w) the JVP is conv(dx, w) + conv(x, dw), and
the reverse pass is its transpose. XLA derives both gradients from its own transpose rule,
which XLA:CPU runs slowly: the kernel's gradient as a convolution whose window is the
whole image (about 3x slower than the products below at 28x28), and inside a loop body
both gradients in layouts its fast convolution does not take (about 20x slower per U-Net
train step; docs/performance.md, "Image score models"). Here

- conv(x, dw) is written per kernel offset on the CPU,
  sum_{i, j} x_pad[:, i:i+H', j:j+W', :] dw[i, j], so that its transpose, the kernel's
  gradient, is one matrix product per offset: dW[i, j] = x_pad[...]^T g
  (``lax.platform_dependent`` keeps XLA's convolution on other backends);
- conv(dx, w) is written as the transpose of g -> conv(g, w'), w' the kernel flipped with
  its channels swapped, so that the input's gradient is that forward convolution.

The reverse pass is then fast everywhere. The price is forward mode: a JVP in dx inside a
loop body runs in the slow layout (scorejax itself uses none on an image network; the ODE
likelihood's divergence is computed in reverse mode). Any
convolution other than stride 1, undilated, ungrouped NHWC/HWIO goes to
``lax.conv_general_dilated`` unchanged.
"""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

_NHWC = ("NHWC", "HWIO", "NHWC")


def conv(width: int, size: int, dtype=None) -> nn.Conv:
    """A ``size`` x ``size`` 'SAME' ``nn.Conv`` of ``width`` outputs on this convolution
    (float32 parameters, computation in ``dtype``): the image networks' one convolution."""
    return nn.Conv(
        width,
        (size, size),
        padding="SAME",
        dtype=dtype,
        param_dtype=jnp.float32,
        conv_general_dilated=conv_general_dilated,
    )


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated``'s signature and value (what Flax's ``nn.Conv`` calls)."""
    plain = (
        lhs.ndim == 4
        and all(s == 1 for s in window_strides)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and _is_nhwc(dimension_numbers)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    padding = tuple((int(low), int(high)) for low, high in padding)
    return _conv(padding, precision, lhs, rhs)


def _is_nhwc(dimension_numbers) -> bool:
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1,) * 4, (1,) * 4, _NHWC)
    return tuple(dimension_numbers or ()) == _NHWC


@partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _conv(padding, precision, x, w):
    return lax.conv_general_dilated(
        x, w, (1, 1), padding, dimension_numbers=_NHWC, precision=precision
    )


@partial(_conv.defjvp, symbolic_zeros=True)
def _conv_jvp(padding, precision, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _conv(padding, precision, x, w)
    dy = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):
        dy = dy + _by_kernel(padding, precision, w, dx, y.shape)
    if not isinstance(dw, SymbolicZero):
        dy = dy + lax.platform_dependent(
            x,
            dw,
            cpu=partial(_by_offsets, padding, precision),
            default=partial(_conv, padding, precision),
        )
    return y, dy


def _by_kernel(padding, precision, w, dx, out_shape):
    """conv(dx, w) as the transpose of g -> conv(g, w'), w' = w flipped, channels swapped."""
    flipped = jnp.swapaxes(w[::-1, ::-1], 2, 3)
    kernel_size = w.shape[:2]
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_size, padding, strict=True))
    adjoint = partial(_conv, pads, precision, w=flipped)
    return jax.linear_transpose(adjoint, jax.ShapeDtypeStruct(out_shape, dx.dtype))(dx)[0]


def _by_offsets(padding, precision, x, w):
    """conv(x, w) = sum_{i, j} x_pad[:, i:i+H', j:j+W', :] w[i, j], one product per offset."""
    kh, kw = w.shape[:2]
    x_pad = jnp.pad(x, ((0, 0), *padding, (0, 0)))
    out_h, out_w = x_pad.shape[1] - kh + 1, x_pad.shape[2] - kw + 1
    terms = [
        jnp.dot(x_pad[:, i : i + out_h, j : j + out_w, :], w[i, j], precision=precision)
        for i in range(kh)
        for j in range(kw)
    ]
    return sum(terms[1:], terms[0])
