"""2-D energy-based models by contrastive divergence, scored by their exact test NLL.

CD-1, CD-10 (chains started at the data, Hinton 2002), PCD (persistent chains in a replay
buffer, Tieleman 2008; Du & Mordatch 2019) and a DSM-trained energy net (Vincent 2011,
through its score -grad E) on two Gaussians, rings and 8 Gaussians. Each learned energy is
normalised by quadrature over the box [-lim, lim]^2 (``log_partition_quadrature``), so the
test NLL -log p(x) = E(x) + log Z is exact up to the quadrature error (the density is that
of the model restricted to the box). The true NLL of the data law is the floor.

    python -m experiments.ebm_cd            # ~3-5 min on 2 CPU cores
    python -m experiments.ebm_cd --smoke
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.scipy.special import i0e, logsumexp

import scorejax as sj
from experiments.common import Timer, markdown_table, output_dir, parse_config, write_json


@dataclasses.dataclass(frozen=True)
class Config:
    """2-D EBMs trained by CD-1, CD-10, PCD and DSM; exact test NLL by quadrature."""

    datasets: tuple = ("two_gaussians", "rings", "eight_gaussians")
    methods: tuple = ("cd1", "cd10", "pcd", "dsm")
    num_steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    hidden: tuple = (128, 128)
    step_size: float = 0.01  # ULA h in x + h s + sqrt(2h) z (temperature 1: true model samples)
    pcd_steps: int = 10
    buffer_size: int = 4096
    reinit_fraction: float = 0.05
    alpha: float = 1e-3  # L2 energy penalty
    grad_clip: float = 10.0
    dsm_sigma: float = 0.1
    lim: float = 5.0
    quadrature_points: int = 300
    num_test: int = 5000
    num_sample_chains: int = 500
    num_sample_steps: int = 500
    seed: int = 0
    out_dir: str = "results/ebm_cd"


SMOKE = dict(
    datasets=("two_gaussians",),
    methods=("cd10", "pcd"),
    num_steps=20,
    batch_size=64,
    hidden=(16,),
    buffer_size=128,
    quadrature_points=41,
    num_test=200,
    num_sample_chains=32,
    num_sample_steps=10,
)

SAMPLERS = {
    "two_gaussians": sj.data.sample_two_gaussians,
    "rings": sj.data.sample_rings,
    "eight_gaussians": sj.data.sample_eight_gaussians,
}


def rings_log_prob(x, radii=(1.0, 2.0, 3.0), noise=0.08):
    """Exact log density of ``sample_rings``: a ring of radius R blurred by N(0, s^2 I).

    p(x) = 1/3 sum_R exp(-(|x|^2 + R^2) / 2 s^2) I0(R |x| / s^2) / (2 pi s^2), the angular
    integral of the isotropic Gaussian being the Bessel function I0 (used scaled: i0e).
    """
    r = jnp.linalg.norm(x)
    radii = jnp.asarray(radii)
    z = radii * r / noise**2
    terms = -((r - radii) ** 2) / (2 * noise**2) + jnp.log(i0e(z))
    return logsumexp(terms) - jnp.log(3.0) - jnp.log(2 * jnp.pi * noise**2)


def true_log_prob(name):
    if name == "rings":
        return rings_log_prob
    target = {"two_gaussians": sj.data.two_gaussians, "eight_gaussians": sj.data.eight_gaussians}
    return target[name]().log_prob


def train(cfg, name, method, key):
    model = sj.nets.MLPEnergy(hidden=cfg.hidden)
    energy_fn = sj.nets.apply_fn(model)
    key_init, key_buffer, key_fit = jax.random.split(key, 3)
    params = model.init(key_init, jnp.zeros(2))
    optimizer = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adam(cfg.learning_rate))
    score_fn = sj.score_from_energy(energy_fn)
    make_sampler = lambda params: sj.ula(partial(score_fn, params), cfg.step_size)
    noise_fn = sj.uniform_noise(-cfg.lim, cfg.lim, (2,))
    extra = None
    if method in ("cd1", "cd10"):
        train_step = sj.make_cd_train_step(
            energy_fn, make_sampler, optimizer, num_mcmc_steps=1 if method == "cd1" else 10,
            alpha=cfg.alpha,
        )  # fmt: skip
    elif method == "pcd":
        train_step = sj.make_cd_train_step(
            energy_fn, make_sampler, optimizer, num_mcmc_steps=cfg.pcd_steps, persistent=True,
            noise_fn=noise_fn, reinit_fraction=cfg.reinit_fraction, alpha=cfg.alpha,
        )  # fmt: skip
        extra = sj.replay_init(key_buffer, noise_fn, cfg.buffer_size)
    elif method == "dsm":
        loss = partial(sj.dsm_loss, score_fn=sj.score_from_energy(energy_fn), sigma=cfg.dsm_sigma)
        train_step = sj.make_train_step(loss, optimizer)
    else:
        raise ValueError(f"unknown method {method!r}")
    state = sj.init_train_state(params, optimizer, extra)
    batch_fn = lambda k: SAMPLERS[name](k, cfg.batch_size)
    state, history = sj.fit(
        train_step, state, key_fit, batch_fn, num_steps=cfg.num_steps,
        steps_per_call=min(200, cfg.num_steps), description=f"{name}/{method}",
    )  # fmt: skip
    return energy_fn, state.params, history


def evaluate(cfg, energy_fn, params, test):
    e = partial(energy_fn, params)
    log_z = sj.log_partition_quadrature(
        e, (-cfg.lim, -cfg.lim), (cfg.lim, cfg.lim), cfg.quadrature_points
    )
    return float(jnp.mean(jax.vmap(e)(test)) + log_z)


def draw_samples(cfg, energy_fn, params, key):
    e = partial(energy_fn, params)
    sampler = sj.ula(lambda x: -jax.grad(e)(x), cfg.step_size)
    key_x0, key_run = jax.random.split(key)
    x0 = sj.uniform_noise(-cfg.lim, cfg.lim, (2,))(key_x0, cfg.num_sample_chains)
    result = sj.run_chains(key_run, sampler, x0, cfg.num_sample_steps)
    return np.asarray(result.state.x)


def main(cfg: Config) -> dict:
    out = output_dir(cfg)
    key = jax.random.key(cfg.seed)
    results, rows = {}, []
    fig_e, axes_e = plt.subplots(
        len(cfg.datasets), len(cfg.methods) + 1, figsize=(3 * (len(cfg.methods) + 1),
        3 * len(cfg.datasets)), squeeze=False,
    )  # fmt: skip
    fig_s, axes_s = plt.subplots(
        len(cfg.datasets), len(cfg.methods), figsize=(3 * len(cfg.methods),
        3 * len(cfg.datasets)), squeeze=False,
    )  # fmt: skip
    curves = {}
    with Timer() as total:
        for i, name in enumerate(cfg.datasets):
            key, key_test = jax.random.split(key)
            test = SAMPLERS[name](key_test, cfg.num_test)
            true_nll = float(-jnp.mean(jax.vmap(true_log_prob(name))(test)))
            row = {"dataset": name, "true": true_nll}
            sj.plot.energy_landscape(axes_e[i, 0], lambda x: -true_log_prob(name)(x), cfg.lim)
            axes_e[i, 0].set_title(f"{name}: true")
            for j, method in enumerate(cfg.methods):
                key, key_train, key_sample = jax.random.split(key, 3)
                with Timer() as t:
                    energy_fn, params, history = train(cfg, name, method, key_train)
                nll = evaluate(cfg, energy_fn, params, test)
                diverged = float(np.mean(history.get("diverged", np.zeros(1))))
                row[method] = nll
                results[f"{name}/{method}"] = {
                    "test_nll": nll, "true_nll": true_nll, "seconds": t.seconds,
                    "diverged_fraction": diverged,
                    "final_loss": float(np.mean(history["loss"][-50:])),
                }  # fmt: skip
                curves[f"{name}/{method}"] = history["loss"]
                sj.plot.energy_landscape(axes_e[i, j + 1], partial(energy_fn, params), cfg.lim)
                axes_e[i, j + 1].set_title(f"{method}: NLL {nll:.3f}")
                samples = draw_samples(cfg, energy_fn, params, key_sample)
                sj.plot.samples(axes_s[i, j], samples, test[:1000], lim=cfg.lim)
                axes_s[i, j].set_title(f"{name}: {method}")
            rows.append(row)
    sj.plot.save(fig_e, out / "energy_landscapes.png")
    sj.plot.save(fig_s, out / "samples.png")
    fig, axes = plt.subplots(1, len(cfg.methods), figsize=(4 * len(cfg.methods), 3), squeeze=False)
    for j, method in enumerate(cfg.methods):
        for name in cfg.datasets:
            axes[0, j].plot(curves[f"{name}/{method}"], lw=0.5, label=name)
        axes[0, j].set_title(method)
        axes[0, j].legend()
    sj.plot.save(fig, out / "loss_curves.png")
    table = markdown_table(rows, ["dataset", "true", *cfg.methods], fmt="{:.3f}")
    (out / "nll_table.md").write_text(
        "Exact test NLL (nats, lower is better; 'true' is the data law's own NLL)\n\n" + table
    )
    metrics = {"nll": rows, "runs": results, "seconds": total.seconds, "config": cfg.__dict__}
    write_json(out / "metrics.json", metrics)
    print(table)
    print(f"total {total.seconds:.0f} s")
    return metrics


if __name__ == "__main__":
    main(parse_config(Config, SMOKE))
