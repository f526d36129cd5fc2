"""Generate notebooks/03_mcmc.ipynb (outputs empty; run by the tests)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
new_markdown_cell("""# 03 · MCMC for energy-based models

An energy-based model defines p(x) ∝ exp(-E(x)); drawing samples from it needs MCMC. This notebook
tours scorejax's toolkit:

* **ULA** `x + h s(x) + sqrt(2h) z` is biased at finite step size h;
  **MALA** adds the Metropolis–Hastings correction with the exact asymmetric proposal density and is exact.
* **HMC** (leapfrog + Metropolis) and **random-walk Metropolis**, all with the same `init/step` contract,
  so `scorejax.samplers.run` / `run_chains` drive them, jitted and vmapped over chains and seeds.
* **Dual-averaging warm-up** tunes the step size toward the optimal acceptance rates (0.574 MALA, 0.651 HMC).
* **Parallel tempering** crosses energy barriers that trap every local sampler.
* **Diagnostics**: ESS (Geyer's initial monotone sequence) and split R-hat.

A learned energy plugs in the same way as the analytic ones below:
`energy_fn = functools.partial(scorejax.nets.apply_fn(model), params)`."""),
new_code_cell("""import os
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import scorejax as sj
from scorejax import diagnostics
from scorejax.samplers import (
    MALA_TARGET_ACCEPTANCE, adapt_step_size_chains, geometric_temperatures, mala,
    parallel_tempering, run_chains, ula,
)

SMOKE = os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")  # small runs, for the tests
NUM_CHAINS = 4 if SMOKE else 32
NUM_STEPS = 500 if SMOKE else 20_000"""),
new_markdown_cell("""## ULA's bias, and MALA's correction

For a standard Gaussian, ULA's chain is the AR(1) recursion x' = (1 - h) x + sqrt(2h) z, whose stationary
variance is 1 / (1 - h/2) instead of 1. At h = 0.5 that is 4/3. MALA, with the same proposal, is exact."""),
new_code_cell("""energy_fn = lambda x: 0.5 * jnp.sum(x**2)
h = 0.5
x0 = jnp.zeros((NUM_CHAINS, 1))
ula_run = run_chains(jax.random.key(0), ula(lambda x: -x, h), x0, NUM_STEPS, thin=1)
mala_run = run_chains(jax.random.key(1), mala(energy_fn, h), x0, NUM_STEPS, thin=1)
print(f"closed-form ULA variance 1/(1 - h/2) = {1 / (1 - h / 2):.3f}")
print(f"ULA  variance {float(jnp.var(ula_run.trace.x)):.3f}")
print(f"MALA variance {float(jnp.var(mala_run.trace.x)):.3f}, "
      f"acceptance {float(mala_run.info.acceptance_rate.mean()):.2f}")"""),
new_markdown_cell("""## A double well, warm-up, and the barrier

E(x) = ΔE (x₁² - 1)² + x₂²/2 has two wells at x₁ = ±1 separated by a barrier of height ΔE. We tune MALA's
step size by dual averaging (Hoffman & Gelman 2014) toward 0.574, then watch x₁ along a chain: a local sampler
switches wells at Kramers' rate ∝ exp(-ΔE)."""),
new_code_cell("""barrier = 5.0
well = sj.DoubleWell(barrier)
well_energy = partial(sj.DoubleWell.energy, well)
starts = jnp.tile(jnp.array([-1.0, 0.0]), (NUM_CHAINS, 1))
warm = adapt_step_size_chains(
    jax.random.key(2), mala(well_energy, 0.05), starts, 100 if SMOKE else 500,
    initial_step_size=0.05, target_acceptance=MALA_TARGET_ACCEPTANCE,
)
step_size = float(warm.step_size)
print(f"adapted step size {step_size:.3f}; last warm-up acceptance {float(warm.acceptance_rate[-50:].mean()):.2f}")
fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(np.asarray(warm.acceptance_rate), lw=0.7)
ax.axhline(MALA_TARGET_ACCEPTANCE, color="k", ls="--")
ax.set_xlabel("warm-up step"); ax.set_ylabel("acceptance");"""),
new_markdown_cell("""## Parallel tempering

Six replicas at geometric temperatures 1…10 each run MALA on E/Tᵢ (step size scaled by Tᵢ); neighbours swap
with probability min(1, exp((E(xᵢ) - E(xⱼ))(1/Tᵢ - 1/Tⱼ))), even and odd pairs alternating. The hot replicas
cross the barrier easily and the swaps bring the crossings down to the cold chain. The whole ensemble is one
`Sampler`, so `run_chains` drives it. We give both samplers the same number of gradient evaluations
(PT spends 2 per replica per step)."""),
new_code_cell("""temps = geometric_temperatures(6, 10.0)
pt = parallel_tempering(well_energy, lambda e, t: mala(e, step_size * t), temps)
pt_steps = NUM_STEPS // 12
local = run_chains(jax.random.key(3), mala(well_energy, step_size), starts, NUM_STEPS, thin=1)
tempered = run_chains(
    jax.random.key(4), pt, jnp.broadcast_to(starts[:, None], (NUM_CHAINS, 6, 2)), pt_steps, thin=1
)
cold = tempered.trace.x[:, :, 0]  # (chains, steps, 2): the T = 1 replica
print("swap rates per neighbour pair:", np.round(np.asarray(tempered.info.swap_rate.mean(0)), 2))
fig, axes = plt.subplots(2, 1, figsize=(7, 4), sharey=True)
axes[0].plot(np.arange(NUM_STEPS), np.asarray(local.trace.x[0, :, 0]), lw=0.5)
axes[0].set_title(f"MALA, ΔE = {barrier:g}")
axes[1].plot(np.arange(pt_steps) * 12, np.asarray(cold[0, :, 0]), lw=0.5, color="C3")
axes[1].set_title("parallel tempering, cold replica"); axes[1].set_xlabel("gradient evaluations")
fig.tight_layout()"""),
new_markdown_cell("""## Diagnostics

The truth puts half the mass in each well (E[x₁] = 0). The ESS of x₁ and the split R-hat across chains tell the
two runs apart: chains stuck in their starting well disagree (R-hat far above 1.01)."""),
new_code_cell("""for name, x in [("MALA", local.trace.x), ("PT cold", cold)]:
    x1 = x[..., 0]
    print(f"{name:8s} mean x1 {float(x1.mean()):+.2f}  ESS {float(diagnostics.effective_sample_size(x1)):8.1f}"
          f"  split R-hat {float(diagnostics.split_rhat(x1)):.3f}")"""),
new_markdown_cell("""The full comparison (ULA, MALA, HMC and PT over barriers 1–8, and mode weights on an unequal mixture) is
`python -m experiments.mixing`; see the README's MCMC section for its table."""),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbformat.write(nb, Path(__file__).with_name("03_mcmc.ipynb"))
