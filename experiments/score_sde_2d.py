"""Score SDEs on hard 2-D sets: VE, VP and sub-VP trained by continuous-time DSM and sampled
by the reverse SDE (Euler-Maruyama, reverse diffusion, predictor-corrector) and by the
probability-flow ODE, with the ODE's exact test log-likelihood (Song et al. 2021).

Data: a 4x4 checkerboard on [-2, 2]^2 (uniform on its 8 dark unit squares: entropy log 8
nats), and an unequal two-Gaussian mixture (weights 0.2 / 0.8 at (-5, -5) and (5, 5); its
entropy by Monte Carlo from the exact density). One ``TimeConditionalMLP`` per SDE and data
set (VE: output / std; VP and sub-VP: noise prediction), Adam with cosine decay, EMA weights
for sampling. The SDE samplers get the same number of score evaluations (PC: half the steps,
one corrector step each); the ODE is adaptive (Tsit5, rtol = atol = ``ode_tol``) and its
evaluations are reported. ``main`` returns per data set, SDE and method: MMD next to its noise
floor, mode weights where the data have modes, evaluations and wall time; per data set and
SDE the test negative log-likelihood (nats, exact divergence) beside the data's entropy.
``report`` writes metrics.json, table.md and figures into results/score_sde_2d/.

    python -m experiments.score_sde_2d            # defaults, ~10 minutes on 2 CPU cores
    python -m experiments.score_sde_2d --smoke    # seconds, for the tests
"""

import dataclasses
import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import scorejax as sj
from experiments.common import (
    Timer,
    jit_mmd,
    markdown_table,
    mmd_noise_floor,
    output_dir,
    parse_config,
    write_metrics,
)
from scorejax import data, metrics, nets, ode, plot, samplers
from scorejax import sde as sdes


@dataclasses.dataclass(frozen=True)
class Config:
    """Score SDEs (VE, VP, sub-VP) on 2-D data: reverse-SDE, PC and ODE samplers, likelihoods."""

    seed: int = 0
    datasets: tuple = ("checkerboard", "unequal_mixture")
    sdes: tuple = ("ve", "vp", "subvp")
    hidden: tuple = (128, 128, 128)
    batch_size: int = 512
    num_train_steps: int = 6000
    learning_rate: float = 2e-3
    num_samples: int = 2000
    num_score_evals: int = 1000  # per SDE sampler; PC takes half as many steps
    snr: float = 0.1
    ode_tol: float = 1e-4
    num_test: int = 500
    density_grid: int = 40
    num_trajectories: int = 12
    num_floor_repeats: int = 5
    out_dir: str = "results/score_sde_2d"


SMOKE = dict(
    sdes=("vp",),
    hidden=(32, 32),
    num_train_steps=60,
    num_samples=64,
    num_score_evals=20,
    ode_tol=1e-2,
    num_test=8,
    density_grid=6,
    num_trajectories=3,
    num_floor_repeats=2,
)

LIM = {"checkerboard": 2.5, "unequal_mixture": 9.0}
METHODS = ("Euler-Maruyama", "reverse diffusion", "PC", "ODE")


def sample_data(name: str, key, n: int):
    if name == "checkerboard":
        return data.sample_checkerboard(key, n)
    return data.sample_unequal_mixture(key, n)


def true_log_density(name: str, points):
    """log p of the data at ``points``: exact, -inf off the checkerboard's dark squares."""
    if name == "unequal_mixture":
        return jax.vmap(data.unequal_mixture().log_prob)(points)
    x, y = points[:, 0], points[:, 1]
    inside = (jnp.abs(x) <= 2) & (jnp.abs(y) <= 2)
    dark = (jnp.floor(x) + jnp.floor(y)) % 2 == 0
    return jnp.where(inside & dark, -jnp.log(8.0), -jnp.inf)


def data_entropy(name: str, key) -> tuple[float, float]:
    """(entropy in nats, its Monte Carlo standard error; 0 where exact)."""
    if name == "checkerboard":
        return math.log(8.0), 0.0
    x = data.sample_unequal_mixture(key, 100_000)
    log_p = np.asarray(true_log_density(name, x), np.float64)
    return float(-log_p.mean()), float(log_p.std(ddof=1) / np.sqrt(log_p.size))


def make_sde(name: str, sigma_max: float):
    """The SDE with the paper's defaults; VE's sigma_max the data's largest pairwise distance
    (Song & Ermon 2020, Technique 1)."""
    return {
        "ve": sdes.VESDE(sigma_min=0.01, sigma_max=sigma_max),
        "vp": sdes.VPSDE(),
        "subvp": sdes.SubVPSDE(),
    }[name]


def train(cfg, dataset: str, sde, key):
    """A TimeConditionalMLP by continuous-time DSM on fresh batches of the data."""
    output = nets.std_scaled_output if isinstance(sde, sdes.VESDE) else nets.epsilon_output
    model = nets.TimeConditionalMLP(cfg.hidden, sde=sde, parametrisation=output)
    key_init, key_fit = jax.random.split(key)
    params = model.init(key_init, jnp.zeros(2), jnp.ones(()))
    score_fn = nets.apply_fn(model)
    optimizer = optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.num_train_steps))
    loss = partial(sj.sde_dsm_loss, score_fn=score_fn, sde=sde)
    state, history = sj.fit(
        sj.make_train_step(loss, optimizer),
        sj.init_train_state(params, optimizer),
        key_fit,
        partial(sample_data, dataset, n=cfg.batch_size),
        num_steps=cfg.num_train_steps,
        steps_per_call=min(500, cfg.num_train_steps),
        description=f"{dataset}, {type(sde).__name__}",
    )
    return partial(score_fn, state.ema_params), history


def sde_sample(key, sde, score_fn, x_init, method: str, cfg, thin: int = 0):
    """A reverse-SDE sampler over every row of ``x_init`` with ``cfg.num_score_evals``
    score evaluations, then Tweedie's denoising step at eps."""
    if method == "PC":
        num_steps = max(cfg.num_score_evals // 2, 1)
        kwargs = {"predictor": samplers.reverse_diffusion, "corrector": samplers.langevin_corrector}
    else:
        num_steps = cfg.num_score_evals
        euler = method == "Euler-Maruyama"
        kwargs = {"predictor": samplers.euler_maruyama if euler else samplers.reverse_diffusion}
    sampler = sj.pc_sampler(sde, score_fn, snr=cfg.snr, **kwargs)
    result = sj.run_chains(
        key, sampler, x_init, num_steps, schedule=samplers.reverse_time_grid(sde, num_steps),
        thin=thin, warn=False,
    )  # fmt: skip
    x = jax.vmap(lambda v: samplers.denoise_sde(sde, score_fn, v, sde.eps))(result.state.x)
    evals = num_steps * (2 if method == "PC" else 1) + 1
    return jax.block_until_ready(x), evals, result


def ode_trajectories(sde, score_fn, x_init, tol, num_points: int = 20):
    """The ODE's path from t = 1 to eps at ``num_points`` times, solved segment by segment."""
    times = np.linspace(1.0, sde.eps, num_points + 1)
    path, x = [np.asarray(x_init)], x_init
    for t0, t1 in itertools.pairwise(times):
        solve = partial(ode.solve_flow, sde, score_fn, t0=t0, t1=t1, rtol=tol, atol=tol)
        x = jax.vmap(lambda v, solve=solve: solve(x=v))(x).x
        path.append(np.asarray(x))
    return np.stack(path)


def evaluate(cfg, dataset, sde_name, sde, score_fn, keys, floor):
    """Samples, metrics and figure data of one trained model."""
    x_init = sde.prior_sample(next(keys), (cfg.num_samples, 2))
    reference = sample_data(dataset, next(keys), cfg.num_samples)
    rows, arrays = [], {}
    for method in METHODS:
        with Timer() as timer:
            if method == "ODE":
                solve = partial(ode.ode_sample, sde, score_fn, rtol=cfg.ode_tol, atol=cfg.ode_tol)
                out = jax.vmap(solve)(x_init)
                x, evals = jax.block_until_ready(out.x), float(np.mean(out.nfe))
            else:
                x, evals, _ = sde_sample(next(keys), sde, score_fn, x_init, method, cfg)
        finite = np.all(np.isfinite(np.asarray(x)), axis=1)
        row = {
            "data": dataset, "sde": sde_name, "method": method,
            "mmd": float(jit_mmd(x[finite], reference)) if finite.sum() > 1 else float("nan"),
            "mmd_noise_floor": floor[0], "score_evals": evals, "seconds": timer.seconds,
            "nonfinite_chains": int((~finite).sum()),
        }  # fmt: skip
        if dataset == "unequal_mixture":
            weights = metrics.mode_weights(x[finite], data.unequal_mixture().means)
            row["weight (5,5)"] = float(weights[1])
        rows.append(row)
        arrays[method] = np.asarray(x)
    # test NLL from the ODE with the exact divergence, on held-out exact samples
    test = sample_data(dataset, next(keys), cfg.num_test)
    loglik = lambda v: ode.log_likelihood(sde, score_fn, v, rtol=cfg.ode_tol, atol=cfg.ode_tol)
    with Timer() as t_nll:
        lik = jax.vmap(loglik)(test)
        nll = -np.asarray(lik.log_prob, np.float64)
    likelihood = {
        "data": dataset, "sde": sde_name, "test_nll": float(nll.mean()),
        "test_nll_se": float(nll.std(ddof=1) / np.sqrt(nll.size)),
        "score_evals": float(np.mean(lik.nfe)), "seconds": t_nll.seconds,
    }  # fmt: skip
    return rows, likelihood, arrays


def main(cfg: Config) -> dict:
    """Train one model per data set and SDE, sample it four ways, measure its likelihood.

    Returns ``samplers`` (one row per data set, SDE and method), ``likelihood`` (one row per
    data set and SDE, with the data's entropy beside it), ``seconds``, ``config``, and under
    ``arrays`` the samples, trajectories and log-density grids the figures draw.
    """
    keys = iter(jax.random.split(jax.random.key(cfg.seed), 256))
    sampler_rows, likelihood_rows, arrays, seconds = [], [], {}, {}
    for dataset in cfg.datasets:
        trained = {}
        probe = np.asarray(sample_data(dataset, next(keys), 2000))
        sigma_max = float(np.max(np.linalg.norm(probe[:, None] - probe[None], axis=-1)))
        with Timer(f"{dataset}: MMD noise floor") as t_floor:
            floor = mmd_noise_floor(
                next(keys), partial(sample_data, dataset), cfg.num_samples, cfg.num_floor_repeats
            )
        entropy = data_entropy(dataset, next(keys))
        seconds[f"{dataset}/noise_floor"] = t_floor.seconds
        arrays[dataset] = {"reference": np.asarray(sample_data(dataset, next(keys), 2000))}
        for sde_name in cfg.sdes:
            sde = make_sde(sde_name, sigma_max)
            with Timer(f"{dataset}, {sde_name}: train") as t_train:
                score_fn, history = train(cfg, dataset, sde, next(keys))
            with Timer(f"{dataset}, {sde_name}: sample and likelihood") as t_eval:
                rows, likelihood, samples = evaluate(
                    cfg, dataset, sde_name, sde, score_fn, keys, floor
                )
            likelihood |= {"data_entropy": entropy[0], "data_entropy_se": entropy[1]}
            sampler_rows += rows
            likelihood_rows.append(likelihood)
            seconds[f"{dataset}/{sde_name}/train"] = t_train.seconds
            seconds[f"{dataset}/{sde_name}/evaluate"] = t_eval.seconds
            arrays[dataset][sde_name] = {"samples": samples, "loss": history["loss"]}
            trained[sde_name] = (sde, score_fn)
        # trajectories and the log-density heat map for VP (or the first SDE given)
        sde_name = "vp" if "vp" in cfg.sdes else cfg.sdes[0]
        sde, score_fn = trained[sde_name]
        with Timer(f"{dataset}: trajectories and density grid"):
            x_init = sde.prior_sample(next(keys), (cfg.num_trajectories, 2))
            _, _, run = sde_sample(
                next(keys), sde, score_fn, x_init, "Euler-Maruyama", cfg,
                thin=max(cfg.num_score_evals // 50, 1),
            )  # fmt: skip
            xs, _, points = plot.grid_2d(LIM[dataset], cfg.density_grid)
            loglik = lambda v: (
                ode.log_likelihood(sde, score_fn, v, rtol=cfg.ode_tol, atol=cfg.ode_tol).log_prob
            )
            model_grid = np.asarray(jax.vmap(loglik)(points)).reshape(xs.shape)
            arrays[dataset]["figure_sde"] = sde_name
            arrays[dataset]["sde_trajectories"] = np.asarray(run.trace.x)
            arrays[dataset]["ode_trajectories"] = ode_trajectories(
                sde, score_fn, x_init, cfg.ode_tol
            )
            arrays[dataset]["model_log_density"] = model_grid
            arrays[dataset]["true_log_density"] = np.asarray(
                true_log_density(dataset, points)
            ).reshape(xs.shape)
    return {
        "samplers": sampler_rows,
        "likelihood": likelihood_rows,
        "seconds": seconds,
        "config": dataclasses.asdict(cfg),
        "arrays": arrays,
    }


def report(results: dict, cfg: Config) -> None:
    """Write metrics.json, table.md and per data set samples, trajectories and density PNGs."""
    out = output_dir(cfg)
    write_metrics(out, results)
    columns = ["data", "sde", "method", "mmd", "mmd_noise_floor", "weight (5,5)",
               "score_evals", "seconds", "nonfinite_chains"]  # fmt: skip
    text = "# Score SDEs on 2-D data\n\n## Samplers\n\n"
    text += markdown_table(results["samplers"], columns)
    text += "\n## Test negative log-likelihood (nats), probability-flow ODE\n\n"
    text += markdown_table(results["likelihood"])
    (out / "table.md").write_text(text)
    for dataset, arrays in results["arrays"].items():
        make_figures(out, dataset, arrays, cfg)
    print(f"wrote {out}/metrics.json, table.md and figures")
    print(text)


def make_figures(out, dataset, arrays, cfg):
    lim = LIM[dataset]
    sde_names = [name for name in cfg.sdes if name in arrays]
    fig, axes = plt.subplots(
        len(sde_names), len(METHODS) + 1, figsize=(3.2 * (len(METHODS) + 1), 3.2 * len(sde_names)),
        squeeze=False,
    )  # fmt: skip
    for i, name in enumerate(sde_names):
        for j, method in enumerate(METHODS):
            plot.samples(axes[i, j], arrays[name]["samples"][method], lim=lim, label=method)
            axes[i, j].set_title(f"{name}: {method}", fontsize=9)
        plot.samples(axes[i, -1], arrays["reference"], lim=lim, label="data")
        axes[i, -1].set_title("data", fontsize=9)
    plot.save(fig, out / f"samples_{dataset}.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, key, title in (
        (axes[0], "sde_trajectories", "reverse SDE (Euler-Maruyama)"),
        (axes[1], "ode_trajectories", "probability-flow ODE"),
    ):
        ax.scatter(*arrays["reference"][:500].T, s=1, color="0.7")
        trace = arrays[key]
        for c in range(trace.shape[1]):
            ax.plot(trace[:, c, 0], trace[:, c, 1], lw=0.8)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=f"{arrays['figure_sde']}: {title}")
    plot.save(fig, out / f"trajectories_{dataset}.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    extent = (-lim, lim, -lim, lim)
    for ax, key, title in (
        (axes[0], "model_log_density", "model log-density (ODE)"),
        (axes[1], "true_log_density", "true log-density"),
    ):
        grid = np.where(np.isfinite(arrays[key]), arrays[key], np.nan)
        ax.imshow(np.exp(grid), origin="lower", extent=extent, cmap="viridis")
        ax.set_title(title)
    plot.save(fig, out / f"density_{dataset}.png")


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
