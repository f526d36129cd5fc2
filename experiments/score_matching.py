"""Score matching, exact and sliced, and what each costs.

(a) accuracy: exact SM (Hyvärinen 2005), sliced SM and SSM-VR (Song, Garg, Shi & Ermon
    2019) and DSM (Vincent 2011) train an MLP score net on 2-D targets (two Gaussians,
    rings, eight Gaussians) and on Gaussian mixtures in D = 16 and 64, and an MLP energy net
    on two Gaussians. Reported: the Fisher divergence 1/2 E|s_theta - s*|^2 against the exact
    score (for DSM against the exact score of the noised data q_sigma, on samples of q_sigma),
    also relative to 1/2 E|s*|^2, and the MMD of ULA samples against its noise floor.
(b) cost: seconds per jitted train step and the step's memory against D = 2 ... 1024 for an
    MLP score net. Memory is read from the compiled executable's ``memory_analysis()``
    (XLA's buffer assignment; nothing is run to measure it): arguments + outputs +
    temporaries - aliased bytes, and the temporaries alone (the step's working set).
(c) the picture of the two terms of J = E[tr grad s + 1/2 |s|^2]: the divergence of the
    learned field (negative, sinks, at the data) and its magnitude (small at the data).

Run ``python -m experiments.score_matching`` (``--smoke`` for the test-sized run).
"""

import dataclasses
from functools import cache, partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

from experiments.common import Timer, markdown_table, output_dir, parse_config, write_json
from scorejax import (
    GaussianMixture,
    Rings,
    data,
    divergence,
    dsm_loss,
    exact_sm_loss,
    fit,
    init_train_state,
    make_train_step,
    metrics,
    minibatches,
    nets,
    plot,
    run_chains,
    score_from_energy,
    ssm_loss,
    ssm_vr_loss,
    ula,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Exact SM, SSM, SSM-VR and DSM: accuracy, cost per step, and the divergence picture."""

    out_dir: str = "results/score_matching"
    seed: int = 0
    objectives: tuple = ("exact_sm", "ssm", "ssm_vr", "dsm")
    targets: tuple = ("two_gaussians", "rings", "eight_gaussians", "mixture16", "mixture64")
    energy_targets: tuple = ("two_gaussians",)  # also trained with an energy net
    hidden: tuple = (128, 128)
    learning_rate: float = 2e-3
    batch_size: int = 256
    num_steps: int = 1500  # 2-D targets
    high_dim_batch_size: int = 64
    high_dim_num_steps: int = 600  # D >= 16: exact SM costs D forward passes a step
    dsm_sigma: float = 0.1
    num_train: int = 10000  # the data set, drawn once per run; minibatches with replacement
    num_eval: int = 2000  # fresh samples for the Fisher divergence
    num_chains: int = 500  # ULA chains, one sample each
    langevin_steps: int = 500
    langevin_step_fraction: float = 0.1  # h = fraction * (smallest component scale)^2
    cost_dims: tuple = (2, 4, 16, 64, 256, 1024)
    cost_batch_size: int = 64
    cost_repeats: int = 5
    picture_target: str = "two_gaussians"


SMOKE = {
    "objectives": ("exact_sm", "dsm"),
    "targets": ("two_gaussians", "mixture16"),
    "energy_targets": (),
    "hidden": (16, 16),
    "num_steps": 20,
    "high_dim_num_steps": 10,
    "batch_size": 32,
    "high_dim_batch_size": 16,
    "num_train": 256,
    "num_eval": 64,
    "num_chains": 64,
    "langevin_steps": 20,
    "cost_dims": (2, 8),
    "cost_batch_size": 8,
    "cost_repeats": 2,
}

LOSSES = {"exact_sm": exact_sm_loss, "ssm": ssm_loss, "ssm_vr": ssm_vr_loss, "dsm": dsm_loss}


def mixture_in(dim: int, num_components: int = 4, seed: int = 1) -> GaussianMixture:
    """K equal unit-variance Gaussians whose means are random sign vectors in D dimensions."""
    signs = jax.random.rademacher(jax.random.key(seed), (num_components, dim), jnp.float32)
    return GaussianMixture(signs, jnp.ones(num_components), jnp.full(num_components, 0.25))


def make_target(name: str):
    """(target with .score/.sample, smallest component scale)."""
    if name == "two_gaussians":
        return data.two_gaussians(), 0.5
    if name == "eight_gaussians":
        return data.eight_gaussians(), 0.2
    if name == "rings":
        return Rings(jnp.array([1.0, 2.0, 3.0]), jnp.asarray(0.1), jnp.full(3, 1 / 3)), 0.1
    if name.startswith("mixture"):
        return mixture_in(int(name.removeprefix("mixture"))), 1.0
    raise ValueError(f"unknown target {name!r}")


def quadrature_noised_score(log_prob, sigma: float, lim: float):
    """The score of q_sigma = p * N(0, sigma^2 I) for a 2-D density, by quadrature.

    grad log q(y) = sum_j w_j (x_j - y) / sigma^2 with w_j ∝ p(x_j) N(y; x_j, sigma^2 I) over
    a square grid on [-lim, lim]^2 of spacing sigma / 4: a Riemann sum of a smooth, rapidly
    decaying integrand (its error is of order exp(-2 pi^2 sigma^2 / h^2), negligible here).
    Used for rings, whose convolution has no closed form.
    """
    ticks = jnp.arange(-lim, lim, sigma / 4)
    grid = jnp.stack(jnp.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2)
    log_p = jax.vmap(log_prob)(grid)
    keep = np.asarray(log_p > jnp.max(log_p) - 30.0)  # drop points of negligible mass
    grid, log_p = grid[keep], log_p[keep]

    def score(y):
        logits = log_p - jnp.sum((grid - y) ** 2, axis=1) / (2 * sigma**2)
        return (jax.nn.softmax(logits) @ grid - y) / sigma**2

    return score


def noised_score_fn(target, sigma: float):
    """The exact score of q_sigma: closed form for mixtures, quadrature for rings."""
    if isinstance(target, GaussianMixture):
        return target.noised(sigma).score
    lim = float(jnp.max(target.radii)) + 6 * float(target.scale) + 6 * sigma
    return quadrature_noised_score(target.log_prob, sigma, lim)


@cache
def make_model(model_kind: str, hidden: tuple):
    """(Flax module, score_fn(params, x)); cached so jitted samplers compile once per model."""
    if model_kind == "score":
        model = nets.MLPScore(hidden)
        return model, nets.apply_fn(model)
    model = nets.MLPEnergy(hidden)
    return model, score_from_energy(nets.apply_fn(model))


@partial(jax.jit, static_argnames=("score_fn", "num_steps"))
def langevin_samples(params, key, x0, step_size, *, score_fn, num_steps):
    """One ULA sample per chain from ``x0`` under the learned score (params as an argument,
    so one compilation serves every objective)."""
    sampler = ula(partial(score_fn, params), step_size)
    return run_chains(key, sampler, x0, num_steps).state.x


@cache
def noise_floor(target_name: str, n: int, seed: int) -> float:
    """MMD between two exact samples of size n (``metrics.mmd_noise_floor``), per target."""
    target, _ = make_target(target_name)
    return float(metrics.mmd_noise_floor(jax.random.key(seed), target.sample, n, 5))


def train(cfg, key, target, dim, objective, model_kind):
    """Train one objective; returns (score_fn(params, x), params, seconds, final loss)."""
    high = dim > 2
    batch_size = cfg.high_dim_batch_size if high else cfg.batch_size
    num_steps = cfg.high_dim_num_steps if high else cfg.num_steps
    model, score_fn = make_model(model_kind, tuple(cfg.hidden))
    key_init, key_fit = jax.random.split(key)
    params = model.init(key_init, jnp.zeros(dim))
    kwargs = {"sigma": cfg.dsm_sigma} if objective == "dsm" else {}
    optimizer = optax.adam(cfg.learning_rate)
    step = make_train_step(partial(LOSSES[objective], score_fn=score_fn, **kwargs), optimizer)
    key_data, key_fit = jax.random.split(key_fit)
    batch_fn = minibatches(target.sample(key_data, cfg.num_train), batch_size)
    with Timer() as timer:
        state, history = fit(
            step,
            init_train_state(params, optimizer),
            key_fit,
            batch_fn,
            num_steps=num_steps,
            steps_per_call=min(num_steps, 200),
            progress=False,
        )
        jax.block_until_ready(state.params)
    final_loss = float(np.mean(history["loss"][-max(1, num_steps // 10) :]))
    return score_fn, state.params, timer.seconds, final_loss


def accuracy_row(cfg, key, target_name, objective, model_kind):
    target, scale = make_target(target_name)
    dim = 2 if not target_name.startswith("mixture") else int(target_name.removeprefix("mixture"))
    key_train, key_eval, key_noise, key_chain, key_x0, key_ref = jax.random.split(key, 6)
    score_fn, params, seconds, final_loss = train(
        cfg, key_train, target, dim, objective, model_kind
    )
    x = target.sample(key_eval, cfg.num_eval)
    exact = target.score
    if objective == "dsm":  # DSM learns the noised score: compare there, on samples of q
        x = x + cfg.dsm_sigma * jax.random.normal(key_noise, x.shape)
        exact = noised_score_fn(target, cfg.dsm_sigma)
    # metrics.fisher_divergence, with the exact scores mapped in chunks (quadrature is wide)
    exact_scores = jax.lax.map(exact, x, batch_size=50)
    learned_scores = jax.jit(jax.vmap(score_fn, in_axes=(None, 0)))(params, x)
    fisher = float(0.5 * jnp.mean(jnp.sum((learned_scores - exact_scores) ** 2, axis=1)))
    reference = float(0.5 * jnp.mean(jnp.sum(exact_scores**2, axis=1)))
    # sample quality: ULA on the learned score from a broad Gaussian
    reference_samples = target.sample(key_ref, cfg.num_chains)
    spread = jnp.std(reference_samples, axis=0)
    x0 = jnp.mean(reference_samples, axis=0) + spread * jax.random.normal(
        key_x0, (cfg.num_chains, dim)
    )
    step_size = cfg.langevin_step_fraction * scale**2
    samples = langevin_samples(
        params, key_chain, x0, step_size, score_fn=score_fn, num_steps=cfg.langevin_steps
    )
    finite = np.all(np.isfinite(np.asarray(samples)), axis=1)
    mmd = float(metrics.mmd(samples[finite], reference_samples)) if finite.sum() > 1 else np.nan
    floor = noise_floor(target_name, cfg.num_chains, cfg.seed)
    row = {
        "target": target_name,
        "D": dim,
        "model": model_kind,
        "objective": objective,
        "fisher": fisher,
        "relative_fisher": fisher / reference,
        "mmd": mmd,
        "mmd_floor": floor,
        "nonfinite_chains": int((~finite).sum()),
        "final_loss": final_loss,
        "train_s": seconds,
    }
    return row, (score_fn, params), samples


def cost_row(cfg, dim, objective):
    """Seconds per jitted train step and the compiled step's memory, for an MLP score net."""
    model, score_fn = make_model("score", tuple(cfg.hidden))
    params = model.init(jax.random.key(0), jnp.zeros(dim))
    kwargs = {"sigma": cfg.dsm_sigma} if objective == "dsm" else {}
    optimizer = optax.adam(cfg.learning_rate)
    step = jax.jit(
        make_train_step(partial(LOSSES[objective], score_fn=score_fn, **kwargs), optimizer)
    )
    state = init_train_state(params, optimizer)
    key = jax.random.key(1)
    batch = jax.random.normal(jax.random.key(2), (cfg.cost_batch_size, dim))
    with Timer() as compile_timer:
        compiled = step.lower(state, key, batch).compile()
    memory = compiled.memory_analysis()
    total = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )
    jax.block_until_ready(compiled(state, key, batch))  # warm-up
    times = []  # at least two repeats, at most cost_repeats or until 5 s are spent
    while len(times) < max(2, cfg.cost_repeats) and (len(times) < 2 or sum(times) < 5.0):
        with Timer() as timer:
            jax.block_until_ready(compiled(state, key, batch))
        times.append(timer.seconds)
    return {
        "D": dim,
        "objective": objective,
        "ms_per_step": 1e3 * float(np.median(times)),
        "memory_mb": total / 2**20,
        "temp_mb": memory.temp_size_in_bytes / 2**20,
        "compile_s": compile_timer.seconds,
    }


def terms_row(name, score_fn, x):
    """Batch means of the two terms of J at the data: tr grad s and 1/2 |s|^2."""
    div = jax.jit(jax.vmap(divergence(lambda _, y: score_fn(y)), in_axes=(None, 0)))(None, x)
    half_sq = 0.5 * jnp.sum(jax.vmap(score_fn)(x) ** 2, axis=1)
    return {
        "score": name,
        "mean_divergence": float(jnp.mean(div)),
        "mean_half_sq_norm": float(jnp.mean(half_sq)),
        "J": float(jnp.mean(div + half_sq)),
    }


def picture(cfg, out, models, key):
    """Divergence and magnitude of the true and learned score fields on a 2-D target."""
    target, _ = make_target(cfg.picture_target)
    lim = 3.5
    xs, ys, grid = plot.grid_2d(lim, 120)
    fields = {"exact": target.score}
    for objective in cfg.objectives:
        if (cfg.picture_target, "score", objective) in models:
            score_fn, params = models[(cfg.picture_target, "score", objective)]
            fields[objective] = partial(score_fn, params)
    x = target.sample(key, 2000)
    rows = []
    fig, axes = plt.subplots(2, len(fields), figsize=(3.2 * len(fields), 6.2), squeeze=False)
    for j, (name, field) in enumerate(fields.items()):
        div_fn = divergence(lambda _, y, f=field: f(y))
        div = jax.jit(jax.vmap(div_fn, in_axes=(None, 0)))(None, grid)
        norm = jnp.linalg.norm(jax.vmap(field)(grid), axis=1)
        div = np.asarray(div).reshape(xs.shape)
        bound = np.nanpercentile(np.abs(div), 98)
        image = axes[0, j].contourf(xs, ys, div, levels=30, cmap="RdBu_r", vmin=-bound, vmax=bound)
        fig.colorbar(image, ax=axes[0, j], shrink=0.8)
        axes[0, j].set_title(f"{name}: div s (blue = sink)")
        image = axes[1, j].contourf(xs, ys, np.asarray(norm).reshape(xs.shape), levels=30)
        fig.colorbar(image, ax=axes[1, j], shrink=0.8)
        axes[1, j].set_title(f"{name}: |s|")
        for ax in axes[:, j]:
            ax.scatter(x[:300, 0], x[:300, 1], s=1, c="k", alpha=0.3)
            ax.set_aspect("equal")
        rows.append(terms_row(name, field, x))
    plot.save(fig, out / "divergence_magnitude.png")
    return rows


def main(cfg: Config) -> dict:
    out = output_dir(cfg)
    key = jax.random.key(cfg.seed)
    key_acc, key_pic = jax.random.split(key)

    # (a) accuracy
    runs = [(t, "score", o) for t in cfg.targets for o in cfg.objectives]
    runs += [(t, "energy", o) for t in cfg.energy_targets for o in cfg.objectives]
    accuracy, models, all_samples = [], {}, {}
    for i, (target_name, model_kind, objective) in enumerate(tqdm(runs, desc="(a) accuracy")):
        row, model, samples = accuracy_row(
            cfg, jax.random.fold_in(key_acc, i), target_name, objective, model_kind
        )
        accuracy.append(row)
        models[(target_name, model_kind, objective)] = model
        all_samples[(target_name, model_kind, objective)] = samples

    # (b) cost
    cost = [
        cost_row(cfg, dim, objective)
        for dim in tqdm(cfg.cost_dims, desc="(b) cost")
        for objective in cfg.objectives
    ]

    # (c) the two terms
    terms = picture(cfg, out, models, key_pic) if cfg.picture_target in cfg.targets else []

    # figures: samples on the 2-D targets, and the log-log cost plot
    flat = [t for t in cfg.targets if not t.startswith("mixture")]
    if flat:
        fig, axes = plt.subplots(
            len(flat), len(cfg.objectives), figsize=(3 * len(cfg.objectives), 3 * len(flat)),
            squeeze=False,
        )  # fmt: skip
        for r, target_name in enumerate(flat):
            target, _ = make_target(target_name)
            ref = target.sample(jax.random.key(0), 500)
            for c, objective in enumerate(cfg.objectives):
                samples = all_samples[(target_name, "score", objective)]
                plot.samples(axes[r, c], samples, data=ref, lim=4.0)
                axes[r, c].set_title(f"{target_name}: {objective}", fontsize=9)
        plot.save(fig, out / "samples.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for objective in cfg.objectives:
        rows = [r for r in cost if r["objective"] == objective]
        dims = [r["D"] for r in rows]
        axes[0].loglog(dims, [r["ms_per_step"] for r in rows], "o-", label=objective)
        axes[1].loglog(dims, [r["memory_mb"] for r in rows], "o-", label=objective)
    axes[0].set(xlabel="dimension D", ylabel="ms per train step", title="time per step")
    axes[1].set(xlabel="dimension D", ylabel="MiB (compiled step)", title="memory per step")
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    plot.save(fig, out / "cost_loglog.png")

    acc_cols = ["target", "D", "model", "objective", "fisher", "relative_fisher", "mmd",
                "mmd_floor", "nonfinite_chains", "train_s"]  # fmt: skip
    cost_cols = ["D", "objective", "ms_per_step", "memory_mb", "temp_mb", "compile_s"]
    tables = "## (a) accuracy\n\n" + markdown_table(accuracy, acc_cols)
    tables += f"\n## (b) cost (MLP score net, batch {cfg.cost_batch_size}, "
    tables += f"hidden {tuple(cfg.hidden)})\n\n" + markdown_table(cost, cost_cols)
    if terms:
        tables += f"\n## (c) the two terms of J at the data ({cfg.picture_target})\n\n"
        tables += markdown_table(terms)
    (out / "tables.md").write_text(tables)
    result = {
        "config": dataclasses.asdict(cfg),
        "accuracy": accuracy,
        "cost": cost,
        "terms": terms,
    }
    write_json(out / "results.json", result)
    print(tables)
    return result


if __name__ == "__main__":
    main(parse_config(Config, SMOKE))
