"""The probability-flow ODE of a score SDE: sampling, encoding and exact log-likelihoods
(Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", ICLR, Section 4.3, Eq. 13 and Appendix D).

Every SDE dx = f dt + g dw has an ODE with the same marginals p_t,

    dx/dt = f(x, t) - 1/2 g(t)^2 grad log p_t(x)        (Eq. 13),

deterministic, so it maps data to latents and back (``encode``, ``ode_sample``) and is a
continuous normalising flow whose log-density obeys the instantaneous change of variables
d log p_t(x(t)) / dt = -div f~(x(t), t) (Chen et al. 2018): integrating x and the divergence
together from eps to 1 gives log p_eps(x) = log p_1(x(1)) + int_eps^1 div f~ dt
(``log_likelihood``, Appendix D.2). The ODEs are solved in the graph by diffrax (Kidger 2021):
adaptive Tsit5 with a PID step-size controller by default, any diffrax solver on a fixed grid
with ``num_steps``. Everything is jit- and vmap-able: one example in, ``jax.vmap`` for a
batch (each example then takes its own adaptive steps).
"""

from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_callable, check_positive, check_positive_int
from scorejax._compile import as_pytree, jit
from scorejax.sde import SDE, check_sde, check_time
from scorejax.types import Array, BoundScoreFn, Key


class FlowResult(NamedTuple):
    """End point of an ODE solve with its cost: solver steps (accepted and rejected) and
    score-function evaluations."""

    x: Array
    num_steps: Array
    nfe: Array


class LikelihoodResult(NamedTuple):
    """log p_eps(x) = prior_log_prob + delta_log_prob, with z = x(1) the latent."""

    log_prob: Array
    prior_log_prob: Array
    delta_log_prob: Array
    z: Array
    num_steps: Array
    nfe: Array


def probability_flow_drift(sde: SDE, score_fn: BoundScoreFn, x: Array, t) -> Array:
    """f~(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t), the probability-flow ODE's drift (Eq. 13)."""
    return sde.drift(x, t) - 0.5 * sde.diffusion(t) ** 2 * score_fn(x, t)


def _evaluations(solver, num_steps: Array) -> Array:
    """Score evaluations of a diffrax solve of ``num_steps`` attempted steps: s stages a
    step for an explicit Runge-Kutta tableau of s stages, one fewer after the first step when
    the last stage is reused (first same as last: Tsit5, Dopri5), one a step for Euler."""
    tableau = getattr(solver, "tableau", None)
    if tableau is None:  # Euler
        return num_steps
    stages = len(tableau.c) + 1
    if tableau.fsal:
        return 1 + (stages - 1) * num_steps
    return stages * num_steps


def _times(t0, t1, x) -> tuple[Array, Array]:
    """The solve's end times as arrays of x's dtype: data to diffrax's compiled solve, so new
    times (or a new SDE's eps) reuse it."""
    dtype = jnp.result_type(x)
    return jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)


def _check_solve(sde, score_fn, rtol, atol, num_steps):
    check_sde(sde)
    check_callable("score_fn", score_fn, "score_fn(x, t) -> array shaped like x")
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if num_steps is not None:
        check_positive_int("num_steps", num_steps)


def _diffeqsolve(vector_field, y0, t0, t1, solver, rtol, atol, num_steps, max_steps):
    """diffrax.diffeqsolve from t0 to t1: adaptive (PID) unless num_steps is given."""
    if num_steps is None:
        solver = diffrax.Tsit5() if solver is None else solver
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = 0.01 * (t1 - t0)
    else:
        solver = diffrax.Heun() if solver is None else solver
        controller = diffrax.ConstantStepSize()
        dt0 = (t1 - t0) / num_steps
        max_steps = num_steps
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0,
        t1,
        dt0,
        y0,
        stepsize_controller=controller,
        max_steps=max_steps,
    )
    steps = solution.stats["num_steps"]
    y1 = jax.tree_util.tree_map(lambda y: y[-1], solution.ys)
    return y1, steps, _evaluations(solver, steps)


def solve_flow(
    sde: SDE,
    score_fn: BoundScoreFn,
    x: Array,
    t0,
    t1,
    *,
    rtol=1e-5,
    atol=1e-5,
    num_steps: int | None = None,
    solver=None,
    max_steps: int = 4096,
) -> FlowResult:
    """Solve the probability-flow ODE (Eq. 13) for one example from time t0 to t1 (either
    direction) in the graph with diffrax.

    Args:
      sde: the forward SDE (``scorejax.sde``).
      score_fn: ``score_fn(x, t)`` for one example, parameters closed over.
      x: x(t0), one example.
      t0, t1: the times to solve between, in [eps, 1].
      rtol, atol: the adaptive controller's tolerances (ignored with ``num_steps``).
      num_steps: solve on a fixed grid of this many steps instead (Heun by default).
      solver: a diffrax solver (default Tsit5 adaptive, Heun fixed; ``diffrax.Dopri5()``,
        ``diffrax.Euler()``, ...).
      max_steps: the adaptive solve's step limit (diffrax raises beyond it).

    Returns:
      FlowResult(x(t1), solver steps, score evaluations).
    """
    _check_solve(sde, score_fn, rtol, atol, num_steps)
    check_time("t0", t0, sde)
    check_time("t1", t1, sde)
    t0, t1 = _times(t0, t1, x)
    return _solve_flow(sde, as_pytree(score_fn), x, t0, t1, rtol, atol, num_steps, solver,
                       max_steps)  # fmt: skip


@jit
def _solve_flow(sde, score_fn, x, t0, t1, rtol, atol, num_steps, solver, max_steps):
    field = lambda t, y, args: probability_flow_drift(sde, score_fn, y, t)
    y1, steps, nfe = _diffeqsolve(field, x, t0, t1, solver, rtol, atol, num_steps, max_steps)
    return FlowResult(y1, steps, nfe)


def ode_sample(sde: SDE, score_fn: BoundScoreFn, x_init: Array, **solve_kwargs) -> FlowResult:
    """A sample: the ODE solved from a prior draw ``x_init`` at t = 1 down to t = eps
    (``solve_flow``'s keywords apply). Deterministic given ``x_init``."""
    return solve_flow(sde, score_fn, x_init, 1.0, sde.eps, **solve_kwargs)


def encode(sde: SDE, score_fn: BoundScoreFn, x: Array, **solve_kwargs) -> FlowResult:
    """The latent of ``x``: the ODE solved from t = eps up to t = 1. ``ode_sample`` of the
    latent returns ``x`` to the solver's tolerance (the flow is invertible)."""
    return solve_flow(sde, score_fn, x, sde.eps, 1.0, **solve_kwargs)


def log_likelihood(
    sde: SDE,
    score_fn: BoundScoreFn,
    x: Array,
    *,
    key: Key | None = None,
    num_probes: int = 1,
    probe=jax.random.rademacher,
    rtol=1e-5,
    atol=1e-5,
    num_steps: int | None = None,
    solver=None,
    max_steps: int = 4096,
) -> LikelihoodResult:
    """log p_eps(x) under the model's probability-flow ODE (Appendix D.2), for one example.

    x and delta = int_eps^1 div f~(x(t), t) dt are integrated as one augmented ODE from
    t = eps to 1; then log p_eps(x) = log p_1(x(1)) + delta with p_1 taken as the SDE's prior
    (``sde.prior_log_prob``; the prior is p_1 only approximately, e.g. VP's m(1) = 0.0066).
    Both divergences are sums of v^T (d f~ / dx) v, each from one vector-Jacobian product
    (reverse mode, as FFJORD computes it; one forward pass shared by all v). Without ``key``
    v runs over the standard basis and the divergence is exact; with a key it is the
    Skilling-Hutchinson estimate with ``num_probes`` probes drawn once from the key and held
    fixed along the trajectory (FFJORD, Grathwohl et al. 2019), an unbiased estimate of delta
    and, by Jensen's inequality, a slightly low-biased one of the likelihood itself. ``jax.vmap``
    over examples, and over keys for many probes.

    Args:
      sde, score_fn, x: as ``solve_flow``; x is x(eps), one example.
      key: None for the exact divergence; a key for Hutchinson's estimate.
      num_probes: probes per estimate (with ``key``).
      probe: ``jax.random.rademacher`` or ``jax.random.normal``.
      rtol, atol, num_steps, solver, max_steps: as ``solve_flow``.

    Returns:
      LikelihoodResult(log_prob, prior_log_prob, delta_log_prob, z, num_steps, nfe); an
      evaluation is one score evaluation with its divergence.
    """
    _check_solve(sde, score_fn, rtol, atol, num_steps)
    probes = None
    if key is not None:
        check_positive_int("num_probes", num_probes)
        check_callable("probe", probe, "probe(key, shape, dtype) with E[v v^T] = I")
        probes = probe(key, (num_probes, *jnp.shape(x)), jnp.result_type(x))
    t0, t1 = _times(sde.eps, 1.0, x)
    return _log_likelihood(sde, as_pytree(score_fn), x, probes, t0, t1, rtol, atol, num_steps,
                           solver, max_steps)  # fmt: skip


@jit
def _log_likelihood(sde, score_fn, x, probes, t0, t1, rtol, atol, num_steps, solver, max_steps):
    def field(t, y, args):
        x_t, _ = y
        drift = lambda v: probability_flow_drift(sde, score_fn, v, t)
        if probes is None:
            basis = jnp.eye(x_t.size, dtype=x_t.dtype).reshape((x_t.size, *x_t.shape))
            tangents = basis
        else:
            tangents = probes
        value, pullback = jax.vjp(drift, x_t)
        (vj,) = jax.vmap(pullback)(tangents)
        quadratic = jnp.sum((tangents * vj).reshape(tangents.shape[0], -1), axis=-1)
        div = jnp.sum(quadratic) if probes is None else jnp.mean(quadratic)
        return value, div

    y0 = (x, jnp.zeros((), jnp.result_type(x)))
    (z, delta), steps, nfe = _diffeqsolve(
        field, y0, t0, t1, solver, rtol, atol, num_steps, max_steps
    )
    prior = sde.prior_log_prob(z)
    return LikelihoodResult(prior + delta, prior, delta, z, steps, nfe)


def dequantize(key: Key, x: Array, *, low=-1.0, high=1.0, num_levels: int = 256) -> Array:
    """Integer data in {0, ..., K - 1} to the model's range: y = low + (high - low)(x + u) / K
    with u ~ U[0, 1)^D (uniform dequantisation, Theis, van den Oord & Bethge 2016). See
    ``bits_per_dim`` for the matching change of variables."""
    num_levels = check_positive_int("num_levels", num_levels)
    u = jax.random.uniform(key, jnp.shape(x))
    return low + (high - low) * (jnp.asarray(x, u.dtype) + u) / num_levels


def bits_per_dim(log_prob: Array, num_dims: int, *, low=-1.0, high=1.0, num_levels: int = 256):
    """Bits per dimension of integer data from the continuous model's log-density of the
    dequantised point y = low + (high - low)(x + u) / K (``dequantize``).

    Derivation. v = x + u has density p_v on [0, K)^D, and uniform dequantisation gives
    log P(x) = log int_[0,1)^D p_v(x + u) du >= E_u log p_v(x + u) (Jensen; Theis et al. 2016),
    so -E_u log p_v / (D log 2) is an upper bound on the discrete model's bits per dimension.
    The map y = low + (high - low) v / K has Jacobian ((high - low) / K)^D, hence
    log p_v(v) = log p_y(y) + D log((high - low) / K), and

        bpd = -log p_y(y) / (D log 2) + log2(K) - log2(high - low),

    +8 bits for K = 256 and data in [0, 1], +7 for [-1, 1]. Forgetting this term, or feeding
    undequantised data (a density on a lattice is unbounded), gives the offsets and negative
    bpd often reported by users of score_sde's likelihood code.
    """
    num_dims = check_positive_int("num_dims", num_dims)
    num_levels = check_positive_int("num_levels", num_levels)
    if not high > low:
        raise ValueError(f"high must exceed low, got low={low}, high={high}")
    shift = np.log2(num_levels) - np.log2(high - low)
    return -jnp.asarray(log_prob) / (num_dims * np.log(2.0)) + shift
