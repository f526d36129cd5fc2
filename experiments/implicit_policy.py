"""Implicit behavioural cloning (Florence et al. 2021) against an explicit MSE policy on a
multimodal 2-D control task.

Task (``scorejax.policy``): a velocity-controlled point starts near (-1.5, 0) and must reach
the goal (1.5, 0) past a round obstacle of radius 0.5 at the origin; the expert passes it
above or below with probability 1/2 each, so its first action is bimodal and the mean of the
two modes heads into the obstacle. Per training seed: ``num_demonstrations`` expert episodes;
an energy E(o, a) (``nets.MLPEnergy`` on [o, a]) trained with the InfoNCE loss over uniform
counter-examples (their Eq. 1) and an explicit policy a = f(o) (``nets.MLP``, the same
widths) trained by mean squared error, with the same optimiser, steps, batches and seed. The
implicit policy acts by derivative-free optimisation (their Algorithm 1) and by Langevin
dynamics over E(o, ·). ``main`` returns per seed and policy the success rate over
``num_eval_episodes`` episodes, the collision rate and the fraction of first actions that lie
between the expert's two modes, and their mean ± standard error across seeds; ``report``
writes metrics.json, table.md, the energy landscapes over actions at a few states and the
rollouts into results/implicit_policy/.

    python -m experiments.implicit_policy            # defaults, ~5 minutes on 2 CPU cores
    python -m experiments.implicit_policy --smoke    # seconds, for the tests
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import scorejax as sj
from experiments.common import Timer, markdown_table, output_dir, parse_config, write_metrics
from scorejax import nets, policy


@dataclasses.dataclass(frozen=True)
class Config:
    """Implicit (EBM, InfoNCE) against explicit (MSE) behavioural cloning on a 2-D task."""

    seed: int = 0
    num_seeds: int = 5
    num_demonstrations: int = 100  # expert episodes per seed
    hidden: tuple = (64, 64)
    batch_size: int = 128
    num_negatives: int = 64
    num_train_steps: int = 1000
    learning_rate: float = 3e-3
    num_eval_episodes: int = 100  # per seed and policy
    dfo_samples: int = 256
    dfo_iterations: int = 3
    langevin_chains: int = 32
    langevin_steps: int = 40
    langevin_step_size: float = 1e-2
    langevin_final_step_size: float = 1e-4
    energy_grid: int = 61
    num_plotted_rollouts: int = 20
    out_dir: str = "results/implicit_policy"


SMOKE = dict(
    num_seeds=2,
    num_demonstrations=10,
    hidden=(16, 16),
    batch_size=32,
    num_negatives=8,
    num_train_steps=20,
    num_eval_episodes=4,
    dfo_samples=16,
    langevin_chains=4,
    langevin_steps=5,
    energy_grid=9,
    num_plotted_rollouts=2,
)

POLICIES = ("implicit (DFO)", "implicit (Langevin)", "explicit (MSE)")
# states of the energy-landscape figure: the start (two modes), on the upper path, past the
# obstacle, and on the axis in front of it (a state the expert never visits)
PROBE_STATES = ((-1.5, 0.0), (-0.75, 0.4), (0.75, 0.4), (-0.9, 0.0))


def split_rows(rows):
    """(observations, actions) from rows [o, a] of ``minibatches``."""
    return rows[:, :2], rows[:, 2:]


def train(cfg, loss_fn, params, data, key, description):
    """Adam with cosine decay on ``loss_fn`` over minibatches of the demonstrations."""
    optimizer = optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.num_train_steps))
    rows = sj.minibatches(data, cfg.batch_size)
    state, history = sj.fit(
        sj.make_train_step(loss_fn, optimizer),
        sj.init_train_state(params, optimizer),
        key,
        jax.tree_util.Partial(_split_batch, rows),
        num_steps=cfg.num_train_steps,
        steps_per_call=min(500, cfg.num_train_steps),
        description=description,
    )
    return state.params, history["loss"]


def _split_batch(rows, key):
    return split_rows(rows(key))


def policies(cfg, energy_fn, mse_fn):
    """policy_fn(params, key, observation) for each of POLICIES."""
    dfo = partial(
        policy.derivative_free_action,
        num_samples=cfg.dfo_samples,
        num_iterations=cfg.dfo_iterations,
    )
    langevin = partial(
        policy.langevin_action,
        num_chains=cfg.langevin_chains,
        num_steps=cfg.langevin_steps,
        step_size=cfg.langevin_step_size,
        final_step_size=cfg.langevin_final_step_size,
    )
    return {
        POLICIES[0]: lambda params, k, o: dfo(k, o, partial(energy_fn, params)),
        POLICIES[1]: lambda params, k, o: langevin(k, o, partial(energy_fn, params)),
        POLICIES[2]: lambda params, k, o: mse_fn(params, o),
    }


def evaluate(policy_fn, params, keys):
    """Episodes of ``policy_fn`` with ``params``: success, collision and whether the first
    action lies between the expert's modes, per episode, and the trajectories."""
    episodes = jax.vmap(lambda k: policy.rollout(k, partial(policy_fn, params)))(keys)
    collided = jax.vmap(lambda s: jnp.any(jax.vmap(policy.in_obstacle)(s)))(episodes.states)
    between = jax.vmap(policy.between_modes)(episodes.states[:, 0], episodes.actions[:, 0])
    return episodes, collided, between


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for one value) across seeds."""
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else 0.0
    return float(values.mean()), float(se)


def main(cfg: Config) -> dict:
    """Demonstrations, both policies trained per seed, success rates over episodes.

    Returns ``per_seed`` (one row per seed and policy), ``summary`` (one row per policy and
    the expert: mean ± standard error across seeds), ``seconds``, ``config`` and under
    ``arrays`` the energy grids, probe states and rollouts of the first seed for the figures.
    """
    energy_model = nets.MLPEnergy(cfg.hidden)
    energy_fn = policy.state_action_energy(nets.apply_fn(energy_model))
    mse_model = nets.MLP(cfg.hidden, out_dim=2)
    mse_fn = nets.apply_fn(mse_model)
    info_nce = partial(
        policy.info_nce_loss,
        energy_fn=energy_fn,
        num_negatives=cfg.num_negatives,
        action_low=policy.ACTION_LOW,
        action_high=policy.ACTION_HIGH,
    )
    mse = partial(policy.mse_loss, policy_fn=mse_fn)
    acting = policies(cfg, energy_fn, mse_fn)
    # one compiled evaluation per policy, the parameters and keys as data
    evaluators = {name: jax.jit(partial(evaluate, fn)) for name, fn in acting.items()}
    expert_episodes = jax.jit(jax.vmap(lambda k: policy.rollout(k, policy.expert_action)))

    rows, seconds, arrays = [], {}, {}
    for s in range(cfg.num_seeds):
        key_data, key_init, key_train, key_eval = jax.random.split(
            jax.random.fold_in(jax.random.key(cfg.seed), s), 4
        )
        observations, actions = policy.demonstrations(key_data, cfg.num_demonstrations)
        data = jnp.concatenate([observations, actions], axis=1)
        with Timer(f"seed {s}: train") as t_train:
            energy_params, energy_loss = train(
                cfg, info_nce, energy_model.init(key_init, jnp.zeros(4)), data, key_train,
                f"seed {s}: InfoNCE",
            )  # fmt: skip
            mse_params, mse_loss = train(
                cfg, mse, mse_model.init(key_init, jnp.zeros(2)), data, key_train,
                f"seed {s}: MSE",
            )  # fmt: skip
        seconds[f"seed {s}/train"] = t_train.seconds
        keys = jax.random.split(key_eval, cfg.num_eval_episodes)
        expert = expert_episodes(keys)
        rows.append(
            {"seed": s, "policy": "expert", "success": float(np.mean(expert.success)),
             "collision": 0.0, "between_modes_at_start": 0.0}
        )  # fmt: skip
        shown = slice(0, cfg.num_plotted_rollouts)
        trajectories = {"expert": np.asarray(expert.states[shown])}
        for name, evaluator in evaluators.items():
            params = mse_params if name == POLICIES[2] else energy_params
            with Timer(f"seed {s}: {name}") as t_eval:
                episodes, collided, between = jax.block_until_ready(evaluator(params, keys))
            seconds[f"seed {s}/{name}"] = t_eval.seconds
            rows.append(
                {"seed": s, "policy": name, "success": float(np.mean(episodes.success)),
                 "collision": float(np.mean(collided)),
                 "between_modes_at_start": float(np.mean(between))}
            )  # fmt: skip
            trajectories[name] = np.asarray(episodes.states[shown])
        if s == 0:
            arrays = figure_arrays(cfg, energy_fn, energy_params, mse_fn, mse_params)
            arrays |= {"trajectories": trajectories, "energy_loss": energy_loss,
                       "mse_loss": mse_loss}  # fmt: skip
    summary = []
    for name in ("expert", *POLICIES):
        per_seed = [r for r in rows if r["policy"] == name]
        row = {"policy": name, "seeds": len(per_seed)}
        for metric in ("success", "collision", "between_modes_at_start"):
            row[metric], row[f"{metric}_se"] = mean_and_se([r[metric] for r in per_seed])
        summary.append(row)
    return {
        "per_seed": rows,
        "summary": summary,
        "seconds": seconds,
        "config": dataclasses.asdict(cfg),
        "arrays": arrays,
    }


def figure_arrays(cfg, energy_fn, energy_params, mse_fn, mse_params) -> dict:
    """E(o, a) on a grid over the action box at each probe state, with the expert's modes
    and the explicit policy's action there."""
    axis = np.linspace(policy.ACTION_LOW[0], policy.ACTION_HIGH[0], cfg.energy_grid)
    grid = jnp.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    energies, modes, explicit = [], [], []
    for state in PROBE_STATES:
        o = jnp.asarray(state)
        values = jax.vmap(lambda a, o=o: energy_fn(energy_params, o, a))(grid)
        energies.append(np.asarray(values).reshape(cfg.energy_grid, cfg.energy_grid))
        modes.append(np.asarray(policy.expert_modes(o)))
        explicit.append(np.asarray(mse_fn(mse_params, o)))
    return {"energy_axis": axis, "energies": np.stack(energies), "modes": np.stack(modes),
            "explicit_actions": np.stack(explicit)}  # fmt: skip


def report(results: dict, cfg: Config) -> None:
    """Write metrics.json, table.md, energy_landscapes.png and rollouts.png."""
    out = output_dir(cfg)
    write_metrics(out, results)
    rows = [
        {"policy": r["policy"], "seeds": r["seeds"],
         "success": f"{r['success']:.3f} ± {r['success_se']:.3f}",
         "collision": f"{r['collision']:.3f} ± {r['collision_se']:.3f}",
         "between modes at start": f"{r['between_modes_at_start']:.3f} ± "
                                   f"{r['between_modes_at_start_se']:.3f}"}
        for r in results["summary"]
    ]  # fmt: skip
    text = "# Implicit behavioural cloning on the obstacle task\n\n"
    text += (
        f"Mean ± standard error across {cfg.num_seeds} training seeds, "
        f"{cfg.num_eval_episodes} episodes per seed and policy.\n\n"
    )
    text += markdown_table(rows)
    text += "\n## Per seed\n\n" + markdown_table(results["per_seed"])
    (out / "table.md").write_text(text)
    make_figures(out, results["arrays"])
    print(f"wrote {out}/metrics.json, table.md and figures")
    print(text)


def make_figures(out, arrays):
    axis = arrays["energy_axis"]
    extent = (axis[0], axis[-1], axis[0], axis[-1])
    num = len(PROBE_STATES)
    fig, axes = plt.subplots(1, num, figsize=(3.4 * num, 3.4), squeeze=False)
    for ax, state, energy, modes, explicit in zip(
        axes[0], PROBE_STATES, arrays["energies"], arrays["modes"], arrays["explicit_actions"],
        strict=True,
    ):  # fmt: skip
        density = np.exp(-(energy - energy.min()))
        ax.imshow(density, origin="lower", extent=extent, cmap="viridis")
        ax.scatter(*modes.T, marker="x", color="red", s=50, label="expert modes")
        ax.scatter(*explicit, marker="o", color="white", edgecolor="k", s=40, label="MSE")
        ax.set(title=f"exp(-E(o, a)), o = {state}", xlabel="a_x", ylabel="a_y")
        ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    sj.plot.save(fig, out / "energy_landscapes.png")

    names = list(arrays["trajectories"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ax.add_patch(
            plt.Circle(policy.OBSTACLE_CENTER, policy.OBSTACLE_RADIUS, color="0.6", zorder=0)
        )
        ax.add_patch(plt.Circle(policy.GOAL, policy.GOAL_RADIUS, color="green", alpha=0.5))
        for states in arrays["trajectories"][name]:
            ax.plot(states[:, 0], states[:, 1], lw=0.8)
        ax.set(xlim=(-1.8, 1.8), ylim=(-1.1, 1.1), title=name, aspect="equal")
    sj.plot.save(fig, out / "rollouts.png")


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
