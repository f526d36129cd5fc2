"""Products (AND) against mixtures (OR) of experts in 2-D, analytic and learned.

Two experts, a horizontal and a vertical Gaussian bar. Their product (energies summed)
keeps only where both agree, a blob at the crossing; their mixture (log-sum-exp of
negative energies) keeps either, a cross. The same compositions are built from two
learned energies (MLPEnergy trained by denoising score matching on samples of each bar)
through the same ``product_of_experts`` / ``mixture_of_experts`` seam. Samples are drawn
with ULA; log Z by quadrature; sample quality by MMD against exact samples of the
analytic composition (the product of Gaussians is a Gaussian; the mixture is a
GaussianMixture). ``main`` returns the table; ``report`` writes results.md, metrics.json and
and_or.png into results/product_of_experts/ (results/smoke/product_of_experts/ with --smoke).

    python -m experiments.product_of_experts [--smoke]
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments.common import (
    Timer,
    draw_density,
    jit_mmd,
    markdown_table,
    on_grid,
    output_dir,
    parse_config,
    write_metrics,
)
from scorejax import plot
from scorejax.energies import Gaussian, GaussianMixture, mixture_of_experts, product_of_experts
from scorejax.losses import dsm_loss
from scorejax.nets import MLPEnergy, apply_fn
from scorejax.partition import log_partition_quadrature
from scorejax.samplers import run_chains, ula
from scorejax.scores import score_from_energy
from scorejax.training import fit, init_train_state, make_train_step

LIM = 4.0


@dataclasses.dataclass(frozen=True)
class Config:
    """AND vs OR composition of two 2-D experts."""

    long_variance: float = 2.0
    short_variance: float = 0.1
    num_chains: int = 2000
    num_ula_steps: int = 1000
    step_size: float = 0.005
    train_steps: int = 3000
    batch_size: int = 256
    sigma: float = 0.05
    learning_rate: float = 1e-3
    num_grid_points: int = 301
    seed: int = 0
    out_dir: str = "results/product_of_experts"


SMOKE = dict(num_chains=100, num_ula_steps=20, train_steps=20, num_grid_points=61)


def experts(cfg):
    horizontal = Gaussian(
        jnp.zeros(2), jnp.diag(jnp.array([cfg.long_variance, cfg.short_variance]))
    )
    vertical = Gaussian(jnp.zeros(2), jnp.diag(jnp.array([cfg.short_variance, cfg.long_variance])))
    return horizontal, vertical


def exact_compositions(cfg):
    """The closed forms: product = N(0, (P_1 + P_2)^-1), mixture = 1/2 N_1 + 1/2 N_2."""
    horizontal, vertical = experts(cfg)
    cov = jnp.linalg.inv(jnp.linalg.inv(horizontal.cov) + jnp.linalg.inv(vertical.cov))
    product = Gaussian(jnp.zeros(2), cov)
    scales = jnp.sqrt(jnp.stack([jnp.diag(horizontal.cov), jnp.diag(vertical.cov)]))
    mixture = GaussianMixture(jnp.zeros((2, 2)), scales, jnp.array([0.5, 0.5]))
    return product, mixture


def train_experts(key, cfg, targets, net):
    """One MLPEnergy per target, fitted to its samples by DSM; returns a tuple of params.

    The experts train side by side as one pytree with the sum of their (independent) DSM
    losses, so the gradients and Adam's per-parameter updates stay separate while ``fit``
    compiles a single step.
    """
    keys = jax.random.split(key, len(targets) + 1)
    params = tuple(net.init(k, jnp.zeros(2)) for k in keys[1:])
    optimizer = optax.adam(cfg.learning_rate)
    expert_loss = partial(dsm_loss, score_fn=score_from_energy(apply_fn(net)), sigma=cfg.sigma)

    def loss(params, key, batch):
        loss_keys = jax.random.split(key, len(params))
        return sum(expert_loss(p, k, b) for p, k, b in zip(params, loss_keys, batch, strict=True))

    def batch_fn(key):
        batch_keys = jax.random.split(key, len(targets))
        return tuple(t.sample(k, cfg.batch_size) for t, k in zip(targets, batch_keys, strict=True))

    state, _ = fit(
        make_train_step(loss, optimizer), init_train_state(params, optimizer), keys[0],
        batch_fn, num_steps=cfg.train_steps, steps_per_call=500, description="experts (DSM)",
    )  # fmt: skip
    return state.params


def sample(key, cfg, energy_fn, params):
    """ULA chains from N(0, I) targeting exp(-E)."""
    score = partial(score_from_energy(energy_fn), params)
    key_start, key_run = jax.random.split(key)
    x0 = jax.random.normal(key_start, (cfg.num_chains, 2))
    return run_chains(key_run, ula(score, cfg.step_size), x0, cfg.num_ula_steps).state.x


def main(cfg: Config) -> dict:
    """Compose analytic and learned experts; log Z by quadrature; samples by ULA.

    Returns ``compositions`` (one row per (experts, composition): log Z by quadrature and
    exact, MMD to exact samples and its noise floor, moments), ``learned_expert_log_z``,
    ``train_seconds``, ``config``, and under ``arrays`` the energies of every expert and
    composition on the figure's grid and the first 300 samples of each composition.
    """
    keys = iter(jax.random.split(jax.random.key(cfg.seed), 16))
    horizontal, vertical = experts(cfg)
    product, mixture = exact_compositions(cfg)
    quadrature = lambda e: float(
        log_partition_quadrature(e, [-3 * LIM, -3 * LIM], [3 * LIM, 3 * LIM], cfg.num_grid_points)
    )

    # analytic experts as energy_fn(params, x), normalised (E_k = -log p_k) so that log Z of
    # the product is log int p_1 p_2 = log N(0; 0, S_1 + S_2) and the mixture is normalised
    neg_log_prob = lambda g, x: -g.log_prob(x)
    and_analytic = product_of_experts([neg_log_prob, neg_log_prob])
    or_analytic = mixture_of_experts([neg_log_prob, neg_log_prob])
    analytic_params = (horizontal, vertical)

    # learned experts: an MLPEnergy per bar (DSM fixes E only up to a constant), each
    # normalised by quadrature, so log Z of the learned AND is comparable with the exact one
    net = MLPEnergy(hidden=(64, 64))
    learned = apply_fn(net)
    with Timer("train the experts") as train_timer:
        learned_params = train_experts(next(keys), cfg, (horizontal, vertical), net)
    log_z_learned = [quadrature(partial(learned, p)) for p in learned_params]
    normalised = [
        lambda p, x, c=c: learned(p, x) + c for c in log_z_learned
    ]  # E_k + log Z_k = -log p_k
    and_learned = product_of_experts(normalised)
    or_learned = mixture_of_experts(normalised)

    compositions = {
        ("analytic", "AND"): (and_analytic, analytic_params, product),
        ("analytic", "OR"): (or_analytic, analytic_params, mixture),
        ("learned", "AND"): (and_learned, learned_params, product),
        ("learned", "OR"): (or_learned, learned_params, mixture),
    }
    exact_log_z = {
        "AND": float(Gaussian(jnp.zeros(2), horizontal.cov + vertical.cov).log_prob(jnp.zeros(2))),
        "OR": 0.0,
    }
    reference = {name: target.sample(next(keys), cfg.num_chains) for name, target in
                 (("AND", product), ("OR", mixture))}  # fmt: skip
    floor = {
        name: float(jit_mmd(reference[name], target.sample(next(keys), cfg.num_chains)))
        for name, target in (("AND", product), ("OR", mixture))
    }
    rows, samples, energies = [], {}, {}
    for (kind, name), (energy_fn, params, _) in compositions.items():
        with Timer(f"{kind} {name}"):
            x = sample(next(keys), cfg, energy_fn, params)
            row = {
                "experts": kind,
                "composition": name,
                "log_z_quadrature": quadrature(partial(energy_fn, params)),
                "log_z_exact_analytic": exact_log_z[name],
                "mmd_to_exact": float(jit_mmd(x, reference[name])),
                "mmd_noise_floor": floor[name],
                "mean_x": float(jnp.mean(x[:, 0])),
                "var_x": float(jnp.var(x[:, 0])),
                "var_x_exact": float(jnp.var(reference[name][:, 0])),
            }
        rows.append(row)
        samples[f"{kind} {name}"] = np.asarray(x[:300])
        energies[f"{kind} {name}"] = on_grid(partial(energy_fn, params), LIM, 150)
    for kind, params, single in (
        ("analytic", analytic_params, Gaussian.energy),
        ("learned", learned_params, learned),
    ):
        for index in (0, 1):
            energies[f"{kind} expert {index + 1}"] = on_grid(
                partial(single, params[index]), LIM, 150
            )

    return {
        "config": dataclasses.asdict(cfg),
        "compositions": rows,
        "learned_expert_log_z": log_z_learned,
        "train_seconds": train_timer.seconds,
        "arrays": {"energies": energies, "samples": samples},
    }


def report(results: dict, cfg: Config) -> None:
    """Write and_or.png, metrics.json and results.md; print the table."""
    out = output_dir(cfg)
    energies, samples = results["arrays"]["energies"], results["arrays"]["samples"]
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.6))
    for row_axes, kind in zip(axes, ("analytic", "learned"), strict=True):
        for ax, index in zip(row_axes[:2], (1, 2), strict=True):
            draw_density(ax, energies[f"{kind} expert {index}"], LIM)
            ax.set_title(f"{kind} expert {index}")
        for ax, name in zip(row_axes[2:], ("AND", "OR"), strict=True):
            draw_density(ax, energies[f"{kind} {name}"], LIM)
            x = samples[f"{kind} {name}"]
            ax.scatter(x[:, 0], x[:, 1], s=1, c="tab:red", alpha=0.5)
            ax.set_xlim(-LIM, LIM)
            ax.set_ylim(-LIM, LIM)
            label = "product (sum of energies)" if name == "AND" else "mixture (log-sum-exp)"
            ax.set_title(f"{kind} {name}: {label}", fontsize=9)
    plot.save(fig, out / "and_or.png")
    write_metrics(out, results)
    text = "## AND (product) vs OR (mixture) of two Gaussian bars\n\n"
    text += markdown_table(results["compositions"])
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
