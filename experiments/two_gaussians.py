"""The main job: learn the score of two Gaussians and sample it with Langevin dynamics.

The seeds' practical example. Data: two Gaussians at (+-2, 0) with std 0.5. Two models:
  * a score network trained by denoising score matching at one small sigma (Vincent 2011),
    sampled with plain Langevin (step 0.01, 1,000 steps, start N(0, 9 I), as in the seeds);
  * a noise-conditional network trained with the NCSN loss over a geometric ladder
    (Song & Ermon 2019), sampled with annealed Langevin plus the final denoising step.
Writes figures and metrics.json (MMD next to its noise floor, mode weights, Fisher
divergence of each learned score on a grid against the exact noised score) into
results/two_gaussians/.

    python -m experiments.two_gaussians            # defaults, ~2 minutes on 2 CPU cores
    python -m experiments.two_gaussians --smoke    # seconds, for the tests
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import scorejax as sj
from experiments.common import Timer, output_dir, parse_config, write_json
from scorejax import data, metrics, nets, plot


@dataclasses.dataclass(frozen=True)
class Config:
    """Two Gaussians: DSM + Langevin and NCSN + annealed Langevin."""

    seed: int = 0
    batch_size: int = 512
    num_train_steps: int = 6000
    learning_rate: float = 2e-3
    hidden: tuple = (128, 128)
    dsm_sigma: float = 0.1
    sigma_max: float = 5.0  # about the largest distance between data points (NCSNv2, Tech. 1)
    sigma_min: float = 0.05
    num_levels: int = 10
    num_samples: int = 2000
    langevin_step_size: float = 0.01
    langevin_num_steps: int = 1000
    init_std: float = 3.0
    annealed_step_size: float = 0.002
    annealed_steps_per_level: int = 100
    num_floor_repeats: int = 10
    out_dir: str = "results/two_gaussians"


SMOKE = dict(
    num_train_steps=200,
    num_samples=300,
    langevin_num_steps=100,
    annealed_steps_per_level=10,
    num_floor_repeats=2,
)


def train(cfg, model, loss_fn, init_args, key, description):
    """Adam (cosine-decayed) on ``loss_fn`` with fresh two-Gaussian batches."""
    key_init, key_fit = jax.random.split(key)
    params = model.init(key_init, *init_args)
    # cosine decay to zero: the last steps average out the DSM gradient noise, which
    # matters for the mode weights annealed Langevin settles on
    optimizer = optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.num_train_steps))
    train_step = sj.make_train_step(loss_fn, optimizer)
    state = sj.init_train_state(params, optimizer)
    batch_fn = lambda k: data.sample_two_gaussians(k, cfg.batch_size)
    return sj.fit(
        train_step,
        state,
        key_fit,
        batch_fn,
        num_steps=cfg.num_train_steps,
        steps_per_call=200,
        description=description,
    )


def grid_fisher(score_fn, exact, lim=4.0, num_points=81):
    """Fisher divergence on a grid, weighted by the exact (noised) density there."""
    _, _, pts = plot.grid_2d(lim, num_points)
    weights = jnp.exp(jax.vmap(exact.log_prob)(pts))
    return metrics.fisher_divergence(score_fn, exact.score, pts, weights)


def sample_report(key, x, target, floor):
    """MMD (with its noise floor) and mode weights of samples ``x`` against ``target``."""
    reference = target.sample(key, x.shape[0])
    return {
        "mmd": float(metrics.mmd(x, reference)),
        "mmd_noise_floor": float(floor),
        "energy_distance": float(metrics.energy_distance(x, reference)),
        "mode_weights": np.asarray(metrics.mode_weights(x, target.means)).tolist(),
        "num_nonfinite_chains": int(np.sum(~np.all(np.isfinite(np.asarray(x)), axis=1))),
    }


def main(cfg: Config) -> dict:
    out = output_dir(cfg)
    target = data.two_gaussians()
    keys = iter(jax.random.split(jax.random.key(cfg.seed), 16))

    # 1. a score network by DSM at one sigma, sampled with plain Langevin
    score_model = nets.MLPScore(cfg.hidden)
    score_fn = nets.apply_fn(score_model)
    dsm = partial(sj.dsm_loss, score_fn=score_fn, sigma=cfg.dsm_sigma)
    with Timer() as t_dsm:
        dsm_state, dsm_history = train(cfg, score_model, dsm, (jnp.zeros(2),), next(keys), "DSM")
    learned = partial(score_fn, dsm_state.ema_params)
    x0 = cfg.init_std * jax.random.normal(next(keys), (cfg.num_samples, 2))
    thin = max(cfg.langevin_num_steps // 50, 1)
    ula = sj.ula(learned, cfg.langevin_step_size)
    with Timer() as t_ula:
        ula_run = sj.run_chains(next(keys), ula, x0, cfg.langevin_num_steps, thin=thin)
        ula_x = jax.block_until_ready(ula_run.state.x)
    sj.warn_if_diverged(ula_run.info, "Langevin")

    # 2. a noise-conditional network by the NCSN loss, sampled with annealed Langevin
    sigmas = sj.geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.num_levels)
    ncsn_model = nets.NoiseConditionalMLP(cfg.hidden)
    ncsn_fn = nets.apply_fn(ncsn_model)
    ncsn = partial(sj.ncsn_loss, score_fn=ncsn_fn, sigmas=sigmas)
    init_args = (jnp.zeros(2), jnp.ones(()))
    with Timer() as t_ncsn:
        ncsn_state, ncsn_history = train(cfg, ncsn_model, ncsn, init_args, next(keys), "NCSN")
    conditional = partial(ncsn_fn, ncsn_state.ema_params)
    annealed = lambda k, x: sj.annealed_langevin(
        k,
        conditional,
        x,
        sigmas,
        step_size=cfg.annealed_step_size,
        num_steps_per_level=cfg.annealed_steps_per_level,
    )
    with Timer() as t_ald:
        ald_run = jax.vmap(annealed)(jax.random.split(next(keys), cfg.num_samples), x0)
        ald_x = jax.block_until_ready(ald_run.state.x)
    sj.warn_if_diverged(ald_run.info, "annealed Langevin")

    floor = metrics.mmd_noise_floor(
        next(keys), target.sample, cfg.num_samples, cfg.num_floor_repeats
    )
    results = {
        "langevin": sample_report(next(keys), ula_x, target, floor),
        "annealed_langevin": sample_report(next(keys), ald_x, target, floor),
        "fisher_divergence": {
            "dsm_at_sigma": float(grid_fisher(learned, target.noised(cfg.dsm_sigma))),
            "ncsn_at_sigma_min": float(
                grid_fisher(lambda x: conditional(x, sigmas[-1]), target.noised(sigmas[-1]))
            ),
            "ncsn_at_sigma_max": float(
                grid_fisher(lambda x: conditional(x, sigmas[0]), target.noised(sigmas[0]), 8.0)
            ),
        },
        "final_loss": {
            "dsm": float(np.mean(dsm_history["loss"][-100:])),
            "ncsn": float(np.mean(ncsn_history["loss"][-100:])),
        },
        "seconds": {
            "train_dsm": t_dsm.seconds,
            "train_ncsn": t_ncsn.seconds,
            "langevin": t_ula.seconds,
            "annealed_langevin": t_ald.seconds,
        },
        "config": dataclasses.asdict(cfg),
    }
    write_json(out / "metrics.json", results)
    make_figures(
        out, target, learned, conditional, sigmas, ula_run, ula_x, ald_x, dsm_history, ncsn_history
    )
    print(f"wrote {out}/metrics.json and figures")
    for name in ("langevin", "annealed_langevin"):
        r = results[name]
        print(
            f"{name:>18}: MMD^2 {r['mmd']:.2e} (noise floor {r['mmd_noise_floor']:.2e}), "
            f"mode weights {np.round(r['mode_weights'], 3).tolist()}"
        )
    print("Fisher divergence:", {k: round(v, 4) for k, v in results["fisher_divergence"].items()})
    return results


def make_figures(out, target, learned, conditional, sigmas, ula_run, ula_x, ald_x, h1, h2):
    """Density and score field, samples, trajectories and loss curves."""
    reference = target.sample(jax.random.key(123), ula_x.shape[0])
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    plot.energy_landscape(axes[0], target.energy, lim=4.0)
    axes[0].set_title("data density exp(-E(x))")
    plot.energy_landscape(axes[1], target.energy, lim=4.0)
    plot.score_field(axes[1], learned, lim=4.0)
    axes[1].set_title("learned score (DSM), directions")
    plot.energy_landscape(axes[2], target.noised(sigmas[0]).energy, lim=4.0)
    plot.score_field(axes[2], lambda x: conditional(x, sigmas[0]), lim=4.0)
    axes[2].set_title(f"noise-conditional score at sigma={float(sigmas[0]):.2g}")
    plot.save(fig, out / "score_field.png")

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    plot.samples(axes[0], ula_x, reference, lim=4.5, label="Langevin")
    axes[0].set_title("plain Langevin on the DSM score")
    plot.samples(axes[1], ald_x, reference, lim=4.5, label="annealed Langevin")
    axes[1].set_title("annealed Langevin on the NCSN score")
    plot.energy_landscape(axes[2], target.energy, lim=4.5)
    plot.trajectories(axes[2], ula_run.trace.x, num_chains=12)
    axes[2].set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), title="Langevin trajectories")
    plot.save(fig, out / "samples.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot.loss_curve(axes[0], h1)
    axes[0].set_title("DSM loss")
    plot.loss_curve(axes[1], h2)
    axes[1].set_title("NCSN loss")
    plot.save(fig, out / "loss.png")


if __name__ == "__main__":
    main(parse_config(Config, SMOKE))
