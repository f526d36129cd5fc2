"""Class-conditional digits by guidance: classifier guidance (Song et al. 2021, Section 5
and Appendix I; the scale w of Dhariwal & Nichol 2021) against classifier-free guidance
(Ho & Salimans 2021), swept over w on one trained model.

One class-conditional U-Net (VP SDE, noise prediction, ``nets.UNet(num_classes=10)``) is
trained with its labels dropped to the null class at rate ``drop_rate``
(``guidance.conditional_sde_dsm_loss``), so it gives both s(x, t, y) and the unconditional
s(x, t) = s(x, t, null). A time-conditional classifier (``nets.TimeConditionalClassifier``)
is trained on noised digits (``guidance.noisy_classifier_loss``). Per w:

- classifier guidance: s(x, t, null) + w grad_x log p_t(y | x);
- classifier-free: (1 + w) s(x, t, y) - w s(x, t, null) (w = 0: the conditional model).

Each draws ``samples_per_class`` digits of every class by Euler-Maruyama with
``num_score_evals`` steps and Tweedie's final step. Measured on the in-project clean
classifier (``scorejax.quality``): the agreement of its prediction with the requested
class (fidelity), and the classifier FD, KID and the rest against held-out digits
(quality and diversity). Writes the trade-off plot (agreement and FD against w), sample
grids per w, ``metrics.json`` and ``table.md``.

    python -m experiments.guidance                  # 8x8 digits, minutes on 2 CPU cores
    python -m experiments.guidance --dataset mnist  # 28x28 (hours on 2 cores)
    python -m experiments.guidance --smoke
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
    load_image_data,
    markdown_table,
    output_dir,
    parse_config,
    quality_classifier,
    write_metrics,
)
from scorejax import guidance, nets, quality, training
from scorejax import sde as sdes


@dataclasses.dataclass(frozen=True)
class Config:
    """Classifier guidance vs classifier-free guidance on digits, swept over the scale w."""

    dataset: str = "digits"  # "digits" (8x8) or "mnist" (28x28)
    widths: tuple = ()  # U-Net widths; () takes DIGITS_WIDTHS or CPU_WIDTHS
    num_train_steps: int = 3000
    classifier_train_steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 5e-4
    warmup_steps: int = 300
    drop_rate: float = 0.1  # classifier-free training: the label dropped to null
    scales: tuple = (0.0, 0.5, 1.0, 2.0, 4.0)
    samples_per_class: int = 30
    num_score_evals: int = 200
    eval_classifier_steps: int = 2000
    classifier: str = ""  # a saved quality classifier (an earlier run's classifier.msgpack)
    steps_per_call: int = 10
    seed: int = 0
    out_dir: str = "results/guidance"


SMOKE = dict(widths=(8, 8), num_train_steps=20, classifier_train_steps=20, batch_size=16,
             warmup_steps=2, scales=(0.0, 1.0), samples_per_class=2, num_score_evals=4,
             eval_classifier_steps=20, steps_per_call=5)  # fmt: skip

NUM_CLASSES = 10


def fit(cfg, loss_fn, params, data, key, num_steps, description):
    """Adam with warm-up and clipping, the EMA kept; returns the EMA parameters."""
    optimizer = training.adam_with_warmup(cfg.learning_rate, warmup_steps=cfg.warmup_steps)
    state = training.init_train_state(params, optimizer)
    step = training.make_train_step(loss_fn, optimizer)
    state, history = training.fit(
        step, state, key, training.minibatches(data, cfg.batch_size), num_steps=num_steps,
        steps_per_call=cfg.steps_per_call, description=description,
    )  # fmt: skip
    return state.ema_params, history


def noisy_accuracy(key, sde, logits_fn, images, labels, times=(0.1, 0.5, 0.9)):
    """The time-conditional classifier's held-out accuracy on digits noised to each t."""
    out = {}
    for i, t in enumerate(times):
        mean, std = sde.kernel(jnp.asarray(t))
        z = jax.random.normal(jax.random.fold_in(key, i), images.shape)
        logits = logits_fn(mean * images + std * z, jnp.full(len(images), t))
        out[f"t={t}"] = float(jnp.mean(jnp.argmax(logits, axis=1) == labels))
    return out


def sample_class(key, score, sde, shape, n, num_steps):
    """Euler-Maruyama from the prior with ``score(x, t)`` and Tweedie's step at eps, in
    pixels (``mnist_score``'s sampler)."""
    x0 = sde.prior_sample(key, (n, *shape))
    x, _, _ = mnist_score.sample_sde_method(key, "em", sde, score, x0, num_steps, cfg=None,
                                            progress=False)  # fmt: skip
    return mnist_score.to_pixels(sde, x)


def null_label_score(score_fn, params, x, t):
    """The unconditional score s(x, t) = s(x, t, null) of the classifier-free network."""
    return score_fn(params, x, t, jnp.int32(NUM_CLASSES))


def log_softmax(logits_fn, params, x, t):
    return jax.nn.log_softmax(logits_fn(params, x, t))


def main(cfg: Config) -> dict:
    data = load_image_data(cfg.dataset, cfg.seed)
    shape = data.train_images.shape[1:]
    widths = tuple(cfg.widths) or (
        nets.DIGITS_WIDTHS if cfg.dataset == "digits" else nets.CPU_WIDTHS
    )
    sde = sdes.VPSDE()
    x_train = mnist_score.to_model_range(sde, data.train_images)  # VP: [-1, 1]
    labels = jnp.asarray(data.train_labels, jnp.int32)
    key = jax.random.key(cfg.seed)
    keys = jax.random.split(key, 6)
    results = {"config": dataclasses.asdict(cfg), "widths": widths, "rows": [], "arrays": {}}

    clean, results["eval_classifier"] = quality_classifier(
        cfg, keys[0], data, cfg.eval_classifier_steps
    )

    unet = nets.UNet(widths=widths, sde=sde, parametrisation=nets.epsilon_output,
                     num_classes=NUM_CLASSES)  # fmt: skip
    score_fn = nets.apply_fn(unet)
    params = unet.init(keys[1], x_train[0], jnp.ones(()), jnp.zeros((), jnp.int32))
    loss = partial(guidance.conditional_sde_dsm_loss, score_fn=score_fn, sde=sde,
                   drop_rate=cfg.drop_rate, null_label=NUM_CLASSES)  # fmt: skip
    with Timer() as timer:
        unet_params, history = fit(
            cfg, loss, params, (x_train, labels), keys[2], cfg.num_train_steps, "score model"
        )
    results["score_model"] = {
        "parameters": nets.parameter_count(unet_params),
        "train_s": timer.seconds,
        "final_loss": float(np.mean(history["loss"][-100:])),
    }

    classifier = nets.TimeConditionalClassifier()
    logits_fn = nets.apply_fn(classifier)
    params = classifier.init(keys[3], x_train[0], jnp.ones(()))
    loss = partial(guidance.noisy_classifier_loss, logits_fn=logits_fn, sde=sde)
    with Timer() as timer:
        cls_params, _ = fit(
            cfg, loss, params, (x_train, labels), keys[4], cfg.classifier_train_steps,
            "noisy classifier",
        )  # fmt: skip
    held_out = mnist_score.to_model_range(sde, data.test_images)
    results["noisy_classifier"] = {
        "train_s": timer.seconds,
        **noisy_accuracy(
            keys[5], sde, partial(logits_fn, cls_params), held_out, jnp.asarray(data.test_labels)
        ),
    }
    print(f"noisy classifier: {results['noisy_classifier']}")

    unconditional = partial(null_label_score, score_fn, unet_params)
    log_probs = partial(log_softmax, logits_fn, cls_params)
    conditional = partial(score_fn, unet_params)
    methods = {
        "classifier": lambda y, w: guidance.classifier_guided_score(
            unconditional, log_probs, y, scale=w, num_classes=NUM_CLASSES
        ),
        "classifier_free": lambda y, w: guidance.classifier_free_score(
            conditional, y, scale=w, num_classes=NUM_CLASSES
        ),
    }
    n = cfg.samples_per_class
    requested = np.repeat(np.arange(NUM_CLASSES), n)
    floor = data.train_images[: n * NUM_CLASSES]  # real digits, as many as each row
    results["floor"] = quality.quality_report(clean, floor, data.test_images, key=keys[5])
    for method, guided in methods.items():
        for w in cfg.scales:
            with Timer() as timer:
                x = jnp.concatenate([
                    sample_class(jax.random.fold_in(key, 1000 + y), guided(y, w), sde, shape, n,
                                 cfg.num_score_evals)
                    for y in range(NUM_CLASSES)
                ])  # fmt: skip
                x = jax.block_until_ready(x)
            _, probs = quality.classify(clean, x)
            row = {"guidance": method, "w": w, "wall_s": timer.seconds,
                   "agreement": float(np.mean(np.argmax(probs, axis=1) == requested))}  # fmt: skip
            # the samples come sorted by class: KID's blocks need them shuffled (its key)
            row.update(quality.quality_report(clean, x, data.test_images, key=keys[5]))
            results["rows"].append(row)
            results["arrays"][f"{method}_{w}"] = np.asarray(x)
            print(f"{method} w={w}: agreement {row['agreement']:.3f}, FD {row['fd']:.1f}")
    return results


def report(results: dict, cfg: Config) -> None:
    out = output_dir(cfg)
    write_metrics(out, results)
    columns = ["guidance", "w", "agreement", "fd", "kid", "kid_se", "precision", "recall",
               "confident_fraction", "class_entropy", "wall_s"]  # fmt: skip
    lines = [
        f"# Guidance on {cfg.dataset} (widths {results['widths']})",
        "",
        f"evaluation classifier held-out accuracy "
        f"{results['eval_classifier']['held_out_accuracy']:.4f}; time-conditional classifier "
        "held-out accuracy on noised digits: "
        + ", ".join(f"{k} {v:.3f}" for k, v in results["noisy_classifier"].items() if "=" in k),
        "",
        markdown_table(results["rows"], columns),
        "",
        "Floor (real training digits, as many as each row, against the same held-out set):",
        "",
        markdown_table([results["floor"]]),
        "",
        "## Score model",
        "",
        markdown_table([results["score_model"]]),
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    np.savez_compressed(out / "samples.npz", **results["arrays"])
    make_figures(out, results, cfg)


def make_figures(out, results, cfg):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method, marker in (("classifier", "o"), ("classifier_free", "s")):
        rows = [r for r in results["rows"] if r["guidance"] == method]
        w = [r["w"] for r in rows]
        axes[0].plot(w, [r["agreement"] for r in rows], marker=marker, label=method)
        axes[1].plot(w, [r["fd"] for r in rows], marker=marker, label=method)
    axes[1].axhline(results["floor"]["fd"], color="0.5", ls=":", label="real digits")
    axes[0].set(xlabel="guidance scale w", ylabel="agreement with the requested class")
    axes[1].set(xlabel="guidance scale w", ylabel="classifier FD (lower is better)")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)

    n = cfg.samples_per_class
    shown = min(n, 8)
    for method in ("classifier", "classifier_free"):
        fig, axes = plt.subplots(1, len(cfg.scales), figsize=(2.6 * len(cfg.scales), 3.2),
                                 squeeze=False)  # fmt: skip
        for ax, w in zip(axes[0], cfg.scales, strict=True):
            x = results["arrays"][f"{method}_{w}"].reshape(NUM_CLASSES, n, *results["arrays"][
                f"{method}_{w}"].shape[1:])[:, :shown]  # fmt: skip
            sj.plot.image_grid(ax, x.reshape(-1, *x.shape[2:]), num_columns=shown,
                               value_range=(0, 1))  # fmt: skip
            ax.set_title(f"w = {w}")
        axes[0][0].set_ylabel("class 0 (top) to 9")
        fig.suptitle(method.replace("_", "-") + " guidance")
        fig.tight_layout()
        fig.savefig(out / f"samples_{method}.png", dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
