"""The main job: learn the score of two Gaussians and sample it with Langevin dynamics.

The project's first example. Data: two Gaussians at (±2, 0) with std 0.5. Two models:
  * a score network trained by denoising score matching at one small sigma (Vincent 2011),
    sampled with plain Langevin (step 0.01, 1,000 steps, chains started from N(0, 9 I));
  * a noise-conditional network trained with the NCSN loss over a geometric ladder
    (Song & Ermon 2019), sampled with annealed Langevin plus the final denoising step.
``main`` returns the MMD of each sampler next to its noise floor (the MMD between two
exact samples, with its standard error), mode weights, and the Fisher divergence of each
learned score on a grid against the exact noised score; ``report`` writes metrics.json and
the figures into results/two_gaussians/ (results/smoke/two_gaussians/ with --smoke). Each
phase prints its time; training, sampling and the noise floor show progress bars.

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
from experiments.common import (
    Timer,
    draw_directions,
    jit_mmd,
    mmd_noise_floor,
    on_grid,
    output_dir,
    parse_config,
    write_metrics,
)
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
    num_floor_repeats: int = 10  # the floor's standard error is reported beside it
    out_dir: str = "results/two_gaussians"


SMOKE = dict(
    num_train_steps=100,
    hidden=(32, 32),
    num_samples=200,
    langevin_num_steps=50,
    num_levels=4,
    annealed_steps_per_level=5,
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
        steps_per_call=min(200, cfg.num_train_steps),
        description=description,
    )


@partial(jax.jit, static_argnames=("score_fn", "lim", "num_points"))
def grid_fisher(score_fn, exact, lim=4.0, num_points=81):
    """Fisher divergence on a grid, weighted by the exact (noised) density there."""
    _, _, pts = plot.grid_2d(lim, num_points)
    weights = jnp.exp(jax.vmap(exact.log_prob)(pts))
    return metrics.fisher_divergence(score_fn, exact.score, pts, weights)


def annealed_samples(key, score_fn, x0, sigmas, cfg):
    """Annealed Langevin for every row of ``x0``, with a progress bar.

    The same numbers as ``jax.vmap(annealed_langevin)`` over ``jax.random.split(key, n)``:
    ``run_chains`` of its kernel over the ladder (chain i's key is the same split), then
    the final denoising step; ``run_chains`` can show progress where a vmap cannot.
    """
    schedule = sj.samplers.annealed_step_sizes(
        sigmas, cfg.annealed_step_size, cfg.annealed_steps_per_level
    )
    num_steps = len(sigmas) * cfg.annealed_steps_per_level
    result = sj.run_chains(
        key, sj.noise_conditional_ula(score_fn), x0, num_steps, schedule=schedule,
        progress=True, steps_per_call=cfg.annealed_steps_per_level, warn=False,
    )  # fmt: skip
    denoise = jax.jit(jax.vmap(lambda x: sj.tweedie_denoise(score_fn, x, sigmas[-1])))
    return jax.block_until_ready(denoise(result.state.x)), result.info


def sample_report(key, x, target, floor):
    """MMD (with its noise floor) and mode weights of samples ``x`` against ``target``."""
    reference = target.sample(key, x.shape[0])
    return {
        "mmd": float(jit_mmd(x, reference)),
        "mmd_noise_floor": floor[0],
        "mmd_noise_floor_standard_error": floor[1],
        "energy_distance": float(metrics.energy_distance(x, reference)),
        "mode_weights": np.asarray(metrics.mode_weights(x, target.means)).tolist(),
        "num_nonfinite_chains": int(np.sum(~np.all(np.isfinite(np.asarray(x)), axis=1))),
    }


def main(cfg: Config) -> dict:
    """Train both models, sample them, and score the samples and the learned scores.

    Returns the metrics (``langevin``, ``annealed_langevin``, ``fisher_divergence``,
    ``final_loss``, ``seconds``, ``config``) and, under ``arrays``, what the figures draw:
    the samples, a few Langevin trajectories, the learned score fields on a grid, the loss
    curves.
    """
    target = data.two_gaussians()
    keys = iter(jax.random.split(jax.random.key(cfg.seed), 16))

    # 1. a score network by DSM at one sigma, sampled with plain Langevin
    score_model = nets.MLPScore(cfg.hidden)
    score_fn = nets.apply_fn(score_model)
    dsm = partial(sj.dsm_loss, score_fn=score_fn, sigma=cfg.dsm_sigma)
    with Timer("train DSM") as t_dsm:
        dsm_state, dsm_history = train(cfg, score_model, dsm, (jnp.zeros(2),), next(keys), "DSM")
    learned = partial(score_fn, dsm_state.ema_params)
    x0 = cfg.init_std * jax.random.normal(next(keys), (cfg.num_samples, 2))
    thin = max(cfg.langevin_num_steps // 50, 1)
    ula = sj.ula(learned, cfg.langevin_step_size)
    with Timer("Langevin") as t_ula:
        ula_run = sj.run_chains(
            next(keys), ula, x0, cfg.langevin_num_steps, thin=thin, progress=True,
            steps_per_call=max(cfg.langevin_num_steps // 10 // thin, 1) * thin, warn=False,
        )  # fmt: skip
        ula_x = jax.block_until_ready(ula_run.state.x)
    sj.warn_if_diverged(ula_run.info, "Langevin")

    # 2. a noise-conditional network by the NCSN loss, sampled with annealed Langevin
    sigmas = sj.geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.num_levels)
    ncsn_model = nets.NoiseConditionalMLP(cfg.hidden)
    ncsn_fn = nets.apply_fn(ncsn_model)
    ncsn = partial(sj.ncsn_loss, score_fn=ncsn_fn, sigmas=sigmas)
    init_args = (jnp.zeros(2), jnp.ones(()))
    with Timer("train NCSN") as t_ncsn:
        ncsn_state, ncsn_history = train(cfg, ncsn_model, ncsn, init_args, next(keys), "NCSN")
    conditional = partial(ncsn_fn, ncsn_state.ema_params)
    with Timer("annealed Langevin") as t_ald:
        ald_x, ald_info = annealed_samples(next(keys), conditional, x0, sigmas, cfg)
    sj.warn_if_diverged(ald_info, "annealed Langevin")

    # 3. sample quality against the noise floor, and the learned scores against the exact ones
    with Timer(f"MMD noise floor ({cfg.num_floor_repeats} repeats)") as t_floor:
        floor = mmd_noise_floor(next(keys), target.sample, cfg.num_samples, cfg.num_floor_repeats)
    with Timer("MMD of the samples, Fisher divergences") as t_eval:
        langevin = sample_report(next(keys), ula_x, target, floor)
        annealed = sample_report(next(keys), ald_x, target, floor)
        conditional_at = lambda sigma: lambda x: conditional(x, sigma)
        fisher = {
            "dsm_at_sigma": float(grid_fisher(learned, target.noised(cfg.dsm_sigma))),
            "ncsn_at_sigma_min": float(
                grid_fisher(conditional_at(sigmas[-1]), target.noised(sigmas[-1]))
            ),
            "ncsn_at_sigma_max": float(
                grid_fisher(conditional_at(sigmas[0]), target.noised(sigmas[0]), 8.0)
            ),
        }
    return {
        "langevin": langevin,
        "annealed_langevin": annealed,
        "fisher_divergence": fisher,
        "final_loss": {
            "dsm": float(np.mean(dsm_history["loss"][-100:])),
            "ncsn": float(np.mean(ncsn_history["loss"][-100:])),
        },
        "seconds": {
            "train_dsm": t_dsm.seconds,
            "train_ncsn": t_ncsn.seconds,
            "langevin": t_ula.seconds,
            "annealed_langevin": t_ald.seconds,
            "mmd_noise_floor": t_floor.seconds,
            "evaluation": t_eval.seconds,
        },
        "config": dataclasses.asdict(cfg),
        "arrays": {
            "langevin_samples": np.asarray(ula_x),
            "annealed_samples": np.asarray(ald_x),
            "langevin_trajectories": np.asarray(ula_run.trace.x[:12]),
            "reference": np.asarray(target.sample(jax.random.key(123), cfg.num_samples)),
            "sigma_max": float(sigmas[0]),
            "dsm_score_grid": on_grid(learned, 4.0, 21),
            "ncsn_score_grid_at_sigma_max": on_grid(conditional_at(sigmas[0]), 4.0, 21),
            "dsm_loss": dsm_history["loss"],
            "ncsn_loss": ncsn_history["loss"],
        },
    }


def report(results: dict, cfg: Config) -> None:
    """Write metrics.json, score_field.png, samples.png and loss.png; print a summary."""
    out = output_dir(cfg)
    write_metrics(out, results)
    make_figures(out, results["arrays"])
    print(f"wrote {out}/metrics.json and figures")
    for name in ("langevin", "annealed_langevin"):
        r = results[name]
        print(
            f"{name:>18}: MMD^2 {r['mmd']:.2e} (noise floor {r['mmd_noise_floor']:.2e} ± "
            f"{r['mmd_noise_floor_standard_error']:.1e}), "
            f"mode weights {np.round(r['mode_weights'], 3).tolist()}"
        )
    print("Fisher divergence:", {k: round(v, 4) for k, v in results["fisher_divergence"].items()})


def make_figures(out, arrays):
    """Density and score fields, samples, trajectories and loss curves."""
    target = data.two_gaussians()
    sigma_max = arrays["sigma_max"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    plot.energy_landscape(axes[0], target.energy, lim=4.0)
    axes[0].set_title("data density exp(-E(x))")
    plot.energy_landscape(axes[1], target.energy, lim=4.0)
    draw_directions(axes[1], arrays["dsm_score_grid"], lim=4.0)
    axes[1].set_title("learned score (DSM), directions")
    plot.energy_landscape(axes[2], target.noised(sigma_max).energy, lim=4.0)
    draw_directions(axes[2], arrays["ncsn_score_grid_at_sigma_max"], lim=4.0)
    axes[2].set_title(f"noise-conditional score at sigma={sigma_max:.2g}")
    plot.save(fig, out / "score_field.png")

    reference = arrays["reference"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    plot.samples(axes[0], arrays["langevin_samples"], reference, lim=4.5, label="Langevin")
    axes[0].set_title("plain Langevin on the DSM score")
    plot.samples(axes[1], arrays["annealed_samples"], reference, lim=4.5, label="annealed Langevin")
    axes[1].set_title("annealed Langevin on the NCSN score")
    plot.energy_landscape(axes[2], target.energy, lim=4.5)
    plot.trajectories(axes[2], arrays["langevin_trajectories"], num_chains=12)
    axes[2].set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), title="Langevin trajectories")
    plot.save(fig, out / "samples.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    plot.loss_curve(axes[0], {"loss": arrays["dsm_loss"]})
    axes[0].set_title("DSM loss")
    plot.loss_curve(axes[1], {"loss": arrays["ncsn_loss"]})
    axes[1].set_title("NCSN loss")
    plot.save(fig, out / "loss.png")


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
