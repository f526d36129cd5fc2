"""Generate notebooks/01_energy_score_langevin.ipynb (outputs empty; run by the tests)."""

from pathlib import Path

import nbformat as nbf

cells = [
    ("md", """# From an energy to samples

The project's first example, two Gaussians at (±2, 0) with standard deviation 0.5, told
with scorejax: an energy defines a Boltzmann distribution, its gradient defines the
**score**, Langevin dynamics turns a score into samples, and **denoising score matching**
learns the score from data without ever touching the partition function. Set the
environment variable `SCOREJAX_SMOKE=1` to run everything small (the tests do)."""),
    ("code", """import os
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import scorejax as sj
from scorejax import data, metrics, nets, plot

SMOKE = os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")  # small runs, for the tests
TRAIN_STEPS = 50 if SMOKE else 4000
NUM_SAMPLES = 200 if SMOKE else 2000
LANGEVIN_STEPS = 100 if SMOKE else 1000
STEPS_PER_LEVEL = 5 if SMOKE else 100"""),
    ("md", """## 1. Boltzmann weights

Three states with energies 3, 1, 2: p_i = exp(-E_i) / Z. The lowest energy is the most
probable; temperature flattens or sharpens the distribution."""),
    ("code", """energies = jnp.array([3.0, 1.0, 2.0])
for temperature in (0.5, 1.0, 4.0):
    print(f"T={temperature}: p =", np.round(sj.boltzmann_probs(energies, temperature), 3))
print("log Z at T=1:", float(sj.log_partition_finite(energies)))"""),
    ("md", """## 2. The score is one line of autodiff

For the two Gaussians at (±2, 0), `score_from_energy` differentiates the energy; the
closed form agrees. The partition function never appears: it is constant in x."""),
    ("code", """target = data.two_gaussians()
score = sj.score_from_energy(sj.GaussianMixture.energy)
x = jnp.array([0.5, 0.3])
print("autodiff:", score(target, x), " closed form:", target.score(x))

fig, ax = plt.subplots(figsize=(5, 5))
plot.energy_landscape(ax, target.energy, lim=4)
plot.score_field(ax, target.score, lim=4)
ax.set_title("density and score directions")
plt.show()"""),
    ("md", """## 3. Langevin dynamics

x ← x + h s(x) + √(2h) z, the library's convention. Chains start from N(0, 9I), wide
enough to cover both modes, with h = 0.01 for 1,000 steps."""),
    ("code", """sampler = sj.ula(target.score, 0.01)
x0 = 3.0 * jax.random.normal(jax.random.key(0), (NUM_SAMPLES, 2))
result = sj.run_chains(jax.random.key(1), sampler, x0, LANGEVIN_STEPS, thin=20)
print("mode weights:", metrics.mode_weights(result.state.x, target.means))

fig, axes = plt.subplots(1, 2, figsize=(10, 5))
plot.samples(axes[0], result.state.x, target.sample(jax.random.key(2), NUM_SAMPLES), lim=4.5)
plot.energy_landscape(axes[1], target.energy, lim=4.5)
plot.trajectories(axes[1], result.trace.x, num_chains=8)
plt.show()"""),
    ("md", """## 4. Learning the score: denoising score matching

Vincent (2011): perturb data with N(0, σ²I) and regress the score network onto −z/σ.
The optimum is the score of the *noised* data, which we know exactly here, so we can
measure the Fisher divergence of the learned score."""),
    ("code", """model = nets.MLPScore((128, 128))
score_fn = nets.apply_fn(model)
sigma = 0.1
optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, TRAIN_STEPS))
train_step = sj.make_train_step(partial(sj.dsm_loss, score_fn=score_fn, sigma=sigma), optimizer)
state = sj.init_train_state(model.init(jax.random.key(3), jnp.zeros(2)), optimizer)
state, history = sj.fit(train_step, state, jax.random.key(4),
                        lambda k: data.sample_two_gaussians(k, 512),
                        num_steps=TRAIN_STEPS, progress=False)
learned = partial(score_fn, state.ema_params)
noised = target.noised(sigma)
x_eval = noised.sample(jax.random.key(5), 2000)
print("Fisher divergence to the exact noised score:",
      float(metrics.fisher_divergence(learned, noised.score, x_eval)))
fig, ax = plt.subplots(figsize=(5, 3))
plot.loss_curve(ax, history)
plt.show()"""),
    ("md", """## 5. Many noise levels and annealed Langevin

One network conditioned on σ (NCSN), trained over a geometric ladder with λ(σ) = σ², then
sampled by annealed Langevin from large σ to small."""),
    ("code", """sigmas = sj.geometric_sigmas(5.0, 0.05, 10)
ncsn = nets.NoiseConditionalMLP((128, 128))
ncsn_fn = nets.apply_fn(ncsn)
train_step = sj.make_train_step(partial(sj.ncsn_loss, score_fn=ncsn_fn, sigmas=sigmas), optimizer)
state = sj.init_train_state(ncsn.init(jax.random.key(6), jnp.zeros(2), jnp.ones(())), optimizer)
state, _ = sj.fit(train_step, state, jax.random.key(7),
                  lambda k: data.sample_two_gaussians(k, 512),
                  num_steps=TRAIN_STEPS, progress=False)
conditional = partial(ncsn_fn, state.ema_params)
annealed = jax.vmap(lambda k, x: sj.annealed_langevin(
    k, conditional, x, sigmas, step_size=0.002, num_steps_per_level=STEPS_PER_LEVEL))
samples = annealed(jax.random.split(jax.random.key(8), NUM_SAMPLES), x0).state.x
reference = target.sample(jax.random.key(9), NUM_SAMPLES)
print("mode weights:", metrics.mode_weights(samples, target.means))
print("MMD^2:", float(metrics.mmd(samples, reference)), " noise floor:",
      float(metrics.mmd_noise_floor(jax.random.key(10), target.sample, NUM_SAMPLES, 3)))
fig, ax = plt.subplots(figsize=(5, 5))
plot.samples(ax, samples, reference, lim=4.5, label="annealed Langevin")
plt.show()"""),
]

nb = nbf.v4.new_notebook()
nb.cells = [
    nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
    for kind, src in cells
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("01_energy_score_langevin.ipynb"))
