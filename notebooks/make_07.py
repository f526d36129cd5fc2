"""Generate notebooks/07_image_scores.ipynb (outputs empty; run by the tests)."""

from pathlib import Path

import nbformat as nbf

cells = [
    (
        "md",
        """# Image score models

A time-conditional U-Net (`scorejax.nets.UNet`) learns the score of noised digits under the
VP SDE (noise prediction, DDPM's parametrisation), and the reverse-time samplers of
`scorejax.samplers` turn it into a generator. This notebook loads the checkpoint that
`python -m experiments.mnist_score` writes (`results/mnist_score/checkpoints/sde`), or, when
there is none, trains a small model on scikit-learn's 8×8 digits for a few minutes; then it
samples, shows the reverse process, and looks at the model's denoising at each noise level.
Set `SCOREJAX_SMOKE=1` to run everything tiny (the tests do).""",
    ),
    (
        "code",
        """import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import scorejax as sj
from scorejax import checkpoint, nets, samplers, training
from scorejax import sde as sdes

SMOKE = os.environ.get("SCOREJAX_SMOKE", "") not in ("", "0")
CHECKPOINTS = Path("..") / "results" / "mnist_score" / "checkpoints" / "sde"
sde = sdes.VPSDE()""",
    ),
    (
        "md",
        """## 1. A model: the experiment's checkpoint, or a small one trained here

A checkpoint holds the whole `TrainState` and the experiment's config; the config says which
data set and which U-Net widths built it, so the template to restore into is rebuilt from it.
Pixels in [0, 1] are mapped to [-1, 1] for the VP model (centred data, as in DDPM).""",
    ),
    (
        "code",
        """METRICS = CHECKPOINTS.parents[1] / "metrics.json"
found = (not SMOKE) and METRICS.exists() and bool(checkpoint.checkpoint_steps(CHECKPOINTS))
if found:
    import json
    run = json.loads(METRICS.read_text())
    found = run["config"]["sde"] == "vp"  # this notebook builds the VP model
if found:
    dataset, widths = run["config"]["dataset"], tuple(run["widths"])
    attention = run["config"]["attention"]
else:
    dataset, widths, attention = "digits", ((8, 8) if SMOKE else nets.DIGITS_WIDTHS), not SMOKE
data = sj.data.load_mnist_5k() if dataset == "mnist" else sj.data.load_digits()
images = 2.0 * data.train_images[..., None] - 1.0
shape = images.shape[1:]
model = nets.UNet(widths=widths, attention=attention, sde=sde,
                  parametrisation=nets.epsilon_output)
score_fn = nets.apply_fn(model)
optimizer = training.adam_with_warmup(5e-4, warmup_steps=10 if SMOKE else 200)
params = model.init(jax.random.key(1), images[0], jnp.ones(()))
state = sj.init_train_state(params, optimizer)
print(f"{dataset}: {images.shape[0]} training images of shape {shape}; "
      f"U-Net widths {widths}, {nets.parameter_count(params):,} parameters")
if found:
    state = checkpoint.restore_checkpoint(CHECKPOINTS, state).state
    print(f"restored step {int(state.step)} from {CHECKPOINTS}")
else:
    loss = partial(sj.sde_dsm_loss, score_fn=score_fn, sde=sde)
    step = sj.make_train_step(loss, optimizer)
    batches = sj.minibatches(images, 16 if SMOKE else 128)
    state, history = sj.fit(step, state, jax.random.key(2), batches,
                            num_steps=20 if SMOKE else 3000, steps_per_call=10 if SMOKE else 100)
    plt.figure(figsize=(5, 3))
    sj.plot.loss_curve(plt.gca(), history)
    plt.show()
score = partial(score_fn, state.ema_params)""",
    ),
    (
        "md",
        """## 2. Samples, and the reverse process

Predictor–corrector sampling (reverse diffusion + one Langevin corrector step per step,
Song et al. 2021, Algorithm 1) from the prior N(0, I) at t = 1 down to t = eps, keeping every
tenth state, then Tweedie's denoising step.""",
    ),
    (
        "code",
        """n, num_steps = (4, 10) if SMOKE else (36, 500)
x_init = sde.prior_sample(jax.random.key(3), (n, *shape))
sampler = samplers.pc_sampler(sde, score, samplers.reverse_diffusion, samplers.langevin_corrector)
result = sj.run_chains(jax.random.key(4), sampler, x_init, num_steps,
                       schedule=samplers.reverse_time_grid(sde, num_steps), thin=num_steps // 10)
final = jax.vmap(lambda v: samplers.denoise_sde(sde, score, v, sde.eps))(result.state.x)
pixels = lambda x: np.clip((np.asarray(x)[..., 0] + 1.0) / 2.0, 0.0, 1.0)
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
sj.plot.image_grid(axes[0], pixels(final), num_columns=6, value_range=(0, 1))
axes[0].set_title("PC samples")
sj.plot.image_grid(axes[1], pixels(images[:n]), num_columns=6, value_range=(0, 1))
axes[1].set_title("training digits")
plt.show()
trace = result.trace.x[:4]  # (4 chains, 10 snapshots, H, W, 1)
fig, axes = plt.subplots(1, trace.shape[1], figsize=(1.6 * trace.shape[1], 3))
for j, ax in enumerate(axes):
    sj.plot.image_grid(ax, pixels(trace[:, j]), num_columns=2, value_range=(0, 1))
    ax.set_title(f"step {(j + 1) * (num_steps // 10)}", fontsize=8)
plt.show()""",
    ),
    (
        "md",
        """## 3. What the network does at each noise level

At time t the kernel gives x(t) = m(t) x(0) + s(t) z; the model's Tweedie estimate
E[x(0) | x(t)] = (x + s² ∇ log p_t(x)) / m is its best guess of the clean digit.""",
    ),
    (
        "code",
        """clean = images[:3]
times = [0.05, 0.2, 0.4, 0.6, 0.8]
fig, axes = plt.subplots(2, len(times), figsize=(2.2 * len(times), 4.6))
for j, t in enumerate(times):
    mean, std = sde.kernel(t)
    noisy = mean * clean + std * jax.random.normal(jax.random.key(5 + j), clean.shape)
    guess = jax.vmap(lambda v: samplers.denoise_sde(sde, score, v, t))(noisy)
    sj.plot.image_grid(axes[0, j], pixels(noisy), num_columns=3, value_range=(0, 1))
    sj.plot.image_grid(axes[1, j], pixels(guess), num_columns=3, value_range=(0, 1))
    axes[0, j].set_title(f"t = {t}")
axes[0, 0].set_ylabel("x(t)")
axes[1, 0].set_ylabel("Tweedie estimate")
plt.show()""",
    ),
]

nb = nbf.v4.new_notebook()
nb.cells = [
    nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
    for kind, src in cells
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("07_image_scores.ipynb"))
