"""Inverse problems on held-out digits with the image score models of
``experiments.mnist_score``: inpainting (half image, a box, random pixels), 2x
super-resolution and denoising, by annealed Langevin (NCSN) and by the reverse SDE (VP, or
VE with ``--sde ve``).

Every task is one ``inverse.LinearMeasurement`` and one conditioning of the unchanged
samplers (``inverse.measurement_conditioned``): after each step the sample moves onto the
measurement carried to its noise level (NCSN paper, Section 5; score_sde, Appendix I.2), and
``inverse.project_exact`` makes A x = y hold at the end. Denoising starts the reverse
process at the observed noise level instead (``inverse.denoising_start``; for NCSN the
ladder's levels below the noise, from x = y).

The models come from ``experiments.mnist_score``'s checkpoints in ``models_dir`` (trained
there first when missing, with that experiment's defaults). Measured per task and sampler,
on ``num_observations`` held-out digits with ``samples_per_observation`` samples each:
the MSE on the unknown pixels against the truth (all pixels for super-resolution and
denoising), the in-project classifier's agreement with the true label, and the diversity
(the mean pairwise RMS distance between samples of one observation). The baseline row of
each task fills the unknown part with the training mean (the least-squares image with
A x = y nearest the mean, for super-resolution; the observation itself, for denoising).
Figures: observation, samples and truth per task.

    python -m experiments.mnist_score --dataset digits --out-dir results/mnist_score_digits
    python -m experiments.inpainting                       # 8x8 digits, with those models
    python -m experiments.inpainting --dataset mnist       # 28x28, after mnist_score
    python -m experiments.inpainting --models sde --sde ve --models-dir DIR   # a VE model
    python -m experiments.inpainting --smoke
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import scorejax as sj
from experiments import mnist_score
from experiments.common import (
    Timer,
    markdown_table,
    output_dir,
    parse_config,
    quality_classifier,
    write_metrics,
)
from scorejax import inverse, losses, quality


@dataclasses.dataclass(frozen=True)
class Config:
    """Inpainting, super-resolution and denoising of held-out digits with the score models."""

    dataset: str = "digits"  # as mnist_score: "digits" (8x8) or "mnist"
    models_dir: str = ""  # mnist_score's out_dir; "" takes its default for the dataset
    models_steps: int = 0  # the models' training steps (mnist_score's); 0 takes its default
    smoke_models: bool = False  # mnist_score's smoke models (trained in out_dir/models)
    models: tuple = ("ncsn", "sde")  # which of mnist_score's models solve the tasks
    sde: str = "vp"  # mnist_score's SDE model: "vp" or "ve" (as its --sde)
    tasks: tuple = ("half", "box", "random", "superres", "denoise")
    noise_std: float = 0.2  # denoising: pixel noise (pixels in [0, 1])
    random_fraction: float = 0.5  # "random": the fraction of pixels known
    num_observations: int = 32
    samples_per_observation: int = 4
    num_score_evals: int = 300
    classifier_steps: int = 2000
    classifier: str = ""  # a saved quality classifier (an earlier run's classifier.msgpack)
    seed: int = 0
    out_dir: str = "results/inpainting"


SMOKE = dict(tasks=("half", "denoise"), num_observations=2, samples_per_observation=2,
             num_score_evals=8, classifier_steps=20, smoke_models=True)  # fmt: skip
MODELS_DIRS = {"digits": "results/mnist_score_digits", "mnist": "results/mnist_score"}


def score_config(cfg) -> mnist_score.Config:
    """mnist_score's configuration of the models (its smoke settings with smoke_models)."""
    if cfg.smoke_models:
        overrides = dict(mnist_score.SMOKE, out_dir=cfg.models_dir or f"{cfg.out_dir}/models")
    else:
        overrides = dict(out_dir=cfg.models_dir or MODELS_DIRS[cfg.dataset])
    overrides.update(dataset=cfg.dataset, models=tuple(cfg.models), sde=cfg.sde, resume=True,
                     seed=cfg.seed)  # fmt: skip
    if cfg.models_steps:
        overrides.update(num_train_steps=cfg.models_steps)
    return mnist_score.Config(**overrides)


def load_models(score_cfg, data):
    """{name: (score, sde, sigmas)} for each of ``score_cfg.models`` (NCSN: sde None; the
    SDE model: sigmas None): trained by mnist_score, restored from its checkpoints (trained
    here first when they are missing)."""
    widths, num_steps = mnist_score.settings(score_cfg)
    train_images = data.train_images[..., None]
    sigma_max = losses.largest_pairwise_distance(train_images)
    dim = int(np.prod(train_images.shape[1:]))
    models = {}
    for index, name in enumerate(mnist_score.MODELS):  # the index keys each model, as there
        if name not in score_cfg.models:
            continue
        model, score_fn, loss_fn, sde, sigmas = mnist_score.make_model(
            score_cfg, name, widths, sigma_max, dim
        )
        x = mnist_score.to_model_range(sde, train_images) if sde else train_images
        key = jax.random.fold_in(jax.random.split(jax.random.key(score_cfg.seed), 3)[0], index)
        state, _, _ = mnist_score.train(score_cfg, name, model, loss_fn, x, key, num_steps,
                                        sample_grid=None)  # fmt: skip
        models[name] = (partial(score_fn, state.ema_params), sde, sigmas)
    return models


def measurement_for(task, cfg, shape, key):
    """The task's LinearMeasurement on images of ``shape`` (H, W, 1) and its known-pixel
    mask (None where every pixel is measured)."""
    height, width = shape[:2]
    mask = np.ones((height, width), bool)
    if task == "half":
        mask[height // 2 :] = False  # the bottom half is unknown
    elif task == "box":
        mask[height // 4 : height - height // 4, width // 4 : width - width // 4] = False
    elif task == "random":
        mask = np.asarray(jax.random.uniform(key, (height, width)) < cfg.random_fraction)
    elif task == "superres":
        return inverse.downsampling(shape, 2), None
    elif task == "denoise":
        return None, None
    else:
        raise ValueError(f"unknown task {task!r}")
    return inverse.inpainting(mask[..., None]), mask[..., None]


def solve(key, task, model, measurement, y_pixels, cfg, shape):
    """``samples_per_observation`` solutions for one observation, in pixels."""
    score, sde, sigmas = model
    n = cfg.samples_per_observation
    evals = cfg.num_score_evals
    a, b = mnist_score.pixel_map(sde)  # model units a * pixel + b
    if task == "denoise":
        y = mnist_score.to_model_range(sde, y_pixels)
        noise = a * cfg.noise_std  # in the model's units
        if sde is None:  # the ladder's levels below the noise, from x = y
            below = np.asarray(sigmas) <= noise
            ladder = sigmas[below] if below.any() else sigmas[-1:]
            x0 = jnp.broadcast_to(y, (n, *shape))
            x, _, _ = mnist_score.sample_ncsn(
                key, score, ladder, x0, evals * len(ladder) // len(sigmas), progress=False
            )
        else:
            t_start, x_start = inverse.denoising_start(sde, y, noise)
            x0 = jnp.broadcast_to(x_start, (n, *shape))
            x, _, _ = mnist_score.sample_sde_method(
                key,
                "em",
                sde,
                score,
                x0,
                max(1, int(evals * t_start)),
                cfg,
                progress=False,
                t_start=t_start,
            )
        return mnist_score.to_pixels(sde, x)
    # A is linear, so A (a x + b) = a A x + b A 1: the observation in the model's units
    y = a * y_pixels + b * measurement.matrix @ jnp.ones(measurement.matrix.shape[1])
    condition = partial(_conditioned, measurement, y)
    if sde is None:
        x0 = sigmas[0] * jax.random.normal(key, (n, *shape))
        x, _, _ = mnist_score.sample_ncsn(
            key, score, sigmas, x0, evals, progress=False, condition=condition
        )
    else:
        x0 = sde.prior_sample(key, (n, *shape))
        x, _, _ = mnist_score.sample_sde_method(
            key, "em", sde, score, x0, evals, cfg, progress=False, condition=condition
        )
    x = jax.vmap(lambda v: inverse.project_exact(measurement, y, v))(x)
    return mnist_score.to_pixels(sde, x)


def _conditioned(measurement, y, sampler, level):
    return inverse.measurement_conditioned(sampler, measurement, y, level)


def baseline(task, measurement, y_pixels, mean_image):
    """The training mean filled in where A x = y leaves freedom; the observation itself for
    denoising."""
    if task == "denoise":
        return jnp.clip(y_pixels, 0.0, 1.0)
    return inverse.project_exact(measurement, y_pixels.reshape(-1), mean_image)


def scores(samples, truth, label, unknown, classifier):
    """MSE on the unknown pixels (of each sample, and of the samples' mean: an estimate of
    the posterior mean, the MSE-optimal answer a single sample is not), classifier
    agreement, diversity (pairwise RMS)."""
    s = np.asarray(samples, np.float64).reshape(len(samples), -1)
    t = np.asarray(truth, np.float64).reshape(-1)
    u = np.ones_like(t, bool) if unknown is None else ~np.asarray(unknown).reshape(-1)
    mse = float(np.mean((s[:, u] - t[u]) ** 2))
    mean_mse = float(np.mean((s[:, u].mean(axis=0) - t[u]) ** 2))
    _, probs = quality.classify(classifier, np.asarray(samples)[..., 0])
    agree = float(np.mean(np.argmax(probs, axis=1) == label))
    pairs = [np.sqrt(np.mean((s[i] - s[j]) ** 2)) for i in range(len(s)) for j in range(i)]
    return mse, mean_mse, agree, float(np.mean(pairs)) if pairs else 0.0


def main(cfg: Config) -> dict:
    score_cfg = score_config(cfg)
    data, _ = mnist_score.load(score_cfg)
    shape = (*data.train_images.shape[1:], 1)
    key = jax.random.key(cfg.seed)
    with Timer() as timer:
        models = load_models(score_cfg, data)
    classifier, classifier_info = quality_classifier(
        cfg, jax.random.fold_in(key, 1), data, cfg.classifier_steps
    )
    mean_image = jnp.mean(data.train_images, axis=0)[..., None]
    truth = data.test_images[: cfg.num_observations, ..., None]
    labels = np.asarray(data.test_labels[: cfg.num_observations])
    results = {"config": dataclasses.asdict(cfg), "models_s": timer.seconds, "rows": [],
               "classifier": classifier_info, "arrays": {}}  # fmt: skip
    for task_index, task in enumerate(cfg.tasks):
        measurement, mask = measurement_for(task, cfg, shape, jax.random.fold_in(key, 7))
        observations = []
        for i, x in enumerate(truth):
            k = jax.random.fold_in(jax.random.fold_in(key, 100 + task_index), i)
            if task == "denoise":
                observations.append(x + cfg.noise_std * jax.random.normal(k, x.shape))
            else:
                observations.append(inverse.measure(k, measurement, x).reshape(-1))
        rows = {name: [] for name in ("baseline", *models)}
        seconds = dict.fromkeys(rows, 0.0)  # sampling time per method (compiles included)
        examples = {}
        for i, (x, y_pixels) in enumerate(zip(truth, observations, strict=True)):
            filled = baseline(task, measurement, y_pixels, mean_image)
            rows["baseline"].append(scores(filled[None], x, labels[i], mask, classifier))
            for name, model in models.items():
                k = jax.random.fold_in(key, 10_000 * task_index + i)
                with Timer() as timer:
                    samples = jax.block_until_ready(
                        solve(k, task, model, measurement, y_pixels, cfg, shape)
                    )
                seconds[name] += timer.seconds
                rows[name].append(scores(samples, x, labels[i], mask, classifier))
                if i < 6:
                    examples.setdefault(name, []).append(np.asarray(samples)[..., 0])
        for name, values in rows.items():
            values = np.asarray(values)
            se = values.std(axis=0, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else [0] * 4
            fallback = name + " (mean fill)" if task != "denoise" else "observation"
            methods = {"ncsn": "annealed_langevin", "sde": f"{cfg.sde}_reverse_sde"}
            results["rows"].append({
                "task": task, "method": methods.get(name, fallback),
                "mse_unknown": values[:, 0].mean(), "mse_se": se[0],
                "mse_of_mean": values[:, 1].mean(), "agreement": values[:, 2].mean(),
                "agreement_se": se[2], "diversity": values[:, 3].mean(),
                "wall_s": seconds[name],
            })  # fmt: skip
        results["arrays"][task] = {
            "truth": np.asarray(truth[:6, ..., 0]),
            "observed": np.asarray(observation_images(task, measurement, observations[:6], shape)),
            **examples,
        }
        print(f"{task}: " + ", ".join(f"{r['method']} MSE {r['mse_unknown']:.4f}"
                                      for r in results["rows"] if r["task"] == task))  # fmt: skip
    return results


def observation_images(task, measurement, observations, shape):
    """What a reader sees of each observation: the noisy image, the known pixels (unknown
    ones grey) or the low-resolution image blown up."""
    if task == "denoise":
        return [np.clip(np.asarray(y)[..., 0], 0, 1) for y in observations]
    out = []
    for y in observations:
        back = np.asarray(measurement.pinv @ y).reshape(shape)[..., 0]
        known = np.asarray(measurement.pinv @ jnp.ones_like(y)).reshape(shape)[..., 0]
        if task == "superres":
            out.append(back * 4.0)  # A^+ of a block mean spreads it over 4 pixels / 4
        else:
            out.append(np.where(known > 0, back, 0.5))
    return out


def report(results: dict, cfg: Config) -> None:
    out = output_dir(cfg)
    write_metrics(out, results)
    columns = ["task", "method", "mse_unknown", "mse_se", "mse_of_mean", "agreement",
               "agreement_se", "diversity", "wall_s"]  # fmt: skip
    lines = [
        f"# Inverse problems on held-out digits ({cfg.dataset})",
        "",
        f"{cfg.num_observations} observations, {cfg.samples_per_observation} samples each, "
        f"{cfg.num_score_evals} score evaluations; MSE on the unknown pixels (all pixels for "
        f"superres and denoise, noise std {cfg.noise_std}), pixels in [0, 1], of each sample "
        "and of the mean of an observation's samples; agreement: the in-project classifier "
        "predicts the true label; diversity: pairwise RMS distance between samples.",
        "",
        f"classifier held-out accuracy {results['classifier']['held_out_accuracy']:.4f}",
        "",
        markdown_table(results["rows"], columns),
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    for task, arrays in results["arrays"].items():
        names = [k for k in ("observed", "ncsn", "sde", "truth") if k in arrays]
        fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            images = np.asarray(arrays[name])
            if images.ndim == 4:  # (observations, samples, H, W): one row per observation
                columns_ = images.shape[1]
                images = images.reshape(-1, *images.shape[2:])
            else:
                columns_ = 1
            sj.plot.image_grid(ax, images, num_columns=columns_, value_range=(0, 1))
            ax.set_title({"ncsn": "annealed Langevin", "sde": "reverse SDE"}.get(name, name))
        fig.suptitle(task)
        fig.tight_layout()
        fig.savefig(out / f"{task}.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
