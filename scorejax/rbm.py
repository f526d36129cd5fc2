"""Bernoulli–Bernoulli restricted Boltzmann machines and deep belief networks.

An RBM over visible v in {0,1}^V and hidden h in {0,1}^H has energy

    E(v, h) = -b^T v - c^T h - v^T W h,

so the layers are conditionally independent given each other (Smolensky 1986; Hinton
2002), and summing out h gives the free energy

    F(v) = -b^T v - sum_j softplus(c_j + v^T W_{:,j}),   p(v) = exp(-F(v)) / Z.

``RBM(W, b, c)`` is a NamedTuple pytree, so ``RBM.free_energy(params, v)`` is an energy
function in the library's form. Its sampler is ``block_gibbs``, a kernel of the library's
contract. Training by contrastive divergence (CD-k, Hinton 2002) and persistent CD (PCD,
Tieleman 2008) is the library's one CD step, ``replay.make_cd_train_step``, with
``energy_fn=RBM.free_energy`` and ``make_sampler=block_gibbs``: the loss is the free-energy
gap F(data) - F(negatives) whose gradient is the CD estimate of minus the log-likelihood
gradient. The partition function comes exactly, by enumerating the smaller layer, or by
annealed importance sampling (AIS), whose transitions are ``block_gibbs`` on tempered RBMs.
"""

from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp
from jax.tree_util import Partial

from scorejax._checks import check_positive, check_positive_int
from scorejax._compile import jit
from scorejax.replay import ReplayBuffer, make_cd_train_step
from scorejax.samplers.base import Sampler, count_nonfinite, run_chains
from scorejax.training import fit, init_train_state, minibatches
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

    def reconstruction_error(self, v: Array) -> Array:
        """Mean squared one-step reconstruction error |v - p(v | p(h | v))|^2 / V, a training
        monitor (Hinton 2010, §5), not the likelihood."""
        return jnp.mean((v - self.visible_probs(self.hidden_probs(v))) ** 2)


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
    """One block-Gibbs chain: the visible units x (V,) and the last hidden sample h (H,)."""

    x: Array
    h: Array


class RBMInfo(NamedTuple):
    """Per-step diagnostics: non-finite entries of the new visible state."""

    num_nonfinite: Array


def block_gibbs(params: RBM) -> Sampler:
    """Block Gibbs sampler of an RBM: h ~ p(h | v), then v ~ p(v | h) (Hinton 2002).

    The library's one Gibbs kernel for RBMs: CD/PCD negatives, DBN samples and AIS
    transitions all run it.

    Args:
      params: RBM(W, b, c), closed over (as data: a new RBM reuses the compiled run).

    Returns:
      Sampler with ``init(v) -> RBMState`` (v (V,) of 0/1 floats; h set to p(h | v) until
      the first step) and ``step(key, state) -> (RBMState, RBMInfo)``; scan it with
      ``run`` / ``run_chains``.
    """
    _check_rbm(params)
    return Sampler(Partial(_gibbs_init, params), Partial(_gibbs_step, params))


def _gibbs_init(params, v):
    if v.shape != (params.W.shape[0],):
        raise ValueError(f"x0 must have shape ({params.W.shape[0]},) per chain, got {v.shape}")
    return RBMState(v, params.hidden_probs(v).astype(v.dtype))


def _gibbs_step(params, key, state):
    key_h, key_v = jax.random.split(key)
    h = params.sample_hidden(key_h, state.x).astype(state.h.dtype)
    v = params.sample_visible(key_v, h).astype(state.x.dtype)
    return RBMState(v, h), RBMInfo(count_nonfinite(v))


# ----------------------------------------------------------------------------------- training


class RBMTrainConfig(NamedTuple):
    """Hyper-parameters of ``train_rbm`` (Hinton 2010's defaults for small binary data).

    With ``persistent``, ``num_chains`` fantasy particles (at least ``batch_size``) are kept
    in the replay buffer; each step advances ``batch_size`` of them.
    """

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

    ``replay.make_cd_train_step`` with the free energy and ``block_gibbs``; weight decay,
    momentum and (by default) a learning rate decaying linearly to zero (Hinton 2010;
    Tieleman 2008, whose PCD needs the decay to settle). PCD chains start from the
    base-rate model.

    Args:
      key: PRNG key.
      data: (N, V) binary training data.
      config: RBMTrainConfig.
      progress: show the progress bar.

    Returns:
      (params, history) with the per-step loss (the free-energy gap), the CD step's
      metrics, and the reconstruction error.
    """
    config = RBMTrainConfig() if config is None else config
    data = jnp.asarray(data, jnp.float32)
    _check_binary("data", data, np.shape(data)[-1] if np.ndim(data) == 2 else -1)
    if config.persistent and config.num_chains < config.batch_size:
        raise ValueError(
            f"num_chains ({config.num_chains}) must be at least batch_size ({config.batch_size})"
        )
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
        chains = ReplayBuffer(
            jax.random.bernoulli(
                key_chains, params.visible_probs(jnp.zeros(config.num_hidden)),
                (config.num_chains, data.shape[1]),
            ).astype(jnp.float32)
        )  # fmt: skip
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
    cd_step = make_cd_train_step(
        RBM.free_energy, block_gibbs, optimizer, num_mcmc_steps=num_gibbs_steps,
        persistent=persistent, reinit_fraction=0.0, ema_decay=0.0,
    )  # fmt: skip

    def train_step(state, key, batch):
        error = jnp.mean(jax.vmap(state.params.reconstruction_error)(batch))
        state, metrics = cd_step(state, key, batch)
        return state, {**metrics, "reconstruction_error": error}

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
    num_samples = check_positive_int("num_samples", num_samples)
    num_gibbs_steps = check_positive_int("num_gibbs_steps", num_gibbs_steps)
    return _sample_dbn(key, tuple(rbms), num_samples, num_gibbs_steps)


@jit
def _sample_dbn(key, rbms, num_samples, num_gibbs_steps):
    top = rbms[-1]
    key_start, key_chain, key_down = jax.random.split(key, 3)
    v = jax.random.bernoulli(key_start, 0.5, (num_samples, top.W.shape[0])).astype(top.W.dtype)
    v = run_chains(key_chain, block_gibbs(top), v, num_gibbs_steps).state.x
    keys = jax.random.split(key_down, len(rbms))
    if len(rbms) == 1:
        return top.visible_probs(top.sample_hidden(keys[0], v))
    h = v  # a state of the hidden layer of rbms[-2]
    for params, sub_key in zip(reversed(rbms[1:-1]), keys, strict=False):
        h = params.sample_visible(sub_key, h)
    return rbms[0].visible_probs(h)


# ----------------------------------------------------------------------- partition function


def _bit_states(start: Array, count: int, num_bits: int, dtype) -> Array:
    """Rows start, ..., start + count - 1 written as num_bits binary digits."""
    index = start + jnp.arange(count, dtype=jnp.int32)
    return ((index[:, None] >> jnp.arange(num_bits, dtype=jnp.int32)) & 1).astype(dtype)


def rbm_log_partition_exact(params: RBM, *, max_units: int = 22, chunk_bits: int = 14) -> Array:
    """Exact log Z of a Bernoulli–Bernoulli RBM by enumerating its smaller layer.

    Summing the visibles out analytically,

        Z = sum_h exp(c^T h) prod_i (1 + exp(b_i + (W h)_i)),
        log Z = logsumexp_h [c^T h + sum_i softplus(b_i + (W h)_i)],

    which costs 2^H terms (Salakhutdinov & Murray 2008, §4.1, used it to check AIS on
    RBMs with 20 hidden units). When V < H the visibles are enumerated instead, with
    log Z = logsumexp_v [-F(v)]. The 2^n states are made from integer bits in chunks of
    2^chunk_bits, each chunk reduced by ``logsumexp`` (``lax.map``), so memory stays
    O(2^chunk_bits (V + H)). Computed in the parameters' precision.

    Args:
      params: RBM(W (V, H), b, c).
      max_units: refuse to enumerate more than 2^max_units states.
      chunk_bits: log2 of the chunk size.

    Returns:
      log Z (scalar).
    """
    _check_rbm(params)
    chunk_bits = check_positive_int("chunk_bits", chunk_bits)
    num_visible, num_hidden = np.shape(params.W)
    num_bits = min(num_visible, num_hidden)
    if num_bits > max_units:
        raise ValueError(
            f"exact log Z enumerates 2^min(V, H) states; min(V, H) = {num_bits} exceeds "
            f"max_units = {max_units} (use rbm_ais)"
        )
    return _rbm_log_partition_exact(params, num_bits, min(chunk_bits, num_bits))


@jit
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
        return logsumexp(log_terms(_bit_states(i * chunk, chunk, num_bits, params.W.dtype)))

    return logsumexp(jax.lax.map(one_chunk, jnp.arange(2 ** (num_bits - chunk_bits))))


def rbm_log_likelihood(params: RBM, data: Array, log_partition) -> Array:
    """Average log-likelihood in nats: (1/N) sum_n [-F(v_n)] - log Z.

    Args:
      params: RBM.
      data: (N, V) binary data (e.g. the test set).
      log_partition: log Z (exact or an AIS estimate).
    """
    _check_rbm(params)
    data = jnp.asarray(data, params.W.dtype)
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
    1e-4, 1e-5). Returns (num_low + num_mid + num_high + 1,) betas, first 0, last 1, in
    JAX's default float dtype (float64 when ``jax_enable_x64`` is on).
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
        jnp.result_type(float),
    )


def tempered_rbm(params: RBM, base_visible_bias: Array, beta) -> RBM:
    """The AIS intermediate RBM at inverse temperature beta (Salakhutdinov & Murray 2008,
    Eq. 13-15): RBM(beta W, (1 - beta) b_A + beta b, beta c), whose free energy gives
    log p*_beta(v) = -F_beta(v) and whose block Gibbs sampler is the transition T_beta."""
    return RBM(beta * params.W, (1.0 - beta) * base_visible_bias + beta * params.b, beta * params.c)


class AISState(NamedTuple):
    """One AIS run: the visible state x (V,) and its accumulated log importance weight."""

    x: Array
    log_weight: Array


def _ais_init(params, base_bias, x):
    return AISState(x, jnp.zeros((), x.dtype))


def _ais_step(params, base_bias, key, state, beta_prev, beta):
    log_p = lambda b: -tempered_rbm(params, base_bias, b).free_energy(state.x)
    log_weight = state.log_weight + log_p(beta) - log_p(beta_prev)
    gibbs = block_gibbs(tempered_rbm(params, base_bias, beta))
    new, info = gibbs.step(key, RBMState(state.x, jnp.zeros(params.W.shape[1], state.x.dtype)))
    return AISState(new.x, log_weight.astype(state.log_weight.dtype)), info


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
    progress: bool = False,
) -> AISResult:
    """log Z of an RBM by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).

    Intermediate distributions interpolate between the base-rate model A (W = 0, visible
    biases b_A, the hidden units contributing 2^H) and the RBM B (S&M 2008, Eq. 13-15):

        log p*_k(v) = (1 - beta_k) b_A^T v + beta_k b^T v
                      + sum_j softplus(beta_k (c_j + (v^T W)_j)),

    the negative free energy of ``tempered_rbm(params, b_A, beta_k)``. v_0 ~ p_A exactly,
    then log w += log p*_k(v_{k-1}) - log p*_{k-1}(v_{k-1}) and v_k ~ T_k(v_{k-1}), T_k the
    ``block_gibbs`` kernel of the tempered RBM; the M runs are ``run_chains`` over the
    schedule of betas. Then Z_B ≈ Z_A mean_m w_m with log Z_A = sum_i softplus(b_A,i) +
    H log 2. The estimate of Z is unbiased, so log Z tends to be underestimated (Jensen); the
    reported error is the delta-method standard error of log of the mean weight. Computed in
    the parameters' precision.

    Args:
      key: PRNG key.
      params: RBM(W, b, c).
      num_runs: M independent annealing runs.
      betas: increasing schedule from 0 to 1 (default ``ais_betas()``, 14,500 steps).
      base_visible_bias: b_A, usually ``base_rate_visible_bias(train_data)`` (default zeros).
      progress: show a progress bar over the schedule.

    Returns:
      AISResult(log_partition, standard_error, log_weights, log_partition_base).
    """
    _check_rbm(params)
    num_runs = check_positive_int("num_runs", num_runs)
    dtype = jnp.result_type(params.W)
    num_visible = np.shape(params.W)[0]
    betas = jnp.asarray(ais_betas() if betas is None else betas, dtype)
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
        base_visible_bias = jnp.zeros(num_visible, dtype)
    base_visible_bias = jnp.asarray(base_visible_bias, dtype)
    if base_visible_bias.shape != (num_visible,):
        raise ValueError(
            f"base_visible_bias must have shape ({num_visible},), got {base_visible_bias.shape}"
        )
    key_start, key_run = jax.random.split(key)
    v = jax.random.bernoulli(
        key_start, jax.nn.sigmoid(base_visible_bias), (num_runs, num_visible)
    ).astype(dtype)
    sampler = Sampler(Partial(_ais_init, params, base_visible_bias),
                      Partial(_ais_step, params, base_visible_bias))  # fmt: skip
    result = run_chains(key_run, sampler, v, betas.shape[0] - 1,
                        schedule=(betas[:-1], betas[1:]), progress=progress)  # fmt: skip
    return _ais_estimate(result.state.log_weight, base_visible_bias, params.W.shape[1])


@jax.jit
def _ais_estimate(log_w, base_bias, num_hidden):
    num_runs = log_w.shape[0]
    log_z_base = jnp.sum(jax.nn.softplus(base_bias)) + num_hidden * jnp.log(2.0).astype(log_w.dtype)
    log_mean_w = logsumexp(log_w) - jnp.log(num_runs)
    ratio = jnp.exp(log_w - jnp.max(log_w))
    standard_error = jnp.std(ratio, ddof=1) / (jnp.sqrt(num_runs) * jnp.mean(ratio))
    return AISResult(log_z_base + log_mean_w, standard_error, log_w, log_z_base)
