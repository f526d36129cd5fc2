"""Bernoulli–Bernoulli restricted Boltzmann machines and deep belief networks.

An RBM over visible v in {0,1}^V and hidden h in {0,1}^H has energy

    E(v, h) = -b^T v - c^T h - v^T W h,

so the layers are conditionally independent given each other (Smolensky 1986; Hinton
2002), and summing out h gives the free energy

    F(v) = -b^T v - sum_j softplus(c_j + v^T W_{:,j}),   p(v) = exp(-F(v)) / Z.

``RBM(W, b, c)`` is a NamedTuple pytree, so ``RBM.free_energy(params, v)`` is an energy
function in the library's form. Training by contrastive divergence (CD-k, Hinton 2002) and
persistent CD (PCD, Tieleman 2008) goes through ``scorejax.training``: the loss is the
free-energy gap F(data) - F(negatives) whose gradient is the CD estimate of minus the
log-likelihood gradient, and PCD keeps its chains in ``TrainState.extra``. Partition
functions (exact and AIS) live in ``scorejax.partition``.
"""

from collections.abc import Sequence
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scorejax._checks import check_positive, check_positive_int
from scorejax.prng import fast_key
from scorejax.samplers.base import Sampler, count_nonfinite
from scorejax.training import TrainState, fit, init_train_state, make_train_step, minibatches
from scorejax.types import Array, Key


class RBM(NamedTuple):
    """Bernoulli–Bernoulli RBM parameters, in the notation of Bengio 2009 (§5.3).

    W: (V, H) weights. b: (V,) visible biases. c: (H,) hidden biases.
    E(v, h) = -b^T v - c^T h - v^T W h.
    """

    W: Array
    b: Array
    c: Array

    def energy(self, v: Array, h: Array) -> Array:
        """E(v, h) = -b^T v - c^T h - v^T W h for one (v, h) pair."""
        return -(v @ self.b) - (h @ self.c) - v @ self.W @ h

    def free_energy(self, v: Array) -> Array:
        """F(v) = -log sum_h exp(-E(v, h)) = -b^T v - sum_j softplus(c_j + (v^T W)_j)."""
        return -(v @ self.b) - jnp.sum(jax.nn.softplus(self.c + v @ self.W))

    def hidden_probs(self, v: Array) -> Array:
        """p(h_j = 1 | v) = sigmoid(c_j + (v^T W)_j), shape (H,) (or batched (B, H))."""
        return jax.nn.sigmoid(self.c + v @ self.W)

    def visible_probs(self, h: Array) -> Array:
        """p(v_i = 1 | h) = sigmoid(b_i + (W h)_i), shape (V,) (or batched (B, V))."""
        return jax.nn.sigmoid(self.b + h @ self.W.T)

    def sample_hidden(self, key: Key, v: Array) -> Array:
        """h ~ p(h | v), entries in {0, 1} (float)."""
        p = self.hidden_probs(v)
        return jax.random.bernoulli(key, p).astype(p.dtype)

    def sample_visible(self, key: Key, h: Array) -> Array:
        """v ~ p(v | h), entries in {0, 1} (float)."""
        p = self.visible_probs(h)
        return jax.random.bernoulli(key, p).astype(p.dtype)


def _check_rbm(params) -> None:
    if not isinstance(params, RBM):
        raise ValueError(f"params must be an RBM(W, b, c), got {type(params).__name__}")
    v, h = np.shape(params.W) if np.ndim(params.W) == 2 else (None, None)
    if v is None or np.shape(params.b) != (v,) or np.shape(params.c) != (h,):
        raise ValueError(
            "params must have W (V, H), b (V,), c (H,); got "
            f"{np.shape(params.W)}, {np.shape(params.b)}, {np.shape(params.c)}"
        )


def _check_binary(name: str, data, num_visible: int) -> None:
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] != num_visible:
        raise ValueError(f"{name} must have shape (N, {num_visible}), got {arr.shape}")
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must be binary (entries 0 or 1)")


def base_rate_visible_bias(data: Array, smoothing: float = 0.05) -> Array:
    """Visible biases of the "base-rate" RBM: b_i = log(p_i / (1 - p_i)), p_i the data mean.

    With W = 0 this RBM is the independent-Bernoulli fit to the pixel marginals: the
    AIS base model of Salakhutdinov & Murray 2008 (§4.1) and the visible-bias
    initialisation of Hinton 2010 (§8.1). ``smoothing`` adds pseudo-counts so that pixels
    that are always 0 or 1 get finite biases: p_i = (sum_n v_ni + s) / (N + 2 s).
    """
    data = jnp.asarray(data, jnp.float32)
    if data.ndim != 2:
        raise ValueError(f"data must have shape (N, V), got {data.shape}")
    check_positive("smoothing", smoothing)
    p = (jnp.sum(data, axis=0) + smoothing) / (data.shape[0] + 2 * smoothing)
    return jnp.log(p) - jnp.log1p(-p)


def init_rbm(
    key: Key, num_visible: int, num_hidden: int, data: Array | None = None, scale: float = 0.01
) -> RBM:
    """A fresh RBM: W ~ N(0, scale^2), c = 0, b the base rates of ``data`` (or 0).

    Hinton 2010, "A practical guide to training RBMs", §8.
    """
    check_positive_int("num_visible", num_visible)
    check_positive_int("num_hidden", num_hidden)
    check_positive("scale", scale)
    W = scale * jax.random.normal(key, (num_visible, num_hidden))
    b = jnp.zeros(num_visible) if data is None else base_rate_visible_bias(data)
    return RBM(W, b, jnp.zeros(num_hidden))


# ------------------------------------------------------------------------------------ sampler


class RBMState(NamedTuple):
    """One block-Gibbs chain: visible v (V,) and the last hidden sample h (H,)."""

    v: Array
    h: Array


class RBMInfo(NamedTuple):
    """Per-step diagnostics: non-finite entries of the new visible state."""

    num_nonfinite: Array


def block_gibbs(params: RBM) -> Sampler:
    """Block Gibbs sampler of an RBM: h ~ p(h | v), then v ~ p(v | h) (Hinton 2002).

    Args:
      params: RBM(W, b, c), closed over.

    Returns:
      Sampler with ``init(v) -> RBMState`` (h set to p(h | v) until the first step) and
      ``step(key, state) -> (RBMState, RBMInfo)``; scan it with ``scorejax.samplers.run``.
    """
    _check_rbm(params)

    def init(v):
        v = jnp.asarray(v, jnp.float32)
        if v.shape != (params.W.shape[0],):
            raise ValueError(f"v must have shape ({params.W.shape[0]},), got {v.shape}")
        return RBMState(v, params.hidden_probs(v))

    def step(key, state):
        key_h, key_v = jax.random.split(key)
        h = params.sample_hidden(key_h, state.v)
        v = params.sample_visible(key_v, h)
        return RBMState(v, h), RBMInfo(count_nonfinite(v))

    return Sampler(init, step)


@partial(jax.jit, static_argnames=("num_steps",))
def gibbs_chain(key: Key, params: RBM, v: Array, num_steps: int) -> Array:
    """``num_steps`` block-Gibbs steps from a batch v (B, V), all chains at once; returns v."""

    def body(v, step_key):
        key_h, key_v = jax.random.split(step_key)
        return params.sample_visible(key_v, params.sample_hidden(key_h, v)), None

    v, _ = jax.lax.scan(body, v, jax.random.split(fast_key(key), num_steps))
    return v


# ----------------------------------------------------------------------------------- training


def contrastive_divergence_loss(params: RBM, key: Key, batch) -> tuple[Array, dict]:
    """The free-energy gap whose gradient is the (P)CD update (Hinton 2002, Eq. 5).

    L = mean_n F(v_n) - mean_m F(v~_m), with v~ = stop_gradient(negatives), so
    -dL/dtheta = <-dE/dtheta>_data - <-dE/dtheta>_model (hidden units summed out, i.e.
    the Rao–Blackwellised statistics with p(h|v) instead of sampled h).

    Args:
      params: RBM.
      key: unused (the negatives are drawn by the train step); kept for the loss contract.
      batch: (data (B, V), negatives (M, V)).

    Returns:
      (L, aux) with aux["reconstruction_error"], the mean squared one-step reconstruction
      error of the data (a training monitor only; it is not the likelihood).
    """
    del key
    data, negatives = batch
    negatives = jax.lax.stop_gradient(negatives)
    free = jax.vmap(params.free_energy)
    loss = jnp.mean(free(data)) - jnp.mean(free(negatives))
    recon = params.visible_probs(params.hidden_probs(data))
    return loss, {"reconstruction_error": jnp.mean((data - recon) ** 2)}


def make_rbm_train_step(
    optimizer: optax.GradientTransformation,
    *,
    num_gibbs_steps: int = 1,
    persistent: bool = False,
    ema_decay: float = 0.0,
):
    """Build ``train_step(state, key, batch)`` for CD-k or PCD-k.

    CD-k (Hinton 2002): negatives are k block-Gibbs steps started at the batch.
    PCD (Tieleman 2008): negatives are k steps continued from persistent chains kept in
    ``state.extra`` ((M, V) binary array; make the state with ``init_train_state(params,
    optimizer, extra=chains)``), and the new chains are written back.

    Built on ``scorejax.training.make_train_step`` with ``contrastive_divergence_loss``, so it
    composes with ``fit``.

    Args:
      optimizer: an optax transformation (SGD with momentum in the papers).
      num_gibbs_steps: k >= 1.
      persistent: PCD when True.
      ema_decay: EMA of the parameters, as in ``make_train_step``.

    Returns:
      train_step(state, key, batch (B, V)) -> (state, metrics).
    """
    check_positive_int("num_gibbs_steps", num_gibbs_steps)
    inner = make_train_step(
        contrastive_divergence_loss, optimizer, ema_decay=ema_decay, has_aux=True
    )

    def train_step(state: TrainState, key: Key, batch):
        key_chain, key_step = jax.random.split(key)
        start = state.extra if persistent else batch
        negatives = gibbs_chain(key_chain, state.params, start, num_gibbs_steps)
        state, metrics = inner(state, key_step, (batch, negatives))
        if persistent:
            state = state._replace(extra=negatives)
        return state, metrics

    return train_step


class RBMTrainConfig(NamedTuple):
    """Hyper-parameters of ``train_rbm`` (Hinton 2010's defaults for small binary data)."""

    num_hidden: int = 20
    num_steps: int = 5000
    batch_size: int = 100
    learning_rate: float = 0.02
    momentum: float = 0.9
    decay_learning_rate: bool = True  # linearly to zero, as in Tieleman 2008
    weight_decay: float = 1e-4
    num_gibbs_steps: int = 1
    persistent: bool = False
    num_chains: int = 100


def train_rbm(
    key: Key, data: Array, config: RBMTrainConfig | None = None, *, progress: bool = True
) -> tuple[RBM, dict]:
    """Train a Bernoulli–Bernoulli RBM on binary data by CD-k or PCD with SGD + momentum.

    Weight decay, momentum and (by default) a learning rate decaying linearly to zero
    (Hinton 2010; Tieleman 2008, whose PCD needs the decay to settle). PCD chains start
    from the base-rate model.

    Args:
      key: PRNG key.
      data: (N, V) binary training data.
      config: RBMTrainConfig.
      progress: show the progress bar.

    Returns:
      (params, history) with the per-step loss and reconstruction error.
    """
    config = RBMTrainConfig() if config is None else config
    data = jnp.asarray(data, jnp.float32)
    _check_binary("data", data, np.shape(data)[-1] if np.ndim(data) == 2 else -1)
    key_init, key_chains, key_fit = jax.random.split(key, 3)
    params = init_rbm(key_init, data.shape[1], config.num_hidden, data)
    optimizer, train_step = _rbm_training(
        config.learning_rate,
        config.num_steps if config.decay_learning_rate else None,
        config.momentum,
        config.weight_decay,
        config.num_gibbs_steps,
        config.persistent,
    )
    chains = None
    if config.persistent:
        chains = jax.random.bernoulli(
            key_chains, params.visible_probs(jnp.zeros(config.num_hidden)),
            (config.num_chains, data.shape[1]),
        ).astype(jnp.float32)  # fmt: skip
    state = init_train_state(params, optimizer, extra=chains)
    name = f"{'PCD' if config.persistent else 'CD'}-{config.num_gibbs_steps}"
    state, history = fit(
        train_step, state, key_fit, minibatches(data, config.batch_size),
        num_steps=config.num_steps, steps_per_call=500, progress=progress, description=name,
    )  # fmt: skip
    return state.params, history


@cache
def _rbm_training(learning_rate, decay_steps, momentum, weight_decay, num_gibbs_steps, persistent):
    """``train_rbm``'s optimiser and train step, built once per setting: ``fit`` compiles per
    train-step function, so a second ``train_rbm`` with the same hyper-parameters and data
    shapes reuses the compiled loop instead of compiling again."""
    schedule = learning_rate
    if decay_steps is not None:
        schedule = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    optimizer = optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=momentum)
    )
    train_step = make_rbm_train_step(
        optimizer, num_gibbs_steps=num_gibbs_steps, persistent=persistent
    )
    return optimizer, train_step


# ---------------------------------------------------------------------------------------- DBN


def train_dbn(
    key: Key,
    data: Array,
    layer_sizes: Sequence[int],
    config: RBMTrainConfig | None = None,
    *,
    progress: bool = True,
) -> list[RBM]:
    """Greedy layer-wise training of a deep belief network (Hinton, Osindero & Teh 2006).

    Layer l is an RBM trained on samples of h ~ p(h | v) of the layer below (the
    "aggregated posterior"), with ``config`` for every layer but ``num_hidden`` taken from
    ``layer_sizes``.

    Args:
      key: PRNG key.
      data: (N, V) binary data.
      layer_sizes: hidden-layer widths, bottom to top.
      config: training settings shared by the layers.

    Returns:
      list of RBMs, bottom first.
    """
    config = RBMTrainConfig() if config is None else config
    if len(layer_sizes) < 1:
        raise ValueError("layer_sizes must name at least one layer")
    for size in layer_sizes:
        check_positive_int("layer_sizes entries", size)
    rbms = []
    x = jnp.asarray(data, jnp.float32)
    for size in layer_sizes:
        key, key_train, key_up = jax.random.split(key, 3)
        params, _ = train_rbm(key_train, x, config._replace(num_hidden=size), progress=progress)
        rbms.append(params)
        x = params.sample_hidden(key_up, x)
    return rbms


def sample_dbn(
    key: Key, rbms: Sequence[RBM], num_samples: int, num_gibbs_steps: int = 1000
) -> Array:
    """Samples from a DBN: block Gibbs in the top RBM, then down the directed layers.

    The top two layers form an undirected RBM; below them the net is a sigmoid belief net,
    so a sample is v_L ~ top RBM by ``num_gibbs_steps`` of Gibbs from a uniform start,
    then v_{l-1} ~ p(v_{l-1} | h = v_l) layer by layer (Hinton, Osindero & Teh 2006, §4).
    The bottom layer's visible probabilities are returned (the usual way to show samples).

    Returns:
      (num_samples, V) visible probabilities of the bottom layer.
    """
    if len(rbms) < 1:
        raise ValueError("rbms must hold at least one RBM")
    check_positive_int("num_samples", num_samples)
    check_positive_int("num_gibbs_steps", num_gibbs_steps)
    return _sample_dbn(key, tuple(rbms), num_samples, num_gibbs_steps)


@partial(jax.jit, static_argnames=("num_samples", "num_gibbs_steps"))
def _sample_dbn(key, rbms, num_samples, num_gibbs_steps):
    top = rbms[-1]
    key_start, key_chain, key_down = jax.random.split(key, 3)
    v = jax.random.bernoulli(key_start, 0.5, (num_samples, top.W.shape[0])).astype(jnp.float32)
    v = gibbs_chain(key_chain, top, v, num_gibbs_steps)
    keys = jax.random.split(key_down, len(rbms))
    if len(rbms) == 1:
        return top.visible_probs(top.sample_hidden(keys[0], v))
    h = v  # a state of the hidden layer of rbms[-2]
    for params, sub_key in zip(reversed(rbms[1:-1]), keys, strict=False):
        h = params.sample_visible(sub_key, h)
    return rbms[0].visible_probs(h)
