"""Generate notebooks/08_conditioning.ipynb (outputs empty; run by the tests)."""

from pathlib import Path

import nbformat as nbf

cells = [
    (
        "md",
        """# Conditioning: guidance and inverse problems

A score model is a prior; conditioning turns it into a sampler of p(x | y). This notebook
first checks the two mechanisms where the answer is known exactly (a labelled Gaussian
mixture, whose noised scores, classifier and posteriors are closed forms), then uses them
on digits:

1. **Classifier guidance** s(x, t) + w ∇ log p_t(y | x) (Song et al. 2021, Section 5): with
   the exact classifier and w = 1 it samples the selected component; larger w sharpens.
2. **Inverse problems**: a linear measurement y = A x + noise; projecting each step onto the
   measurement carried to the current noise level (`inverse.measurement_conditioned`).
3. **Digits**: inpainting and denoising with the U-Net of `experiments.mnist_score` (its
   checkpoint when there is one, otherwise a small model trained here).

`python -m experiments.guidance` (the w sweep on digits, classifier-free included),
`python -m experiments.inpainting`, `python -m experiments.jem` and
`python -m experiments.implicit_policy` run the full studies. Set `SCOREJAX_SMOKE=1` to run
everything tiny (the tests do).""",
    ),
    (
        "code",
        """import json
import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import scorejax as sj
from scorejax import checkpoint, guidance, inverse, nets, samplers, training
from scorejax import sde as sdes

SMOKE = os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")
sde = sdes.VPSDE()
n = 400 if SMOKE else 4000
num_steps = 50 if SMOKE else 400""",
    ),
    (
        "md",
        """## 1. Guidance with the exact classifier

Three Gaussians, each a class. The classifier of the noised data is the mixture's
responsibilities at time t (`guidance.mixture_classifier`). At w = 1 the guided score is the
exact score of the selected component, so the fraction of samples in it should be 1 up to
the sampler's error; at w = 0 it is that component's weight.""",
    ),
    (
        "code",
        """mixture = sj.GaussianMixture(means=jnp.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]]),
                             scales=jnp.array([0.5, 0.8, 0.6]), weights=jnp.array([0.5, 0.3, 0.2]))
unconditional = lambda x, t: mixture.marginal(sde, t).score(x)
classifier = guidance.mixture_classifier(mixture, sde)
x_init = sde.prior_sample(jax.random.key(0), (n, 2))
grid = samplers.reverse_time_grid(sde, num_steps)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharex=True, sharey=True)
for ax, w in zip(axes, (0.0, 1.0, 4.0)):
    score = guidance.classifier_guided_score(unconditional, classifier, 2, scale=w, num_classes=3)
    x = sj.run_chains(jax.random.key(1), samplers.pc_sampler(sde, score), x_init, num_steps,
                      schedule=grid, progress=False).state.x
    nearest = jnp.argmax(jax.vmap(mixture.component_log_probs)(x), axis=1)
    ax.scatter(*np.asarray(x).T, s=2, alpha=0.4)
    ax.set_title(f"w = {w}: {float(jnp.mean(nearest == 2)):.2f} in class 2")
plt.show()""",
    ),
    (
        "md",
        """## 2. An inverse problem with a known answer

Observe the first coordinate with noise, y = x₀ + 0.5 n. The posterior of a Gaussian mixture
is again a mixture, with updated weights (`inverse.mixture_posterior`); its noised score is
exact, so a reverse SDE on it samples p(x | y) exactly. The projection sampler on the prior's
score is an approximation (it ignores what y says about x₁ at high noise): compare them.""",
    ),
    (
        "code",
        """prior = sj.GaussianMixture(means=jnp.array([[-1.0, -4.0], [1.0, 4.0]]),
                          scales=jnp.array([[1.0, 0.7], [0.8, 1.2]]), weights=jnp.array([0.3, 0.7]))
measurement = inverse.inpainting(np.array([True, False]), noise_std=0.5)
y = jnp.array([-0.6])
posterior = inverse.mixture_posterior(prior, measurement, y)
exact = lambda x, t: posterior.marginal(sde, t).score(x)
prior_score = lambda x, t: prior.marginal(sde, t).score(x)
x_init = sde.prior_sample(jax.random.key(2), (n, 2))
runs = {
    "exact posterior score": samplers.pc_sampler(sde, exact),
    "projection on the prior score": inverse.measurement_conditioned(
        samplers.pc_sampler(sde, prior_score), measurement, y, inverse.sde_level(sde)),
}
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
for ax, (name, sampler) in zip(axes, runs.items()):
    x = sj.run_chains(jax.random.key(3), sampler, x_init, num_steps, schedule=grid,
                      progress=False).state.x
    ax.hist(np.asarray(x[:, 1]), bins=60, density=True, alpha=0.7)
    ax.set_title(f"{name}\\nP(x1 > 0) = {float(jnp.mean(x[:, 1] > 0)):.3f}")
print(f"exact posterior weight of the upper component: {float(posterior.weights[1]):.3f}")
plt.show()""",
    ),
    (
        "md",
        """## 3. Digits: inpainting and denoising

The VP model of `python -m experiments.mnist_score --dataset digits --out-dir
results/mnist_score_digits` when its checkpoint exists; otherwise a small U-Net trained here
for a few minutes. Pixels in [0, 1] are [-1, 1] for the model.""",
    ),
    (
        "code",
        """CHECKPOINTS = Path("..") / "results" / "mnist_score_digits" / "checkpoints" / "sde"
METRICS = CHECKPOINTS.parents[1] / "metrics.json"
found = (not SMOKE) and METRICS.exists() and bool(checkpoint.checkpoint_steps(CHECKPOINTS))
if found:
    run = json.loads(METRICS.read_text())
    widths, attention = tuple(run["widths"]), run["config"]["attention"]
else:
    widths, attention = ((8, 8), False) if SMOKE else (nets.DIGITS_WIDTHS, True)
data = sj.data.load_digits()
images = 2.0 * data.train_images[..., None] - 1.0
shape = images.shape[1:]
model = nets.UNet(widths=widths, attention=attention, sde=sde, parametrisation=nets.epsilon_output)
score_fn = nets.apply_fn(model)
optimizer = training.adam_with_warmup(5e-4, warmup_steps=10 if SMOKE else 200)
state = sj.init_train_state(model.init(jax.random.key(4), images[0], jnp.ones(())), optimizer)
if found:
    state = checkpoint.restore_checkpoint(CHECKPOINTS, state).state
    print(f"restored step {int(state.step)} from {CHECKPOINTS}")
else:
    loss = partial(sj.sde_dsm_loss, score_fn=score_fn, sde=sde)
    state, _ = sj.fit(sj.make_train_step(loss, optimizer), state, jax.random.key(5),
                      sj.minibatches(images, 16 if SMOKE else 128),
                      num_steps=20 if SMOKE else 3000, steps_per_call=10)
score = partial(score_fn, state.ema_params)
pixels = lambda x: np.clip((np.asarray(x)[..., 0] + 1.0) / 2.0, 0.0, 1.0)""",
    ),
    (
        "md",
        """Inpainting: the bottom half of a held-out digit is unknown. Each step of the reverse SDE
is followed by the projection onto the known half, noised to the step's level; the last
projection (`project_exact`) makes the known half equal to the observation.""",
    ),
    (
        "code",
        """truth = 2.0 * data.test_images[:4, ..., None] - 1.0
mask = np.ones(shape, bool)
mask[shape[0] // 2:] = False
measurement = inverse.inpainting(mask)
k, steps = (2, 10) if SMOKE else (6, 300)
grid_digits = samplers.reverse_time_grid(sde, steps)
rows = []
for i, x in enumerate(truth):
    y = inverse.measure(jax.random.key(10 + i), measurement, x)
    sampler = inverse.measurement_conditioned(samplers.pc_sampler(sde, score), measurement, y,
                                              inverse.sde_level(sde))
    out = sj.run_chains(jax.random.key(20 + i), sampler, sde.prior_sample(jax.random.key(i),
                        (k, *shape)), steps, schedule=grid_digits, progress=False).state.x
    out = jax.vmap(lambda v: samplers.denoise_sde(sde, score, v, sde.eps))(out)
    out = jax.vmap(lambda v: inverse.project_exact(measurement, y, v))(out)
    observed = jnp.where(mask, x, 0.0)
    rows.append(np.concatenate([pixels(observed[None]), pixels(out), pixels(x[None])]))
fig, ax = plt.subplots(figsize=(1.2 * (k + 2), 1.2 * len(rows)))
sj.plot.image_grid(ax, np.concatenate(rows), num_columns=k + 2, value_range=(0, 1))
ax.set_title("observed (unknown half grey) | samples | truth")
plt.show()""",
    ),
    (
        "md",
        """Denoising: y = x + 0.2 n in pixel units, 0.4 in the model's [-1, 1]. The forward kernel
reaches that noise-to-signal ratio at a time t* (`inverse.denoising_start`); from
x(t*) = m(t*) y the reverse process samples p(x | y).""",
    ),
    (
        "code",
        """noisy = truth + 0.4 * jax.random.normal(jax.random.key(30), truth.shape)
t_start, _ = inverse.denoising_start(sde, noisy[0], 0.4)
steps = 10 if SMOKE else max(1, int(300 * t_start))
grid_denoise = samplers.reverse_time_grid(sde, steps, t_start=t_start)
mean, _ = sde.kernel(jnp.asarray(t_start))
out = sj.run_chains(jax.random.key(31), samplers.pc_sampler(sde, score), mean * noisy, steps,
                    schedule=grid_denoise, progress=False).state.x
out = jax.vmap(lambda v: samplers.denoise_sde(sde, score, v, sde.eps))(out)
mse = lambda a: float(np.mean((pixels(a) - pixels(truth)) ** 2))
print(f"t* = {t_start:.3f}; MSE noisy {mse(noisy):.4f}, denoised {mse(out):.4f}")
fig, ax = plt.subplots(figsize=(5, 4))
sj.plot.image_grid(ax, np.concatenate([pixels(noisy), pixels(out), pixels(truth)]), num_columns=4,
                   value_range=(0, 1))
ax.set_title("noisy / denoised / truth")
plt.show()""",
    ),
]

nb = nbf.v4.new_notebook()
nb.cells = [
    nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
    for kind, src in cells
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("08_conditioning.ipynb"))
