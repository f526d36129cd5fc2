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

``main`` returns the three tables; ``report`` writes tables.md, metrics.json and the figures
into results/score_matching/ (results/smoke/score_matching/ with --smoke).
Run ``python -m experiments.score_matching`` (``--smoke`` for the test-sized run).
"""

import dataclasses
from functools import cache, partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from jax.tree_util import Partial
from tqdm.auto import tqdm

from experiments.common import (
    Timer,
    jit_mmd,
    markdown_table,
    mmd_noise_floor,
    output_dir,
    parse_config,
    write_metrics,
)
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
    "cost_dims": (2,),
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


def noised_score_fn(target, sigma: float) -> Partial:
    """The exact score of q_sigma, the target convolved with N(0, sigma^2 I) (sigma = 0:
    the target's own score): closed form for mixtures, quadrature for rings.

    A ``jax.tree_util.Partial`` with arrays of fixed types, so jitted functions take it as
    data; a mixture's clean and noised scores have the same form (diagonal scales), so they
    share one compiled program."""
    if isinstance(target, GaussianMixture):
        scales = jnp.asarray(target.scales)
        if scales.ndim == 1:  # isotropic (K,) as diagonal (K, D): the same mixture
            scales = jnp.broadcast_to(scales[:, None], target.means.shape)
        mixture = target._replace(scales=scales)
        return _strong(Partial(GaussianMixture.score, mixture.noised(sigma) if sigma else mixture))
    if not sigma:
        return _strong(Partial(type(target).score, target))
    lim = float(jnp.max(target.radii)) + 6 * float(target.scale) + 6 * sigma
    return Partial(quadrature_noised_score(target.log_prob, sigma, lim))


def _strong(tree):
    """``tree`` with every array of a fixed (not weak) type, so that jitted functions see
    the same types whatever Python numbers built it."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.result_type(a)), tree)


@partial(jax.jit, static_argnames="n")
def draw(target, key, n: int):
    """``target.sample(key, n)``, compiled once per kind of target and shape."""
    return target.sample(key, n)


@partial(jax.jit, static_argnames=("score_fn", "num_eval", "num_chains", "num_steps"))
def evaluate(params, target, exact_score, noise, step_size, keys, *, score_fn, num_eval,
             num_chains, num_steps):  # fmt: skip
    """The Fisher divergence and ULA's samples for one trained model, in one program.

    Fisher: (1/2 E|s_theta - s*|^2, 1/2 E|s*|^2) on ``num_eval`` samples of the target
    convolved with N(0, noise^2 I) (noise 0 for the objectives that learn the clean score),
    ``exact_score`` that of the same law (mapped in chunks: the quadrature score is wide).
    Samples: one ULA sample per chain under the learned score, from a broad Gaussian with
    the mean and per-axis spread of ``num_chains`` exact samples, which are the MMD's
    reference; the MMD over all chains (finite ones only are scored outside when a chain
    diverged).
    """
    key_eval, key_noise, key_chain, key_x0, key_ref = keys
    x = target.sample(key_eval, num_eval)
    x = x + noise * jax.random.normal(key_noise, x.shape)
    exact_scores = jax.lax.map(exact_score, x, batch_size=50)
    learned_scores = jax.vmap(score_fn, in_axes=(None, 0))(params, x)
    fisher = 0.5 * jnp.mean(jnp.sum((learned_scores - exact_scores) ** 2, axis=1))
    reference_fisher = 0.5 * jnp.mean(jnp.sum(exact_scores**2, axis=1))
    reference = target.sample(key_ref, num_chains)
    spread = jnp.std(reference, axis=0)
    x0 = jnp.mean(reference, axis=0) + spread * jax.random.normal(key_x0, reference.shape)
    sampler = ula(partial(score_fn, params), step_size)
    samples = run_chains(key_chain, sampler, x0, num_steps, warn=False).state.x
    return fisher, reference_fisher, samples, reference, metrics.mmd(samples, reference)


@cache
def make_model(model_kind: str, hidden: tuple):
    """(jitted ``init(key, x)``, score_fn(params, x)); cached so that jitted functions of the
    model compile once per model."""
    if model_kind == "score":
        model = nets.MLPScore(hidden)
        return jax.jit(model.init), nets.apply_fn(model)
    model = nets.MLPEnergy(hidden)
    return jax.jit(model.init), score_from_energy(nets.apply_fn(model))


@cache
def noise_floor(target_name: str, n: int, seed: int) -> tuple[float, float]:
    """(mean, standard error) of the MMD between two exact samples of size n over 5 repeats
    (``common.mmd_noise_floor``), per target."""
    target, _ = make_target(target_name)
    return mmd_noise_floor(jax.random.key(seed), target.sample, n, 5, f"MMD floor {target_name}")


def train(cfg, key, target, dim, objective, model_kind):
    """Train one objective; returns (score_fn(params, x), params, seconds, final loss)."""
    high = dim > 2
    batch_size = cfg.high_dim_batch_size if high else cfg.batch_size
    num_steps = cfg.high_dim_num_steps if high else cfg.num_steps
    init, score_fn = make_model(model_kind, tuple(cfg.hidden))
    key_init, key_fit = jax.random.split(key)
    params = init(key_init, jnp.zeros(dim))
    kwargs = {"sigma": cfg.dsm_sigma} if objective == "dsm" else {}
    optimizer = optax.adam(cfg.learning_rate)
    step = make_train_step(partial(LOSSES[objective], score_fn=score_fn, **kwargs), optimizer)
    key_data, key_fit = jax.random.split(key_fit)
    batch_fn = minibatches(draw(target, key_data, cfg.num_train), batch_size)
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
    # DSM learns the noised score: compare there, on samples of q_sigma
    noise = cfg.dsm_sigma if objective == "dsm" else 0.0
    fisher, reference, samples, reference_samples, mmd = evaluate(
        params, target, noised_score_fn(target, noise), noise,
        cfg.langevin_step_fraction * scale**2, (key_eval, key_noise, key_chain, key_x0, key_ref),
        score_fn=score_fn, num_eval=cfg.num_eval, num_chains=cfg.num_chains,
        num_steps=cfg.langevin_steps,
    )  # fmt: skip
    fisher, reference = float(fisher), float(reference)
    finite = np.all(np.isfinite(np.asarray(samples)), axis=1)
    if not finite.all():  # score the chains that stayed finite
        mmd = jit_mmd(samples[finite], reference_samples) if finite.sum() > 1 else np.nan
    mmd = float(mmd)
    floor, floor_se = noise_floor(target_name, cfg.num_chains, cfg.seed)
    row = {
        "target": target_name,
        "D": dim,
        "model": model_kind,
        "objective": objective,
        "fisher": fisher,
        "relative_fisher": fisher / reference,
        "mmd": mmd,
        "mmd_floor": floor,
        "mmd_floor_se": floor_se,
        "nonfinite_chains": int((~finite).sum()),
        "final_loss": final_loss,
        "train_s": seconds,
    }
    return row, (score_fn, params), samples


def cost_row(cfg, dim, objective):
    """Seconds per jitted train step and the compiled step's memory, for an MLP score net."""
    init, score_fn = make_model("score", tuple(cfg.hidden))
    params = init(jax.random.key(0), jnp.zeros(dim))
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


def terms_row(name, div, score):
    """Batch means of the two terms of J at the data: tr grad s and 1/2 |s|^2, from the
    divergence ``div`` (N,) and the score ``score`` (N, D) at the data points."""
    half_sq = 0.5 * jnp.sum(score**2, axis=1)
    return {
        "score": name,
        "mean_divergence": float(jnp.mean(div)),
        "mean_half_sq_norm": float(jnp.mean(half_sq)),
        "J": float(jnp.mean(div + half_sq)),
    }


@jax.jit
def divergence_and_score(field, points):
    """tr grad s and s at each point, for a score field ``field`` given as a pytree function
    (a jax ``Partial``), so fields of the same form share one program."""
    div_fn = divergence(lambda _, y: field(y))
    return jax.vmap(div_fn, in_axes=(None, 0))(None, points), jax.vmap(field)(points)


def picture(cfg, models, key):
    """Divergence and magnitude of the true and learned score fields on a 2-D target.

    Returns the rows of the two terms of J at the data, the fields' divergence and norm on
    a grid over [-3.5, 3.5]^2 and the data points drawn over them."""
    target, _ = make_target(cfg.picture_target)
    _, _, grid = plot.grid_2d(PICTURE_LIM, PICTURE_POINTS)
    fields = {"exact": Partial(type(target).score, target)}
    for objective in cfg.objectives:
        if (cfg.picture_target, "score", objective) in models:
            score_fn, params = models[(cfg.picture_target, "score", objective)]
            fields[objective] = Partial(score_fn, params)
    x = draw(target, key, 2000)
    points = jnp.concatenate([grid, x])  # one compiled divergence per field serves both
    num_grid = grid.shape[0]
    rows, divergences, norms = [], {}, {}
    for name, field in fields.items():
        div, score = divergence_and_score(field, points)
        norm = jnp.linalg.norm(score[:num_grid], axis=1)
        divergences[name] = np.asarray(div[:num_grid]).reshape(PICTURE_POINTS, PICTURE_POINTS)
        norms[name] = np.asarray(norm).reshape(PICTURE_POINTS, PICTURE_POINTS)
        rows.append(terms_row(name, div[num_grid:], score[num_grid:]))
    return rows, {"divergence": divergences, "norm": norms, "data": np.asarray(x[:300])}


PICTURE_LIM, PICTURE_POINTS = 3.5, 120


def picture_figure(path, fields):
    names = list(fields["divergence"])
    xs, ys, _ = plot.grid_2d(PICTURE_LIM, PICTURE_POINTS)
    x = fields["data"]
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6.2), squeeze=False)
    for j, name in enumerate(names):
        div = fields["divergence"][name]
        bound = np.nanpercentile(np.abs(div), 98)
        image = axes[0, j].contourf(xs, ys, div, levels=30, cmap="RdBu_r", vmin=-bound, vmax=bound)
        fig.colorbar(image, ax=axes[0, j], shrink=0.8)
        axes[0, j].set_title(f"{name}: div s (blue = sink)")
        image = axes[1, j].contourf(xs, ys, fields["norm"][name], levels=30)
        fig.colorbar(image, ax=axes[1, j], shrink=0.8)
        axes[1, j].set_title(f"{name}: |s|")
        for ax in axes[:, j]:
            ax.scatter(x[:, 0], x[:, 1], s=1, c="k", alpha=0.3)
            ax.set_aspect("equal")
    plot.save(fig, path)


def main(cfg: Config) -> dict:
    """(a) accuracy, (b) cost and (c) the two terms.

    Returns ``accuracy`` (one row per target, model and objective), ``cost`` (one row per
    dimension and objective), ``terms`` (one row per score field; empty when the picture's
    target is not among ``targets``), ``config``, and under ``arrays`` the ULA samples on
    the 2-D targets with exact samples beside them, and the divergence and magnitude
    fields of the picture.
    """
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
    terms, fields = [], None
    if cfg.picture_target in cfg.targets:
        with Timer("(c) the two terms"):
            terms, fields = picture(cfg, models, key_pic)

    samples = {}  # the 2-D targets' ULA samples, and exact samples to show beside them
    for target_name in (t for t in cfg.targets if not t.startswith("mixture")):
        target, _ = make_target(target_name)
        samples[target_name] = {
            "reference": np.asarray(draw(target, jax.random.key(0), 500)),
            **{o: np.asarray(all_samples[(target_name, "score", o)]) for o in cfg.objectives},
        }
    return {
        "config": dataclasses.asdict(cfg),
        "accuracy": accuracy,
        "cost": cost,
        "terms": terms,
        "arrays": {"samples": samples, "fields": fields},
    }


def report(results: dict, cfg: Config) -> None:
    """Write tables.md, metrics.json, samples.png (when a 2-D target ran), cost_loglog.png
    and divergence_magnitude.png (when the picture's target ran); print the tables."""
    out = output_dir(cfg)
    accuracy, cost, terms = results["accuracy"], results["cost"], results["terms"]
    arrays = results["arrays"]
    if arrays["fields"] is not None:
        picture_figure(out / "divergence_magnitude.png", arrays["fields"])

    # figures: samples on the 2-D targets, and the log-log cost plot
    flat = list(arrays["samples"])
    if flat:
        fig, axes = plt.subplots(
            len(flat), len(cfg.objectives), figsize=(3 * len(cfg.objectives), 3 * len(flat)),
            squeeze=False,
        )  # fmt: skip
        for r, target_name in enumerate(flat):
            shown = arrays["samples"][target_name]
            for c, objective in enumerate(cfg.objectives):
                plot.samples(axes[r, c], shown[objective], data=shown["reference"], lim=4.0)
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
    write_metrics(out, results)
    print(tables)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
