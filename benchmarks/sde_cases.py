"""Benchmark problems of the score-SDE layer (``scorejax.sde``, ``scorejax.ode``,
``samplers.pc_sampler``):

- sde_likelihood: exact log-likelihoods by the probability-flow ODE of a time-conditional
  MLP score (VP), rtol = atol = 1e-5. ``scorejax`` is ``jax.vmap(ode.log_likelihood)`` under
  the user's ``jax.jit`` (diffrax's Tsit5 in the graph). ``scipy_host_loop`` is the
  reference approach of score_sde's likelihood code: the batch as one ODE state integrated
  on the host by ``scipy.integrate.solve_ivp`` (RK45) at the same tolerances, calling a
  jitted drift-and-divergence function per evaluation. 1,000 2-D points with the exact
  divergence, and 784 dimensions with Hutchinson's estimate (one Rademacher probe, held
  fixed along the path).
- pc_sampling: predictor-corrector sampling (reverse diffusion + Langevin corrector, VP) of
  the same time-conditional MLP for 1e4 chains, ``run_chains`` against a PyTorch eager loop
  of the same network and steps (``torch_ref.pc_vp``).
- pc_compile: compile time and program size of the PC sampler against the number of steps.
"""

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import scorejax as sj
from benchmarks import torch_ref
from benchmarks.harness import Case, Prepared, Skip
from scorejax import nets, ode, samplers
from scorejax import sde as sdes

TOL = 1e-5
SNR = 0.16
HIDDEN = (128, 128)


def _score(dim: int, hidden=HIDDEN):
    """A time-conditional MLP (noise prediction, VP) with random weights, bound to them."""
    sde = sdes.VPSDE()
    model = nets.TimeConditionalMLP(hidden, sde=sde, parametrisation=nets.epsilon_output)
    params = model.init(jax.random.key(0), jnp.zeros(dim), jnp.ones(()))
    return sde, partial(nets.apply_fn(model), params)


def _points(num_points: int, dim: int):
    return 0.5 * jax.random.normal(jax.random.key(1), (num_points, dim))


def _scorejax_likelihood(num_points, dim, hutchinson):
    def factory():
        sde, score_fn = _score(dim)
        x = _points(num_points, dim)
        keys = jax.random.split(jax.random.key(2), num_points) if hutchinson else None

        @jax.jit
        def run(x, keys):
            one = lambda v, k: ode.log_likelihood(sde, score_fn, v, key=k, rtol=TOL, atol=TOL)
            return jax.vmap(one)(x, keys).log_prob

        return Prepared(lambda: jax.block_until_ready(run(x, keys)))

    return factory


def _scipy_likelihood(num_points, dim, hutchinson):
    """score_sde's likelihood.py approach, written here from its description: one flat
    state [x (N*D), delta (N)] for the whole batch, ``solve_ivp(..., method="RK45")`` on the
    host, the drift and divergence jitted and called once per evaluation."""

    def factory():
        try:
            from scipy import integrate
        except ImportError:
            raise Skip("scipy is not installed") from None
        sde, score_fn = _score(dim)
        x = np.asarray(_points(num_points, dim), np.float64)
        probes = (
            np.asarray(jax.random.rademacher(jax.random.key(2), (num_points, dim)), np.float32)
            if hutchinson
            else None
        )

        @jax.jit
        def drift_and_divergence(state, t):
            xs = state[: num_points * dim].reshape(num_points, dim)
            drift = lambda v: ode.probability_flow_drift(sde, score_fn, v, t)

            def one(v, probe):
                if probe is None:
                    basis = jnp.eye(dim, dtype=v.dtype)
                    value, jv = jax.vmap(lambda e: jax.jvp(drift, (v,), (e,)),
                                         out_axes=(None, 0))(basis)  # fmt: skip
                    return value, jnp.trace(jv)
                value, jv = jax.jvp(drift, (v,), (probe,))
                return value, jnp.sum(probe * jv)

            if probes is None:
                values, divs = jax.vmap(lambda v: one(v, None))(xs)
            else:
                values, divs = jax.vmap(one)(xs, jnp.asarray(probes))
            return jnp.concatenate([values.ravel(), divs])

        def ode_func(t, y):
            return np.asarray(drift_and_divergence(jnp.asarray(y, jnp.float32), t), np.float64)

        def call():
            y0 = np.concatenate([x.ravel(), np.zeros(num_points)])
            solution = integrate.solve_ivp(ode_func, (sde.eps, 1.0), y0, rtol=TOL, atol=TOL,
                                           method="RK45")  # fmt: skip
            z = solution.y[: num_points * dim, -1].reshape(num_points, dim)
            delta = solution.y[num_points * dim :, -1]
            prior = -0.5 * np.sum(z**2, axis=1) - 0.5 * dim * np.log(2 * np.pi)
            return prior + delta

        return Prepared(call)

    return factory


def likelihood_cases(cfg) -> list[Case]:
    cases = []
    for num_points, dim, hutchinson in cfg["likelihood_sizes"]:
        how = "Hutchinson, 1 probe" if hutchinson else "exact divergence"
        impls = {
            "scorejax": _scorejax_likelihood(num_points, dim, hutchinson),
            "scipy_host_loop": _scipy_likelihood(num_points, dim, hutchinson),
        }
        cases.append(Case("sde_likelihood", f"{num_points} points x {dim} dims ({how})",
                          "points/s", num_points, impls))  # fmt: skip
    return cases


def _pc_run(num_chains, num_steps):
    sde, score_fn = _score(2)
    sampler = sj.pc_sampler(sde, score_fn, samplers.reverse_diffusion,
                            samplers.langevin_corrector, snr=SNR)  # fmt: skip
    grid = samplers.reverse_time_grid(sde, num_steps)
    return sampler, grid


def _scorejax_pc(num_chains, num_steps):
    def factory():
        sampler, grid = _pc_run(num_chains, num_steps)
        key = jax.random.key(0)
        x0 = jax.random.normal(jax.random.key(1), (num_chains, 2))
        run = lambda: sj.run_chains(key, sampler, x0, num_steps, schedule=grid).state.x
        return Prepared(lambda: jax.block_until_ready(run()))

    return factory


def pc_cases(cfg, torch_factory) -> list[Case]:
    n, steps = 10_000, cfg["pc_steps"]
    impls = {
        "scorejax": _scorejax_pc(n, steps),
        "torch_eager": torch_factory(torch_ref.pc_vp, n, steps, SNR, HIDDEN),
    }
    return [Case("pc_sampling", f"{n} chains x {steps} steps (P + C)", "chain-steps/s",
                 n * steps, impls)]  # fmt: skip


def pc_compile_rows(cfg) -> list[dict]:
    """Compile time and HLO size of ``run_chains`` of the PC sampler against the steps."""
    rows = []
    for num_steps in cfg["pc_compile_steps"]:
        sampler, grid = _pc_run(64, num_steps)
        x0 = jnp.zeros((64, 2))
        fn = lambda key, x0, grid, n=num_steps: (
            sj.run_chains(key, sampler, x0, n, schedule=grid, warn=False).state.x
        )
        times, ops = [], 0
        for _ in range(3):
            jax.clear_caches()
            start = time.perf_counter()
            lowered = jax.jit(fn).lower(jax.random.key(0), x0, grid)
            lowered.compile()
            times.append(time.perf_counter() - start)
            ops = sum(1 for line in lowered.as_text().splitlines() if "stablehlo." in line)
        rows.append({"problem": "pc_compile", "size": f"{num_steps} steps", "impl": "scorejax",
                     "unit": "s", "compile_s": float(np.median(times)),
                     "hlo_ops": ops})  # fmt: skip
    return rows
