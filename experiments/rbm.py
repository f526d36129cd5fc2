"""RBMs on binarised digits: CD-1 against CD-k against PCD, scored by exact and AIS log Z.

Three Bernoulli–Bernoulli RBMs with the same budget are trained on scikit-learn's 8x8
digits thresholded at 0.5 (or the bundled MNIST 5k subset with ``--dataset mnist``). With
20 hidden units log Z is exact (2^20 hidden states, visibles summed out), so every AIS
estimate (Salakhutdinov & Murray 2008 schedule, base-rate model from the training
marginals) is checked against the truth, and test log-likelihoods are reported both ways.
A deep belief net is trained greedily and sampled through the stack.

``main`` returns the two tables; ``report`` writes results.md, metrics.json and the figures
into results/rbm/ (results/smoke/rbm/ with --smoke).

    python -m experiments.rbm [--smoke] [--dataset mnist] [--num-steps 20000]
"""

import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments.common import Timer, markdown_table, output_dir, parse_config, write_metrics
from scorejax import data, plot
from scorejax.rbm import (
    RBM,
    RBMTrainConfig,
    ais_betas,
    base_rate_visible_bias,
    block_gibbs,
    rbm_ais,
    rbm_log_likelihood,
    rbm_log_partition_exact,
    sample_dbn,
    train_dbn,
    train_rbm,
)
from scorejax.samplers import run_chains


@dataclasses.dataclass(frozen=True)
class Config:
    """CD-1 vs CD-k vs PCD RBMs with exact and AIS log-likelihoods."""

    dataset: str = "digits"  # or "mnist" (the 5,000-image subset)
    num_hidden: int = 20
    num_steps: int = 6000
    batch_size: int = 100
    learning_rate: float = 0.02
    cd_k: int = 10
    num_pcd_chains: int = 100
    num_ais_runs: int = 100
    ais_schedule: tuple = (500, 4000, 10000)  # S&M 2008: 14,500 intermediate distributions
    short_ais_schedule: tuple = (50, 400, 1000)
    num_sample_steps: int = 1000
    dbn_layers: tuple = (100, 50)
    dbn_steps: int = 3000
    seed: int = 0
    out_dir: str = "results/rbm"


SMOKE = dict(
    num_hidden=8,
    num_steps=20,
    cd_k=2,
    num_ais_runs=8,
    ais_schedule=(10, 20, 20),
    short_ais_schedule=(10, 20, 20),  # same shape as the long one: one compile
    num_sample_steps=10,
    dbn_layers=(8,),  # the DBN's one RBM is CD-1's: its training reuses CD-1's program
    dbn_steps=20,
)


def load_binary(cfg):
    images = data.load_mnist_5k() if cfg.dataset == "mnist" else data.load_digits()
    shape = images.train_images.shape[1:]
    binarise = lambda x: (x.reshape(len(x), -1) > 0.5).astype(jnp.float32)
    return binarise(images.train_images), binarise(images.test_images), shape


def main(cfg: Config) -> dict:
    """Train the three RBMs and a DBN; exact and AIS log Z; samples.

    Returns ``log_likelihood`` (one row per model, the base-rate model first),
    ``ais_vs_exact`` (one row per model and AIS schedule), ``dbn_seconds``, ``config``, and
    under ``arrays`` the test images, samples, filters, reconstruction errors and DBN
    samples the figures show.
    """
    if cfg.dataset not in ("digits", "mnist"):
        raise ValueError(f"dataset must be 'digits' or 'mnist', got {cfg.dataset!r}")
    train, test, shape = load_binary(cfg)
    base_bias = base_rate_visible_bias(train)
    key = jax.random.key(cfg.seed)
    base = RBMTrainConfig(
        num_hidden=cfg.num_hidden,
        num_steps=cfg.num_steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        num_chains=cfg.num_pcd_chains,
    )
    methods = {
        "CD-1": base,
        f"CD-{cfg.cd_k}": base._replace(num_gibbs_steps=cfg.cd_k),
        "PCD-1": base._replace(persistent=True),
    }
    betas = ais_betas(*cfg.ais_schedule)
    short_betas = ais_betas(*cfg.short_ais_schedule)
    models, histories, rows, ais_rows = {}, {}, [], []

    # the base-rate model: W = 0, the training marginals (a floor every RBM should beat)
    base_rate = RBM(
        jnp.zeros((train.shape[1], cfg.num_hidden)), base_bias, jnp.zeros(cfg.num_hidden)
    )
    log_z = rbm_log_partition_exact(base_rate)
    rows.append(
        {
            "model": "base rate (W = 0)",
            "train_ll_exact": float(rbm_log_likelihood(base_rate, train, log_z)),
            "test_ll_exact": float(rbm_log_likelihood(base_rate, test, log_z)),
            "test_ll_ais": float(rbm_log_likelihood(base_rate, test, log_z)),
            "log_z_exact": float(log_z),
            "log_z_ais": float(log_z),
            "ais_se": 0.0,
            "train_seconds": 0.0,
        }
    )
    for name, config in methods.items():
        key, key_train, key_ais, key_short = jax.random.split(key, 4)
        with Timer(f"train {name}") as timer:
            params, history = train_rbm(key_train, train, config)
            jax.block_until_ready(params)
        models[name], histories[name] = params, history
        with Timer() as exact_timer:
            log_z = float(rbm_log_partition_exact(params))
        with Timer() as ais_timer:
            ais = rbm_ais(
                key_ais, params, num_runs=cfg.num_ais_runs, betas=betas, base_visible_bias=base_bias
            )
            jax.block_until_ready(ais)
        short = rbm_ais(
            key_short, params, num_runs=cfg.num_ais_runs, betas=short_betas,
            base_visible_bias=base_bias,
        )  # fmt: skip
        rows.append(
            {
                "model": name,
                "train_ll_exact": float(rbm_log_likelihood(params, train, log_z)),
                "test_ll_exact": float(rbm_log_likelihood(params, test, log_z)),
                "test_ll_ais": float(rbm_log_likelihood(params, test, ais.log_partition)),
                "log_z_exact": log_z,
                "log_z_ais": float(ais.log_partition),
                "ais_se": float(ais.standard_error),
                "train_seconds": timer.seconds,
            }
        )
        for label, result, num in (
            (
                f"{len(betas) - 1} betas" + (" (S&M 2008)" if len(betas) == 14501 else ""),
                ais,
                len(betas) - 1,
            ),
            (f"{len(short_betas) - 1} betas", short, len(short_betas) - 1),
        ):
            error = float(result.log_partition) - log_z
            ais_rows.append(
                {
                    "model": name,
                    "schedule": label,
                    "num_betas": num,
                    "log_z_exact": log_z,
                    "log_z_ais": float(result.log_partition),
                    "ais_se": float(result.standard_error),
                    "error": error,
                    "error_in_se": error / max(float(result.standard_error), 1e-12),
                }
            )
        ais_rows[-2]["ais_seconds"] = ais_timer.seconds
        ais_rows[-2]["exact_seconds"] = exact_timer.seconds

    # samples: 1,000 Gibbs steps from uniform noise, kept as p(v | h) of the last step
    key, key_samples, key_start, key_dbn, key_dbn_sample = jax.random.split(key, 5)
    start = jax.random.bernoulli(key_start, 0.5, (100, train.shape[1])).astype(jnp.float32)
    samples = {}
    with Timer("samples"):
        for name, params in models.items():
            v = run_chains(key_samples, block_gibbs(params), start, cfg.num_sample_steps).state.x
            samples[name] = np.asarray(params.visible_probs(params.hidden_probs(v)))

    # a deep belief net, trained greedily, sampled through the stack
    with Timer("deep belief net") as dbn_timer:
        rbms = train_dbn(key_dbn, train, cfg.dbn_layers, base._replace(num_steps=cfg.dbn_steps))
        dbn_samples = sample_dbn(key_dbn_sample, rbms, 100, cfg.num_sample_steps)

    return {
        "config": dataclasses.asdict(cfg),
        "log_likelihood": rows,
        "ais_vs_exact": ais_rows,
        "dbn_seconds": dbn_timer.seconds,
        "arrays": {
            "image_shape": tuple(shape),
            "num_visible": train.shape[1],
            "test": np.asarray(test[:100]),
            "samples": samples,
            "filters": {name: np.asarray(params.W.T) for name, params in models.items()},
            "reconstruction_error": {
                name: np.asarray(history["reconstruction_error"])
                for name, history in histories.items()
            },
            "dbn_samples": np.asarray(dbn_samples),
        },
    }


def report(results: dict, cfg: Config) -> None:
    """Write samples.png, filters.png, training.png, dbn_samples.png, metrics.json and
    results.md; print the tables."""
    out = output_dir(cfg)
    arrays = results["arrays"]
    shape = arrays["image_shape"]
    names = list(arrays["samples"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 4.4))
    plot.image_grid(axes[0], arrays["test"].reshape(-1, *shape))
    axes[0].set_title("test data (binarised)")
    for ax, name in zip(axes[1:], names, strict=True):
        plot.image_grid(ax, arrays["samples"][name].reshape(-1, *shape))
        ax.set_title(f"{name} samples")
    plot.save(fig, out / "samples.png")

    # filters: each hidden unit's weights as an image, scaled to its own range
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 2.6))
    for ax, name in zip(axes, names, strict=True):
        w = arrays["filters"][name]
        w = (w - w.min(axis=1, keepdims=True)) / (np.ptp(w, axis=1, keepdims=True) + 1e-8)
        plot.image_grid(ax, w.reshape(-1, *shape), num_columns=10)
        ax.set_title(f"{name} filters")
    plot.save(fig, out / "filters.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, error in arrays["reconstruction_error"].items():
        ax.plot(np.convolve(error, np.ones(50) / 50, "valid"), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("reconstruction error (running mean)")
    ax.legend()
    plot.save(fig, out / "training.png")

    fig, ax = plt.subplots(figsize=(4, 4.4))
    plot.image_grid(ax, arrays["dbn_samples"].reshape(-1, *shape))
    layers = "-".join(str(n) for n in (arrays["num_visible"], *cfg.dbn_layers))
    ax.set_title(f"DBN {layers} samples")
    plot.save(fig, out / "dbn_samples.png")

    write_metrics(out, results)
    text = (
        f"## Log-likelihood (nats per image) on binarised {cfg.dataset}, "
        f"{arrays['num_visible']} visible x {cfg.num_hidden} hidden, {cfg.num_steps} steps\n\n"
        + markdown_table(results["log_likelihood"])
        + f"\n## AIS against exact log Z ({cfg.num_ais_runs} runs)\n\n"
        + markdown_table(results["ais_vs_exact"])
    )
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
