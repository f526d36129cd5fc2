"""2-D energy-based models by contrastive divergence, scored by their exact test NLL.

CD-1, CD-10 (chains started at the data, Hinton 2002), PCD (persistent chains in a replay
buffer, Tieleman 2008; Du & Mordatch 2019) and a DSM-trained energy net (Vincent 2011,
through its score -grad E) on two Gaussians, rings and 8 Gaussians. Each learned energy is
normalised by quadrature over the box [-lim, lim]^2 (``log_partition_quadrature``), so the
test NLL -log p(x) = E(x) + log Z is exact up to the quadrature error (the density is that
of the model restricted to the box). The true NLL of the data law is the floor.
``main`` returns the NLL table and per-run metrics; ``report`` writes nll_table.md,
metrics.json and the figures into results/ebm_cd/ (results/smoke/ebm_cd/ with --smoke).

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
from experiments.common import (
    Timer,
    draw_density,
    markdown_table,
    on_grid,
    output_dir,
    parse_config,
    write_metrics,
)


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
    methods=("cd1", "pcd", "dsm"),  # CD-10 runs CD-1's code with more steps
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


def make_energy(cfg):
    """(module, energy_fn): built once per run, so the functions below that take
    ``energy_fn`` compile once for every learned energy (their params are data)."""
    model = sj.nets.MLPEnergy(hidden=cfg.hidden)
    return model, sj.nets.apply_fn(model)


def train(cfg, model, energy_fn, name, method, key):
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
        loss = partial(sj.dsm_loss, score_fn=score_fn, sigma=cfg.dsm_sigma)
        train_step = sj.make_train_step(loss, optimizer)
    else:
        raise ValueError(f"unknown method {method!r}")
    state = sj.init_train_state(params, optimizer, extra)
    batch_fn = lambda k: SAMPLERS[name](k, cfg.batch_size)
    state, history = sj.fit(
        train_step, state, key_fit, batch_fn, num_steps=cfg.num_steps,
        steps_per_call=min(200, cfg.num_steps), description=f"{name}/{method}",
    )  # fmt: skip
    return state.params, history


def nll_by_quadrature(energy_fn, params, test, lim, num_points):
    """Mean E(x) over ``test`` + log Z, log Z by quadrature over [-lim, lim]^2."""
    e = partial(energy_fn, params)
    log_z = sj.log_partition_quadrature(e, (-lim, -lim), (lim, lim), num_points)
    return float(jnp.mean(jax.vmap(e)(test)) + log_z)


def draw_samples(cfg, score_fn, params, key):
    """ULA chains from uniform noise on the box under the learned energy's score."""
    sampler = sj.ula(partial(score_fn, params), cfg.step_size)
    key_x0, key_run = jax.random.split(key)
    x0 = sj.uniform_noise(-cfg.lim, cfg.lim, (2,))(key_x0, cfg.num_sample_chains)
    result = sj.run_chains(key_run, sampler, x0, cfg.num_sample_steps)
    return np.asarray(result.state.x)


def main(cfg: Config) -> dict:
    """Train every method on every dataset; exact test NLL by quadrature; samples by ULA.

    Returns ``nll`` (the table: one row per dataset, a column per method and the data
    law's own NLL), ``runs`` (per dataset/method: test and true NLL, seconds, diverged
    fraction, final loss), ``seconds``, ``config``, and under ``arrays`` the energies on a
    grid (true and learned), the samples, the test points shown and the loss curves.
    """
    key = jax.random.key(cfg.seed)
    model, energy_fn = make_energy(cfg)
    score_fn = sj.score_from_energy(energy_fn)
    results, rows = {}, []
    arrays = {"true_energy": {}, "energy": {}, "samples": {}, "test": {}, "loss": {}}
    with Timer() as total:
        for name in cfg.datasets:
            key, key_test = jax.random.split(key)
            test = SAMPLERS[name](key_test, cfg.num_test)
            true_nll = float(-jnp.mean(jax.vmap(true_log_prob(name))(test)))
            row = {"dataset": name, "true": true_nll}
            arrays["true_energy"][name] = on_grid(lambda x: -true_log_prob(name)(x), cfg.lim, 150)
            arrays["test"][name] = np.asarray(test[:1000])
            for method in cfg.methods:
                key, key_train, key_sample = jax.random.split(key, 3)
                with Timer(f"{name}/{method}") as t:
                    params, history = train(cfg, model, energy_fn, name, method, key_train)
                    nll = nll_by_quadrature(energy_fn, params, test, cfg.lim, cfg.quadrature_points)
                    samples = draw_samples(cfg, score_fn, params, key_sample)
                diverged = float(np.mean(history.get("diverged", np.zeros(1))))
                row[method] = nll
                results[f"{name}/{method}"] = {
                    "test_nll": nll, "true_nll": true_nll, "seconds": t.seconds,
                    "diverged_fraction": diverged,
                    "final_loss": float(np.mean(history["loss"][-50:])),
                }  # fmt: skip
                arrays["loss"][f"{name}/{method}"] = history["loss"]
                arrays["energy"][f"{name}/{method}"] = on_grid(
                    partial(energy_fn, params), cfg.lim, 150
                )
                arrays["samples"][f"{name}/{method}"] = samples
            rows.append(row)
    return {
        "nll": rows,
        "runs": results,
        "seconds": total.seconds,
        "config": dataclasses.asdict(cfg),
        "arrays": arrays,
    }


def report(results: dict, cfg: Config) -> None:
    """Write energy_landscapes.png, samples.png, loss_curves.png, nll_table.md and
    metrics.json; print the table."""
    out = output_dir(cfg)
    arrays, runs = results["arrays"], results["runs"]
    fig_e, axes_e = plt.subplots(
        len(cfg.datasets), len(cfg.methods) + 1, figsize=(3 * (len(cfg.methods) + 1),
        3 * len(cfg.datasets)), squeeze=False,
    )  # fmt: skip
    fig_s, axes_s = plt.subplots(
        len(cfg.datasets), len(cfg.methods), figsize=(3 * len(cfg.methods),
        3 * len(cfg.datasets)), squeeze=False,
    )  # fmt: skip
    for i, name in enumerate(cfg.datasets):
        draw_density(axes_e[i, 0], arrays["true_energy"][name], cfg.lim)
        axes_e[i, 0].set_title(f"{name}: true")
        for j, method in enumerate(cfg.methods):
            run = f"{name}/{method}"
            draw_density(axes_e[i, j + 1], arrays["energy"][run], cfg.lim)
            axes_e[i, j + 1].set_title(f"{method}: NLL {runs[run]['test_nll']:.3f}")
            sj.plot.samples(axes_s[i, j], arrays["samples"][run], arrays["test"][name], lim=cfg.lim)
            axes_s[i, j].set_title(f"{name}: {method}")
    sj.plot.save(fig_e, out / "energy_landscapes.png")
    sj.plot.save(fig_s, out / "samples.png")
    fig, axes = plt.subplots(1, len(cfg.methods), figsize=(4 * len(cfg.methods), 3), squeeze=False)
    for j, method in enumerate(cfg.methods):
        for name in cfg.datasets:
            axes[0, j].plot(arrays["loss"][f"{name}/{method}"], lw=0.5, label=name)
        axes[0, j].set_title(method)
        axes[0, j].legend()
    sj.plot.save(fig, out / "loss_curves.png")
    table = markdown_table(results["nll"], ["dataset", "true", *cfg.methods], fmt="{:.3f}")
    (out / "nll_table.md").write_text(
        "Exact test NLL (nats, lower is better; 'true' is the data law's own NLL)\n\n" + table
    )
    write_metrics(out, results)
    print(table)
    print(f"total {results['seconds']:.0f} s")


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
