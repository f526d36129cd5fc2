"""Partition functions: exact log Z by quadrature on a grid (1-D and 2-D)."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from scorejax._checks import check_positive_int
from scorejax.types import Array


def _trapezoid_log_weights(lo, hi, num_points: int) -> Array:
    # the spacing from the endpoints: grid[1] - grid[0] loses digits in float32
    dx = (hi - lo) / (num_points - 1)
    return jnp.log(jnp.full(num_points, dx).at[0].mul(0.5).at[-1].mul(0.5))


def log_partition_quadrature(
    energy_fn: Callable[[Array], Array],
    lower: Sequence[float],
    upper: Sequence[float],
    num_points: int = 1001,
) -> Array:
    """log Z = log integral exp(-E(x)) dx over a box, by the trapezoid rule on a grid.

    For smooth energies that grow fast enough that exp(-E) is negligible at the box's edge,
    the trapezoid rule converges faster than any power of the spacing (the error is that
    of the Euler–Maclaurin tail), so ~1000 points per axis give float32 accuracy.
    Sums are taken in log space (logsumexp), so large energies do not underflow.

    Args:
      energy_fn: E(x) for one point x of shape (d,), d = 1 or 2 (parameters closed over).
      lower, upper: the box, length d each.
      num_points: grid points per axis.

    Returns:
      log Z (scalar).
    """
    check_positive_int("num_points", num_points)
    lower, upper = (
        jnp.atleast_1d(jnp.asarray(lower, jnp.float32)),
        jnp.atleast_1d(jnp.asarray(upper, jnp.float32)),
    )
    dim = lower.shape[0]
    if dim not in (1, 2) or upper.shape != lower.shape:
        raise ValueError(
            f"lower and upper must both have length 1 or 2, got {lower.shape} and {upper.shape}"
        )
    if not bool(jnp.all(upper > lower)):
        raise ValueError(f"upper must exceed lower on every axis, got {lower} and {upper}")
    axes = [jnp.linspace(lower[i], upper[i], num_points) for i in range(dim)]
    log_w = [_trapezoid_log_weights(lower[i], upper[i], num_points) for i in range(dim)]
    if dim == 1:
        neg_e = -jax.vmap(energy_fn)(axes[0][:, None])
        return logsumexp(neg_e + log_w[0])

    # 2-D: one row of the grid at a time keeps memory at O(num_points)
    def row(x0):
        pts = jnp.stack([jnp.full_like(axes[1], x0), axes[1]], axis=1)
        return logsumexp(-jax.vmap(energy_fn)(pts) + log_w[1])

    return logsumexp(jax.lax.map(row, axes[0]) + log_w[0])


# ------------------------------------------------------------------------------------------
# Restricted Boltzmann machines: exact log Z by enumeration, and annealed importance sampling

from functools import partial  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

from scorejax.prng import fast_key  # noqa: E402
from scorejax.rbm import RBM, _check_rbm  # noqa: E402
from scorejax.types import Key  # noqa: E402


def _bit_states(start: Array, count: int, num_bits: int) -> Array:
    """Rows start, ..., start + count - 1 written as num_bits binary digits (float32)."""
    index = start + jnp.arange(count, dtype=jnp.int32)
    return ((index[:, None] >> jnp.arange(num_bits, dtype=jnp.int32)) & 1).astype(jnp.float32)


def rbm_log_partition_exact(params: RBM, *, max_units: int = 22, chunk_bits: int = 14) -> Array:
    """Exact log Z of a Bernoulli–Bernoulli RBM by enumerating its smaller layer.

    Summing the visibles out analytically,

        Z = sum_h exp(c^T h) prod_i (1 + exp(b_i + (W h)_i)),
        log Z = logsumexp_h [c^T h + sum_i softplus(b_i + (W h)_i)],

    which costs 2^H terms (Salakhutdinov & Murray 2008, §4.1, used it to check AIS on
    RBMs with 20 hidden units). When V < H the visibles are enumerated instead, with
    log Z = logsumexp_v [-F(v)]. The 2^n states are made from integer bits in chunks of
    2^chunk_bits, each chunk reduced by ``logsumexp`` (``lax.map``), so memory stays
    O(2^chunk_bits (V + H)).

    Args:
      params: RBM(W (V, H), b, c).
      max_units: refuse to enumerate more than 2^max_units states.
      chunk_bits: log2 of the chunk size.

    Returns:
      log Z (scalar).
    """
    _check_rbm(params)
    check_positive_int("chunk_bits", chunk_bits)
    num_visible, num_hidden = np.shape(params.W)
    num_bits = min(num_visible, num_hidden)
    if num_bits > max_units:
        raise ValueError(
            f"exact log Z enumerates 2^min(V, H) states; min(V, H) = {num_bits} exceeds "
            f"max_units = {max_units} (use rbm_ais)"
        )
    return _rbm_log_partition_exact(params, num_bits, min(chunk_bits, num_bits))


@partial(jax.jit, static_argnums=(1, 2))
def _rbm_log_partition_exact(params, num_bits, chunk_bits):
    hidden_side = params.W.shape[1] <= params.W.shape[0]
    chunk = 2**chunk_bits

    def log_terms(states):
        if hidden_side:
            return states @ params.c + jnp.sum(
                jax.nn.softplus(params.b + states @ params.W.T), axis=1
            )
        return -jax.vmap(params.free_energy)(states)

    def one_chunk(i):
        return logsumexp(log_terms(_bit_states(i * chunk, chunk, num_bits)))

    return logsumexp(jax.lax.map(one_chunk, jnp.arange(2 ** (num_bits - chunk_bits))))


def rbm_log_likelihood(params: RBM, data: Array, log_partition) -> Array:
    """Average log-likelihood in nats: (1/N) sum_n [-F(v_n)] - log Z.

    Args:
      params: RBM.
      data: (N, V) binary data (e.g. the test set).
      log_partition: log Z (exact or an AIS estimate).
    """
    _check_rbm(params)
    data = jnp.asarray(data, jnp.float32)
    if data.ndim != 2 or data.shape[1] != params.W.shape[0]:
        raise ValueError(f"data must have shape (N, {params.W.shape[0]}), got {data.shape}")
    return _rbm_log_likelihood(params, data, log_partition)


@jax.jit
def _rbm_log_likelihood(params, data, log_partition):
    return jnp.mean(-jax.vmap(params.free_energy)(data)) - log_partition


def ais_betas(num_low: int = 500, num_mid: int = 4000, num_high: int = 10000) -> Array:
    """Salakhutdinov & Murray 2008's AIS schedule of inverse temperatures from 0 to 1.

    beta spaced uniformly with ``num_low`` steps on [0, 0.5], ``num_mid`` on [0.5, 0.9] and
    ``num_high`` on [0.9, 1] (14,500 intermediate distributions by default: spacings 1e-3,
    1e-4, 1e-5). Returns (num_low + num_mid + num_high + 1,) betas, first 0, last 1.
    """
    for name, value in (("num_low", num_low), ("num_mid", num_mid), ("num_high", num_high)):
        check_positive_int(name, value)
    return jnp.asarray(
        np.concatenate(
            [
                np.linspace(0.0, 0.5, num_low, endpoint=False),
                np.linspace(0.5, 0.9, num_mid, endpoint=False),
                np.linspace(0.9, 1.0, num_high + 1),
            ]
        ),
        jnp.float32,
    )


class AISResult(NamedTuple):
    """Annealed importance sampling estimate of log Z.

    log_partition: log Z_A + log mean_m w_m, the log of the unbiased estimate of Z.
    standard_error: its delta-method standard error sd(w) / (sqrt(M) mean(w)).
    log_weights: (M,) log importance weights. log_partition_base: log Z_A of the base model.
    """

    log_partition: Array
    standard_error: Array
    log_weights: Array
    log_partition_base: Array


def rbm_ais(
    key: Key,
    params: RBM,
    *,
    num_runs: int = 100,
    betas: Array | None = None,
    base_visible_bias: Array | None = None,
) -> AISResult:
    """log Z of an RBM by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).

    Intermediate distributions interpolate between the base-rate model A (W = 0, visible
    biases b_A, the hidden units contributing 2^H) and the RBM B (S&M 2008, Eq. 13-15):

        log p*_k(v) = (1 - beta_k) b_A^T v + beta_k b^T v
                      + sum_j softplus(beta_k (c_j + (v^T W)_j)),

    v_0 ~ p_A exactly, then log w += log p*_k(v_{k-1}) - log p*_{k-1}(v_{k-1}) and
    v_k ~ T_k(v_{k-1}), T_k the block Gibbs kernel of p_k (h_j ~ sigmoid(beta_k (c_j +
    (v^T W)_j)), v_i ~ sigmoid((1 - beta_k) b_A,i + beta_k (b_i + (W h)_i))). Then
    Z_B ≈ Z_A mean_m w_m with log Z_A = sum_i softplus(b_A,i) + H log 2. The estimate of Z
    is unbiased, so log Z tends to be underestimated (Jensen); the reported error is the
    delta-method standard error of log of the mean weight.

    Args:
      key: PRNG key.
      params: RBM(W, b, c).
      num_runs: M independent annealing runs (vmapped).
      betas: increasing schedule from 0 to 1 (default ``ais_betas()``, 14,500 steps).
      base_visible_bias: b_A, usually ``base_rate_visible_bias(train_data)`` (default zeros).

    Returns:
      AISResult(log_partition, standard_error, log_weights, log_partition_base).
    """
    _check_rbm(params)
    check_positive_int("num_runs", num_runs)
    num_visible = np.shape(params.W)[0]
    betas = ais_betas() if betas is None else jnp.asarray(betas, jnp.float32)
    betas_np = np.asarray(betas)
    if (
        betas_np.ndim != 1
        or betas_np.size < 2
        or betas_np[0] != 0.0
        or betas_np[-1] != 1.0
        or np.any(np.diff(betas_np) <= 0)
    ):
        raise ValueError("betas must be a strictly increasing 1-D schedule from 0 to 1")
    if base_visible_bias is None:
        base_visible_bias = jnp.zeros(num_visible)
    base_visible_bias = jnp.asarray(base_visible_bias, jnp.float32)
    if base_visible_bias.shape != (num_visible,):
        raise ValueError(
            f"base_visible_bias must have shape ({num_visible},), got {base_visible_bias.shape}"
        )
    return _rbm_ais(key, params, betas, base_visible_bias, num_runs)


@partial(jax.jit, static_argnums=(4,))
def _rbm_ais(key, params, betas, base_bias, num_runs):
    num_hidden = params.W.shape[1]

    def log_p_star(v, beta):
        return (
            (1.0 - beta) * (v @ base_bias)
            + beta * (v @ params.b)
            + jnp.sum(jax.nn.softplus(beta * (params.c + v @ params.W)), axis=-1)
        )

    def transition(key, v, beta):
        key_h, key_v = jax.random.split(key)
        h = jax.random.bernoulli(key_h, jax.nn.sigmoid(beta * (params.c + v @ params.W)))
        logits = (1.0 - beta) * base_bias + beta * (params.b + h.astype(v.dtype) @ params.W.T)
        return jax.random.bernoulli(key_v, jax.nn.sigmoid(logits)).astype(v.dtype)

    key_start, key_run = jax.random.split(fast_key(key))
    v = jax.random.bernoulli(
        key_start, jax.nn.sigmoid(base_bias), (num_runs, base_bias.shape[0])
    ).astype(jnp.float32)

    def body(carry, inputs):
        v, log_w = carry
        step_key, beta_prev, beta = inputs
        log_w = log_w + log_p_star(v, beta) - log_p_star(v, beta_prev)
        return (transition(step_key, v, beta), log_w), None

    keys = jax.random.split(key_run, betas.shape[0] - 1)
    (_, log_w), _ = jax.lax.scan(body, (v, jnp.zeros(num_runs)), (keys, betas[:-1], betas[1:]))
    log_z_base = jnp.sum(jax.nn.softplus(base_bias)) + num_hidden * jnp.log(2.0)
    log_mean_w = logsumexp(log_w) - jnp.log(num_runs)
    ratio = jnp.exp(log_w - jnp.max(log_w))
    standard_error = jnp.std(ratio, ddof=1) / (jnp.sqrt(num_runs) * jnp.mean(ratio))
    return AISResult(log_z_base + log_mean_w, standard_error, log_w, log_z_base)
