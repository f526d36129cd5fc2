"""JEM against the same network trained as a plain classifier: accuracy, calibration,
out-of-distribution detection and class-conditional samples (Grathwohl et al. 2020).

A LeNet-size classifier (``nets.DigitClassifier``) is trained twice at equal steps and seeds
on the 8x8 digits (``--dataset mnist`` for the 5,000 MNIST digits): once on the
cross-entropy, once as a JEM (cross-entropy + persistent contrastive divergence on
E(x) = -logsumexp f(x), SGLD chains from a replay buffer with Grathwohl et al.'s settings:
20 steps, step 1, noise 0.01, reinitialisation 0.05, uniform noise restarts, a buffer of
10,000). Training runs in chunks; when a chunk reports divergence (non-finite values or
runaway energies, JEM's known failure) the run stops, keeps the parameters of the last good
chunk and says so.

Reported per model: held-out accuracy, expected calibration error (15 bins) with its
reliability diagram, OOD AUROC of the energy score -E(x) = logsumexp f(x) and of the maximum
softmax probability (Hendrycks & Gimpel 2017) against uniform noise, pixel-shuffled digits
and vertically flipped digits, and class-conditional samples by SGLD on E(x, y) = -f(x)[y].
Beside them, a model-free reference: the AUROC of the 5-nearest-neighbour pixel distance to
the training digits, which says how separable each OOD set is in pixel space.
A 2-D version on two moons draws the energy landscape of both models.

    python -m experiments.jem            # 8x8 digits, minutes on 2 CPU cores
    python -m experiments.jem --smoke
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax import lax

import scorejax as sj
from experiments.common import (
    Timer,
    load_image_data,
    markdown_table,
    output_dir,
    parse_config,
    write_metrics,
)
from scorejax import jem, metrics, nets, replay, samplers


@dataclasses.dataclass(frozen=True)
class Config:
    """JEM vs a plain classifier: accuracy, calibration, OOD AUROC, samples."""

    dataset: str = "digits"  # or "mnist"
    num_steps: int = 4000
    chunk: int = 100  # steps per divergence check
    batch_size: int = 64
    learning_rate: float = 1e-3
    grad_clip: float = 1.0
    num_mcmc_steps: int = 20
    step_size: float = 1.0
    noise_scale: float = 0.01
    reinit_fraction: float = 0.05
    buffer_size: int = 10000  # Grathwohl et al.'s
    alpha: float = 0.1  # L2 energy penalty, the divergence guard beside clipping
    energy_limit: float = 1e3
    num_bins: int = 15
    sample_steps: int = 200
    moons_steps: int = 1000
    seed: int = 0
    out_dir: str = "results/jem"


SMOKE = dict(num_steps=20, chunk=10, buffer_size=64, num_mcmc_steps=2, sample_steps=3,
             moons_steps=10)  # fmt: skip


def train(cfg, logits_fn, params, x, labels, shape, generative: bool):
    """Train the classifier (``generative=False``) or the JEM, in chunks with a divergence
    check; returns (params, history, diverged_at or None)."""
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                            optax.adam(cfg.learning_rate))  # fmt: skip
    noise = replay.uniform_noise(0.0, 1.0, shape)
    if generative:
        step = jem.make_jem_train_step(
            logits_fn, optimizer, noise, num_mcmc_steps=cfg.num_mcmc_steps,
            step_size=cfg.step_size, noise_scale=cfg.noise_scale,
            reinit_fraction=cfg.reinit_fraction, alpha=cfg.alpha, clip_range=(0.0, 1.0),
            energy_limit=cfg.energy_limit,
        )  # fmt: skip
        buffer = replay.replay_init(jax.random.key(cfg.seed + 7), noise, cfg.buffer_size)
        state = sj.init_train_state(params, optimizer, extra=buffer)
    else:
        step = sj.make_train_step(partial(jem.cross_entropy_loss, logits_fn=logits_fn), optimizer)
        state = sj.init_train_state(params, optimizer)
    batch_fn = jax.tree_util.Partial(_labelled_rows(cfg.batch_size), x, labels)
    key = jax.random.key(cfg.seed + 1)
    history: dict[str, list] = {}
    good = state.params
    for _ in range(0, cfg.num_steps, cfg.chunk):
        state, chunk = sj.fit(step, state, key, batch_fn, num_steps=cfg.chunk, progress=False,
                              steps_per_call=cfg.chunk)  # fmt: skip
        for name, values in chunk.items():
            history.setdefault(name, []).append(values)
        bad = chunk.get("diverged", np.zeros(1)) > 0
        if bad.any() or not np.all(np.isfinite(chunk["loss"])):
            first = int(state.step) - cfg.chunk + int(np.argmax(bad | ~np.isfinite(chunk["loss"])))
            print(f"{'JEM' if generative else 'classifier'} diverged at step {first}: stopped, "
                  "keeping the parameters of the last good chunk")  # fmt: skip
            return good, {k: np.concatenate(v) for k, v in history.items()}, first
        good = jax.tree_util.tree_map(jnp.copy, state.params)
    return state.params, {k: np.concatenate(v) for k, v in history.items()}, None


def _labelled_rows(batch_size):
    def rows(x, labels, key):
        index = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return x[index], labels[index]

    return rows


def ood_sets(key, images):
    """Uniform noise, pixel-shuffled digits (each image's pixels permuted: the same
    histogram, no shape) and vertically flipped digits."""
    key_u, key_p = jax.random.split(key)
    flat = images.reshape(images.shape[0], -1)
    perms = jax.vmap(lambda k: jax.random.permutation(k, flat.shape[1]))(
        jax.random.split(key_p, images.shape[0]))  # fmt: skip
    shuffled = jnp.take_along_axis(flat, perms, axis=1).reshape(images.shape)
    return {
        "uniform noise": jax.random.uniform(key_u, images.shape),
        "pixel-shuffled": shuffled,
        "flipped": images[:, ::-1],
    }


def evaluate(cfg, logits_fn, params, data, oods):
    logits = jax.vmap(logits_fn, in_axes=(None, 0))(params, data.test_images)
    probs = np.asarray(jax.nn.softmax(logits))
    labels = np.asarray(data.test_labels)
    ece, bins = metrics.expected_calibration_error(probs, labels, cfg.num_bins)
    row = {"accuracy": float(np.mean(probs.argmax(1) == labels)), "ece": ece}
    energy_score = lambda x: jax.nn.logsumexp(jax.vmap(logits_fn, in_axes=(None, 0))(params, x), 1)
    max_softmax = lambda x: jnp.max(
        jax.nn.softmax(jax.vmap(logits_fn, in_axes=(None, 0))(params, x)), 1
    )
    for name, x_out in oods.items():
        row[f"auroc energy: {name}"] = float(
            metrics.auroc(energy_score(data.test_images), energy_score(x_out)))  # fmt: skip
        row[f"auroc max-softmax: {name}"] = float(
            metrics.auroc(max_softmax(data.test_images), max_softmax(x_out)))  # fmt: skip
    return row, bins


def pixel_knn_auroc(train_images, test_images, x_out, k: int = 5) -> float:
    """AUROC of a model-free reference score: minus the mean squared pixel distance to the
    k nearest training images (a k-nearest-neighbour density estimate), held-out digits
    against ``x_out``. It says how separable an OOD set is in pixel space at all."""
    train = jnp.reshape(train_images, (train_images.shape[0], -1))

    def score(x):
        x = jnp.reshape(x, (x.shape[0], -1))
        d2 = jnp.sum(x**2, 1)[:, None] + jnp.sum(train**2, 1)[None] - 2 * x @ train.T
        return -jnp.mean(-lax.top_k(-d2, k)[0], axis=1)

    return float(metrics.auroc(score(test_images), score(x_out)))


def class_samples(cfg, logits_fn, params, shape, key, num_per_class=4):
    """SGLD on E(x, y) = -f(x)[y] from uniform noise, ``sample_steps`` moves at JEM's
    step and noise, for each class."""
    energy = jem.class_energy(logits_fn)
    rows = []
    for y in range(10):
        score = partial(sj.score_from_energy(lambda p, x, y=y: energy(p, x, y)), params)
        sampler = samplers.decoupled_langevin(score, cfg.step_size, cfg.noise_scale,
                                              clip_range=(0.0, 1.0))  # fmt: skip
        x0 = jax.random.uniform(jax.random.fold_in(key, y), (num_per_class, *shape))
        rows.append(sj.run_chains(jax.random.fold_in(key, 100 + y), sampler, x0,
                                  cfg.sample_steps).state.x)  # fmt: skip
    return np.asarray(jnp.concatenate(rows))


def moons(cfg):
    """JEM and the plain classifier on labelled two moons: energies on a grid."""
    model = nets.MLP(hidden=(64, 64), out_dim=2)
    logits_fn = nets.apply_fn(model)
    x, labels = sj.data.labelled_two_moons(jax.random.key(cfg.seed + 3), 1024)
    params = model.init(jax.random.key(cfg.seed + 4), jnp.zeros(2))
    small = dataclasses.replace(cfg, num_steps=cfg.moons_steps, step_size=0.01,
                                noise_scale=0.1414, buffer_size=1000)  # fmt: skip
    grids = {}
    lim = 2.5
    xs, _, points = sj.plot.grid_2d(lim, 60)
    for generative in (False, True):
        trained, _, _ = train(small, logits_fn, params, (x + lim) / (2 * lim), labels, (2,),
                              generative)  # fmt: skip
        energy = jax.vmap(partial(jem.jem_energy(logits_fn), trained))((points + lim) / (2 * lim))
        grids["jem" if generative else "classifier"] = np.asarray(energy).reshape(xs.shape)
    return {"grids": grids, "data": np.asarray(x), "lim": lim}


def main(cfg: Config) -> dict:
    data = load_image_data(cfg.dataset, cfg.seed)
    shape = data.train_images.shape[1:]
    model = nets.DigitClassifier()
    logits_fn = nets.apply_fn(model)
    params = model.init(jax.random.key(cfg.seed), data.train_images[0])
    results = {"config": dataclasses.asdict(cfg), "models": [], "arrays": {}}
    oods = ood_sets(jax.random.key(cfg.seed + 5), data.test_images)
    for generative in (False, True):
        name = "JEM" if generative else "classifier"
        with Timer(f"{name}: train") as timer:
            trained, history, diverged = train(cfg, logits_fn, params, data.train_images,
                                               data.train_labels, shape, generative)  # fmt: skip
        row, bins = evaluate(cfg, logits_fn, trained, data, oods)
        row = {"model": name, **row, "train_s": timer.seconds, "diverged_at": diverged,
               "steps": len(history["loss"])}  # fmt: skip
        results["models"].append(row)
        results["arrays"][f"reliability_{name}"] = bins
        results["arrays"][f"samples_{name}"] = class_samples(
            cfg, logits_fn, trained, shape, jax.random.key(cfg.seed + 6))  # fmt: skip
    results["pixel_knn"] = {name: pixel_knn_auroc(data.train_images, data.test_images, x_out)
                            for name, x_out in oods.items()}  # fmt: skip
    with Timer("two moons"):
        results["arrays"]["moons"] = moons(cfg)
    return results


def report(results: dict, cfg: Config) -> None:
    out = output_dir(cfg)
    write_metrics(out, results)
    table = markdown_table(results["models"])
    knn = ", ".join(f"{name} {value:.3f}" for name, value in results["pixel_knn"].items())
    (out / "table.md").write_text(
        f"# JEM vs the plain classifier ({cfg.dataset})\n\n{table}\n\n"
        f"Reference, no model: AUROC of minus the 5-nearest-neighbour pixel distance to the "
        f"training digits: {knn}.\n"
    )
    arrays = results["arrays"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, row in zip(axes, results["models"], strict=True):
        bins = arrays[f"reliability_{row['model']}"]
        centres = (np.arange(cfg.num_bins) + 0.5) / cfg.num_bins
        ax.bar(centres, bins["accuracy"], width=1.0 / cfg.num_bins, edgecolor="k", alpha=0.7)
        ax.plot([0, 1], [0, 1], "r--")
        ax.set(title=f"{row['model']}: ECE {row['ece']:.3f}", xlabel="confidence",
               ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))  # fmt: skip
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, row in zip(axes, results["models"], strict=True):
        sj.plot.image_grid(ax, arrays[f"samples_{row['model']}"], num_columns=8,
                           value_range=(0, 1))  # fmt: skip
        ax.set_title(f"{row['model']}: SGLD on E(x, y), rows of classes")
    fig.tight_layout()
    fig.savefig(out / "class_samples.png", dpi=120)
    plt.close(fig)
    moons_data = arrays["moons"]
    lim = moons_data["lim"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, (name, grid) in zip(axes, moons_data["grids"].items(), strict=True):
        ax.imshow(np.exp(-(grid - grid.min())), origin="lower", extent=(-lim, lim, -lim, lim))
        ax.scatter(*moons_data["data"][:300].T, s=2, c="w")
        ax.set_title(f"{name}: exp(-E(x))")
    fig.tight_layout()
    fig.savefig(out / "moons_energy.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out}/metrics.json, table.md and figures")


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
