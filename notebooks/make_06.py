"""Generate notebooks/06_score_sdes.ipynb (outputs empty; run by the tests)."""

from pathlib import Path

import nbformat as nbf

cells = [
    ("md", """# Score SDEs

Song et al. (2021) put NCSN and DDPM in one frame: a forward SDE dx = f(x, t) dt + g(t) dw
carries data x(0) to noise x(1), and the **reverse-time SDE**
dx = [f − g² ∇ log p_t(x)] dt + g dw̄ carries noise back to data, given the score
∇ log p_t of every noised marginal. The same marginals are produced by a deterministic
**probability-flow ODE** dx/dt = f − ½ g² ∇ log p_t, which turns a score model into a
normalising flow with an exact log-likelihood.

This notebook uses scorejax's SDEs (`scorejax.sde`), its reverse-time samplers
(`pc_sampler`, `sample_sde`) and its ODE tools (`scorejax.ode`). A Gaussian mixture stays a
Gaussian mixture under all three SDEs, so its noised score is exact
(`GaussianMixture.marginal(sde, t)`): we can look at the samplers with no learning error,
then train a network. Set `SCOREJAX_SMOKE=1` to run everything small (the tests do)."""),
    ("code", """import os
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import scorejax as sj
from scorejax import data, nets, ode, plot, samplers
from scorejax import sde as sdes

SMOKE = os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")  # small runs, for the tests
N = 100 if SMOKE else 2000          # samples
STEPS = 25 if SMOKE else 1000       # reverse-SDE steps
TRAIN_STEPS = 30 if SMOKE else 4000
target = sj.GaussianMixture(
    means=jnp.array([[-2.0, 0.0], [1.5, 1.5]]),
    scales=jnp.array([0.4, 0.6]),
    weights=jnp.array([0.3, 0.7]),
)
SDES = {"VE": sdes.VESDE(sigma_max=8.0), "VP": sdes.VPSDE(), "sub-VP": sdes.SubVPSDE()}"""),
    ("md", """## 1. Forward noising, as a picture

Each SDE's perturbation kernel is x(t) = m(t) x(0) + s(t) z (`sde.kernel(t)`). VE keeps
m = 1 and lets the noise explode; VP shrinks the data while the noise grows to 1; sub-VP
has VP's mean with less variance at every t."""),
    ("code", """x0 = target.sample(jax.random.key(0), N)
z = jax.random.normal(jax.random.key(1), x0.shape)
times = [0.0, 0.1, 0.3, 0.6, 1.0]
fig, axes = plt.subplots(3, len(times), figsize=(3 * len(times), 9))
for row, (name, sde) in zip(axes, SDES.items()):
    for ax, t in zip(row, times):
        m, s = sde.kernel(t)
        x_t = m * x0 + s * z
        lim = float(max(4.0, 3.5 * s))
        ax.scatter(*x_t.T, s=1)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{name}, t = {t}")
plt.tight_layout()
plt.show()"""),
    ("md", """## 2. The three SDEs' marginals

m(t) and s(t) of each SDE; the noised mixture's exact density at a few times (VP)."""),
    ("code", """t = jnp.linspace(1e-3, 1.0, 200)
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for name, sde in SDES.items():
    m, s = sde.kernel(t)
    axes[0].plot(t, m, label=name)
    axes[1].semilogy(t, s, label=name)
axes[0].set(title="mean coefficient m(t)", xlabel="t"); axes[0].legend()
axes[1].set(title="std s(t)", xlabel="t"); axes[1].legend()
plot.energy_landscape(axes[2], target.marginal(SDES["VP"], 0.3).energy, lim=4.0)
axes[2].set_title("VP: exact density of x(0.3)")
plt.show()"""),
    ("md", """## 3. Reverse-SDE, predictor–corrector and ODE samples with the exact score

`pc_sampler` composes a predictor (Euler–Maruyama, reverse diffusion, ancestral) with an
optional Langevin corrector; the time grid is a schedule, so the program compiles once
whatever the number of steps. The ODE is solved in the graph by diffrax (adaptive Tsit5)."""),
    ("code", """sde = SDES["VP"]
exact = lambda x, t: target.marginal(sde, t).score(x)
x_init = sde.prior_sample(jax.random.key(2), (N, 2))
grid = samplers.reverse_time_grid(sde, STEPS)
runs = {
    "Euler-Maruyama": sj.pc_sampler(sde, exact, samplers.euler_maruyama),
    "reverse diffusion + Langevin (PC)": sj.pc_sampler(
        sde, exact, samplers.reverse_diffusion, samplers.langevin_corrector, snr=0.05),
}
results = {}
for name, sampler in runs.items():
    out = sj.run_chains(jax.random.key(3), sampler, x_init, STEPS, schedule=grid)
    results[name] = jax.vmap(lambda v: samplers.denoise_sde(sde, exact, v, sde.eps))(out.state.x)
flow = jax.vmap(lambda v: ode.ode_sample(sde, exact, v, rtol=1e-4, atol=1e-4))(x_init)
results[f"ODE ({float(flow.nfe.mean()):.0f} evaluations on average)"] = flow.x

fig, axes = plt.subplots(1, 3, figsize=(15, 5))
reference = target.sample(jax.random.key(4), N)
for ax, (name, x) in zip(axes, results.items()):
    plot.samples(ax, x, reference, lim=4.0, label=name)
    weights = sj.metrics.mode_weights(x, target.means)
    ax.set_title(f"{name}\\nmode weights {np.round(np.asarray(weights), 2)} (true 0.3, 0.7)",
                 fontsize=9)
plt.show()"""),
    ("md", """## 4. Training a time-conditional score network

`TimeConditionalMLP` embeds t with Gaussian Fourier features; with
`parametrisation=nets.epsilon_output` it predicts the noise z, converted to a score as
−z / s(t). `sde_dsm_loss` is the continuous-time DSM loss (Eq. 7) with λ(t) = s(t)²."""),
    ("code", """model = nets.TimeConditionalMLP((64, 64) if SMOKE else (128, 128), sde=sde,
                                parametrisation=nets.epsilon_output)
score_fn = nets.apply_fn(model)
params = model.init(jax.random.key(5), jnp.zeros(2), jnp.ones(()))
optimizer = optax.adam(optax.cosine_decay_schedule(2e-3, TRAIN_STEPS))
loss = partial(sj.sde_dsm_loss, score_fn=score_fn, sde=sde)
state, history = sj.fit(sj.make_train_step(loss, optimizer), sj.init_train_state(params, optimizer),
                        jax.random.key(6), lambda k: target.sample(k, 512), num_steps=TRAIN_STEPS,
                        steps_per_call=min(500, TRAIN_STEPS))
learned = partial(score_fn, state.ema_params)
for t in (0.05, 0.5):
    noised = target.marginal(sde, t)
    x = noised.sample(jax.random.key(7), 1000)
    err = jnp.mean(jnp.sum((learned(x, jnp.full(1000, t)) - jax.vmap(noised.score)(x)) ** 2, -1))
    print(f"t = {t}: Fisher divergence to the exact score {float(err):.3f}")"""),
    ("md", """## 5. The likelihood as a heat map

`ode.log_likelihood` integrates x and the divergence of the ODE's drift together from eps
to 1 (exact divergence here, two Jacobian-vector products in 2-D), giving
log p_eps(x) = log p_1(x(1)) + ∫ div f̃ dt."""),
    ("code", """points_per_side = 6 if SMOKE else 50
xs, ys, points = plot.grid_2d(4.0, points_per_side)
model_log_p = jax.vmap(lambda v: ode.log_likelihood(sde, learned, v, rtol=1e-3,
                                                    atol=1e-3).log_prob)(points)
true_log_p = jax.vmap(target.log_prob)(points)
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, values, title in ((axes[0], model_log_p, "model (probability-flow ODE)"),
                          (axes[1], true_log_p, "truth")):
    ax.imshow(np.exp(np.asarray(values)).reshape(xs.shape), origin="lower",
              extent=(-4, 4, -4, 4))
    ax.set_title(title)
plt.show()
test = target.sample(jax.random.key(8), 20 if SMOKE else 1000)
nll = -jax.vmap(lambda v: ode.log_likelihood(sde, learned, v).log_prob)(test)
print(f"test NLL {float(nll.mean()):.3f} nats; the data's entropy is about "
      f"{float(-jax.vmap(target.log_prob)(test).mean()):.3f}")"""),
]

nb = nbf.v4.new_notebook()
nb.cells = [
    nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
    for kind, src in cells
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("06_score_sdes.ipynb"))
