"""Generate notebooks/04_contrastive_divergence.ipynb (outputs empty; run by the tests)."""

from pathlib import Path

import nbformat as nbf

cells = [
    ("md", """# Contrastive divergence

An energy-based model p_θ(x) = exp(-E_θ(x)) / Z_θ has the maximum-likelihood gradient

∇_θ (−log p_θ(x⁺)) = ∇_θ E_θ(x⁺) − E_{x⁻∼p_θ}[∇_θ E_θ(x⁻)]:

**lower the energy of data, raise the energy of model samples**. Z never has to be computed;
the price is the second term, an expectation under the model, which we estimate with MCMC
samples x⁻ (the *negatives*). Contrastive divergence (Hinton 2002) is the loss whose gradient
is that estimate, `mean E(x⁺) − mean E(stop_gradient(x⁻))`. How the negatives are drawn is
the whole story:

* **CD-k**: k MCMC steps started *at the data*. Cheap, but the chains barely move, so
  regions far from the data are never visited and their energy is never raised.
* **Short-run MCMC** (Nijkamp et al. 2019): k steps from noise.
* **Persistent CD** (Tieleman 2008) with a **replay buffer** (Du & Mordatch 2019): chains
  continue across training steps (5% restart from noise), so they approach the model's own
  distribution and the gradient approaches the true MLE gradient.

In 2-D we can compute Z by quadrature, so we can check which of these actually maximises the
likelihood. Set the environment variable `SCOREJAX_SMOKE=1` to run everything small (the
tests do)."""),
    ("code", """import os
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import scorejax as sj
from scorejax import data, nets, plot

SMOKE = os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")  # small runs, for the tests
TRAIN_STEPS = 30 if SMOKE else 2000
HIDDEN = (32,) if SMOKE else (128, 128)
LIM = 4.5"""),
    ("md", """## 1. The CD gradient is a difference of mean gradients

On a tiny model E = ½ w x² the parameter gradient of the loss is
mean(x⁺²/2) − mean(x⁻²/2), and no gradient flows into the negatives."""),
    ("code", """energy = lambda w, x: 0.5 * w * jnp.sum(x**2)
pos = jnp.array([[0.5], [1.0], [-0.3]])
neg = jnp.array([[2.0], [-1.5]])
grad_w, aux = jax.grad(lambda w: sj.cd_loss(w, None, (pos, neg), energy_fn=energy), has_aux=True)(1.0)
print("autodiff:", float(grad_w), " by hand:", float(jnp.mean(pos**2) / 2 - jnp.mean(neg**2) / 2))
print(aux)"""),
    ("md", """## 2. CD-1, PCD and DSM on eight Gaussians

Negatives come from any scorejax `Sampler`: here ULA at temperature 1. The train steps take a
function `make_sampler(params) -> Sampler`, so MALA or HMC plug in unchanged.
Gradient clipping is optax's; the L2 penalty α(E(x⁺)² + E(x⁻)²) keeps energies near zero."""),
    ("code", """target = data.eight_gaussians()
model = nets.MLPEnergy(hidden=HIDDEN)
energy_fn = nets.apply_fn(model)
optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(1e-3))
make_sampler = lambda params: sj.ula(partial(sj.score_from_energy(energy_fn), params), 0.01)
noise_fn = sj.uniform_noise(-LIM, LIM, (2,))
batch_fn = lambda k: data.sample_eight_gaussians(k, 256)

steps = {
    "CD-1": sj.make_cd_train_step(energy_fn, make_sampler, optimizer, num_mcmc_steps=1,
                                  alpha=1e-3),
    "PCD": sj.make_cd_train_step(energy_fn, make_sampler, optimizer, num_mcmc_steps=10, persistent=True,
                                  noise_fn=noise_fn, alpha=1e-3),
    "DSM": sj.make_train_step(partial(sj.dsm_loss, score_fn=sj.score_from_energy(energy_fn),
                                      sigma=0.1), optimizer),
}
trained, histories = {}, {}
for i, (name, step) in enumerate(steps.items()):
    params = model.init(jax.random.key(0), jnp.zeros(2))
    extra = sj.replay_init(jax.random.key(1), noise_fn, 2048) if name == "PCD" else None
    state = sj.init_train_state(params, optimizer, extra)
    state, histories[name] = sj.fit(step, state, jax.random.key(2 + i), batch_fn,
                                    num_steps=TRAIN_STEPS, steps_per_call=min(200, TRAIN_STEPS),
                                    description=name)
    trained[name] = state
print("PCD metrics of the last step:",
      {k: float(v[-1]) for k, v in histories["PCD"].items()})"""),
    ("md", """## 3. Exact test log-likelihood

log Z by the trapezoid rule on a 2-D grid (`log_partition_quadrature`), then
NLL = mean E(x) + log Z on fresh data. The true NLL of the data law is the floor."""),
    ("code", """test = data.sample_eight_gaussians(jax.random.key(10), 2000)
print(f"true: {float(-jnp.mean(jax.vmap(target.log_prob)(test))):.3f}")
for name, state in trained.items():
    e = partial(energy_fn, state.params)
    log_z = sj.log_partition_quadrature(e, (-LIM, -LIM), (LIM, LIM), 61 if SMOKE else 300)
    print(f"{name}: test NLL {float(jnp.mean(jax.vmap(e)(test)) + log_z):.3f}")

fig, axes = plt.subplots(1, 4, figsize=(16, 4))
plot.energy_landscape(axes[0], target.energy, LIM)
axes[0].set_title("true")
for ax, (name, state) in zip(axes[1:], trained.items()):
    plot.energy_landscape(ax, partial(energy_fn, state.params), LIM)
    ax.set_title(name)
plt.show()"""),
    ("md", """CD-1 only ever sees negatives one step away from the data: it shapes the energy near the
modes but leaves spurious low-energy regions elsewhere, which the normalised likelihood
exposes. PCD's chains roam the whole box and find them.

## 4. The replay buffer is plain arrays

`replay_sample` draws chain starts (a fraction restarted from noise), `replay_push` writes
the advanced chains back; both are pure and jit-able, and the buffer lives in
`TrainState.extra`."""),
    ("code", """buffer = trained["PCD"].extra
x0, indices, is_reinit = sj.replay_sample(jax.random.key(3), buffer, 512, noise_fn)
print("buffer size:", buffer.x.shape, " restarted from noise:", float(jnp.mean(is_reinit)))
fig, ax = plt.subplots(figsize=(4.5, 4.5))
plot.samples(ax, buffer.x, test[:1000], lim=LIM, label="persistent chains")
plt.show()"""),
    ("md", """## 5. Temperature of decoupled Langevin, and divergence

Practitioners set the step size and the noise separately:
x ← x − λ∇E + σ z. That is Langevin at temperature T = σ² / (2λ): with the usual image
settings (λ = 1, σ = 0.01) T = 5·10⁻⁵, a nearly deterministic descent. Training that
diverges is reported in the metrics (`diverged`, `num_nonfinite`, `energy_max_abs`)."""),
    ("code", """for step_size, noise_scale in [(0.01, np.sqrt(0.02)), (1.0, 0.01), (10.0, 0.005)]:
    print(f"step {step_size}, noise {noise_scale:.3g}: T = {noise_scale**2 / (2 * step_size):.2e}")
print("fraction of PCD steps flagged as diverged:", float(np.mean(histories["PCD"]["diverged"])))"""),
    ("md", """## 6. Relative likelihood without Z: out-of-distribution detection

−E(x) ranks points by likelihood without knowing Z. The AUROC (Mann–Whitney) of held-out data
against uniform points scores how well the energy separates them (0.5 is chance)."""),
    ("code", """e = jax.vmap(partial(energy_fn, trained["PCD"].params))
outliers = noise_fn(jax.random.key(11), 2000)
print("AUROC, eight Gaussians vs uniform noise:", float(sj.auroc(-e(test), -e(outliers))))"""),
]

nb = nbf.v4.new_notebook()
nb.cells = [
    nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
    for kind, src in cells
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("04_contrastive_divergence.ipynb"))
