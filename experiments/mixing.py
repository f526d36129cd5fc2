"""Mixing across energy barriers: ULA, MALA, HMC and parallel tempering.

Part 1, double well E(x) = ΔE (x_1^2 - 1)^2 + 1/2 x_2^2 with ΔE = 1..8: the rate at which
each sampler's chain switches between the wells per 1000 gradient evaluations (a switch is
a passage from x_1 < -1/2 to x_1 > 1/2 or back). Local samplers cross by diffusion over
the saddle, at Kramers' rate ∝ exp(-ΔE); parallel tempering crosses in its hot replicas
and passes the crossings down, so its cold chain switches at a rate flat in ΔE.

Part 2, the unequal two-mode mixture 0.2 N((-5,-5), I) + 0.8 N((5,5), I) (Song & Ermon
2019, Section 3.2): chains start uniform on [-8, 8]^2 and run for a fixed budget of
gradient evaluations; the weight each sampler puts on the light mode against the truth 0.2.

Budgets count gradient evaluations per chain: ULA and MALA use one per step, HMC one per
leapfrog step, PT 2 per replica per step (the kernel's step and its re-initialisation
after the swaps). Step sizes of MALA and HMC are tuned per barrier by dual averaging
(Hoffman & Gelman 2014) toward 0.574 and 0.651; ULA uses a fixed small step.

``main`` returns the rates, weights and tables; ``report`` writes metrics.json, table.md and
the figures into results/mixing/ (results/smoke/mixing/ with --smoke).

    python -m experiments.mixing            # ~2-4 minutes on 2 CPU cores
    python -m experiments.mixing --smoke    # seconds, for the tests
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

import scorejax as sj
from experiments.common import Timer, markdown_table, output_dir, parse_config, write_metrics
from scorejax.samplers import (
    HMC_TARGET_ACCEPTANCE,
    MALA_TARGET_ACCEPTANCE,
    adapt_step_size_chains,
    geometric_temperatures,
    hmc,
    mala,
    parallel_tempering,
    run_chains,
    ula,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Mode-switching rates on a double well and mode weights on an unequal mixture."""

    barriers: tuple = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
    num_chains: int = 32
    budget: int = 24_000  # gradient evaluations per chain
    warmup_steps: int = 500
    ula_step_size: float = 0.01
    initial_step_size: float = 0.05
    num_leapfrog_steps: int = 5
    num_replicas: int = 6
    max_temperature: float = 10.0
    mixture_budget: int = 24_000
    mixture_step_size: float = 0.3
    mixture_replicas: int = 8
    mixture_max_temperature: float = 60.0
    seed: int = 0
    out_dir: str = "results/mixing"


SMOKE = dict(
    barriers=(1.0, 4.0),
    num_chains=4,
    budget=1200,
    warmup_steps=60,
    num_replicas=3,
    mixture_budget=1200,
    mixture_replicas=3,
)

SAMPLERS = ("ULA", "MALA", "HMC", "PT")


def count_switches(x1: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Passages between x_1 < -threshold and x_1 > threshold along the last axis.

    The chain is labelled by the last well it visited beyond +-threshold (hysteresis, so
    jitter on the saddle does not count); returns the number of label changes per chain.
    """
    label = np.where(x1 > threshold, 1, np.where(x1 < -threshold, -1, 0))
    idx = np.where(label != 0, np.arange(label.shape[-1]), 0)
    idx = np.maximum.accumulate(idx, axis=-1)
    filled = np.take_along_axis(label, idx, axis=-1)
    filled = np.where(filled == 0, np.nan, filled)  # before the first visit
    changes = (filled[..., 1:] != filled[..., :-1]) & ~np.isnan(filled[..., :-1])
    return changes.sum(axis=-1)


def _steps(budget, name, num_leapfrog_steps, num_replicas):
    """Steps per chain that fit a budget of gradient evaluations, and the cost of a step."""
    per_step = {"ULA": 1, "MALA": 1, "HMC": num_leapfrog_steps, "PT": 2 * num_replicas}[name]
    return max(budget // per_step, 2), per_step


def _well(barrier):
    return partial(sj.DoubleWell.energy, sj.DoubleWell(barrier))


def double_well(cfg, key):
    """Switch counts (barriers, chains) and the exposure of each sampler on the double well."""
    barriers = jnp.asarray(cfg.barriers, jnp.float32)
    num_barriers = barriers.shape[0]
    key_adapt, key_run = jax.random.split(key)
    # start every chain in its own well at equilibrium, half of them in each
    x0 = jnp.stack([jnp.ones(cfg.num_chains), jnp.zeros(cfg.num_chains)], axis=1)
    x0 = x0 * jnp.where(jnp.arange(cfg.num_chains) % 2 == 0, 1.0, -1.0)[:, None]

    def adapt(make, target):
        def one(barrier, key):
            warm = adapt_step_size_chains(
                key, make(_well(barrier), 1.0), x0, cfg.warmup_steps,
                initial_step_size=cfg.initial_step_size, target_acceptance=target,
            )  # fmt: skip
            return warm.step_size

        keys = jax.random.split(key_adapt, num_barriers)
        return jax.jit(jax.vmap(one))(barriers, keys)

    make_mala = lambda e, h: mala(e, h)
    make_hmc = lambda e, h: hmc(e, h, cfg.num_leapfrog_steps)
    mala_h = adapt(make_mala, MALA_TARGET_ACCEPTANCE)
    hmc_h = adapt(make_hmc, HMC_TARGET_ACCEPTANCE)
    temps = geometric_temperatures(cfg.num_replicas, cfg.max_temperature)

    def make_ula(e, h):
        return ula(lambda x: -jax.grad(e)(x), h)

    def make_pt(e, h):
        return parallel_tempering(e, lambda et, t: mala(et, h * t), temps)

    jobs = {
        "ULA": (make_ula, jnp.full(num_barriers, cfg.ula_step_size), x0),
        "MALA": (make_mala, mala_h, x0),
        "HMC": (make_hmc, hmc_h, x0),
        "PT": (make_pt, mala_h, jnp.broadcast_to(x0[:, None], (cfg.num_chains, *temps.shape, 2))),
    }
    out = {"step_size": {"ULA": cfg.ula_step_size, "MALA": mala_h, "HMC": hmc_h}}
    for name in tqdm(SAMPLERS, desc="double well"):
        make, step_sizes, start = jobs[name]
        num_steps, per_step = _steps(cfg.budget, name, cfg.num_leapfrog_steps, cfg.num_replicas)

        def one(barrier, h, key, make=make, start=start, num_steps=num_steps, name=name):
            result = run_chains(key, make(_well(barrier), h), start, num_steps, thin=1)
            x1 = result.trace.x[:, :, 0, 0] if name == "PT" else result.trace.x[:, :, 0]
            return x1, jnp.mean(result.info.num_nonfinite)

        keys = jax.random.split(jax.random.fold_in(key_run, SAMPLERS.index(name)), num_barriers)
        x1, nonfinite = jax.jit(jax.vmap(one))(barriers, step_sizes, keys)
        x1 = np.asarray(x1)
        out[name] = {
            "switches": count_switches(x1),  # (barriers, chains)
            "gradient_evaluations": num_steps * per_step,
            "nonfinite": np.asarray(nonfinite),
            "trace": x1[:, 0],  # first chain per barrier, for the figure
            "per_step": per_step,
        }
    return out


def mixture_weights(cfg, key):
    """Weight on the light mode per sampler after ``mixture_budget`` gradient evaluations."""
    target = sj.data.unequal_mixture()
    energy_fn = partial(sj.GaussianMixture.energy, target)
    key_x0, key_run = jax.random.split(key)
    x0 = jax.random.uniform(key_x0, (cfg.num_chains, 2), minval=-8.0, maxval=8.0)
    h = cfg.mixture_step_size
    temps = geometric_temperatures(cfg.mixture_replicas, cfg.mixture_max_temperature)
    samplers = {
        "ULA": (ula(lambda x: -jax.grad(energy_fn)(x), h), x0),
        "MALA": (mala(energy_fn, h), x0),
        "HMC": (hmc(energy_fn, h, cfg.num_leapfrog_steps), x0),
        "PT": (
            parallel_tempering(energy_fn, lambda e, t: mala(e, h * t), temps),
            jnp.broadcast_to(x0[:, None], (cfg.num_chains, temps.shape[0], 2)),
        ),
    }
    out = {}
    for i, name in enumerate(tqdm(SAMPLERS, desc="mixture")):
        sampler, start = samplers[name]
        num_steps, _ = _steps(
            cfg.mixture_budget, name, cfg.num_leapfrog_steps, cfg.mixture_replicas
        )
        result = run_chains(jax.random.fold_in(key_run, i), sampler, start, num_steps, thin=1)
        x = result.trace.x[:, :, 0] if name == "PT" else result.trace.x
        x = x[:, num_steps // 2 :].reshape(-1, 2)  # second half of every chain
        weights = np.asarray(sj.metrics.mode_weights(x, target.means))
        out[name] = {"light_weight": float(weights[0]), "heavy_weight": float(weights[1])}
        out[name]["swap_rate"] = (
            np.asarray(result.info.swap_rate).mean(axis=0) if name == "PT" else None
        )
    return out


def _rate_table(cfg, dw):
    rows, rates = [], {}
    barriers = np.asarray(cfg.barriers)
    for name in SAMPLERS:
        switches = dw[name]["switches"].sum(axis=1)
        exposure = cfg.num_chains * dw[name]["gradient_evaluations"] / 1000.0
        rates[name] = switches / exposure
        # slope of log rate against ΔE over the barriers with at least one switch
        seen = switches > 0
        slope = (
            np.polyfit(barriers[seen], np.log(rates[name][seen]), 1)[0]
            if seen.sum() > 1
            else np.nan
        )
        row = {"sampler": name, "slope d log rate / d ΔE": float(slope)}
        row |= {f"ΔE={b:g}": float(r) for b, r in zip(barriers, rates[name], strict=True)}
        rows.append(row)
    return rows, rates


def _figures(cfg, out, results):
    barriers = np.asarray(cfg.barriers)
    rates = {n: np.asarray(r) for n, r in results["switching_rate_per_1000_gradients"].items()}
    arrays, mix = results["arrays"], results["mixture_mode_weights"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in SAMPLERS:
        r = np.where(rates[name] > 0, rates[name], np.nan)
        ax.semilogy(barriers, r, "o-", label=name)
    ref = rates["MALA"][0] * np.exp(-(barriers - barriers[0]))
    ax.semilogy(barriers, ref, "k--", lw=1, label=r"$\propto e^{-\Delta E}$")
    ax.set_xlabel(r"barrier $\Delta E$")
    ax.set_ylabel("well switches per 1000 gradient evaluations")
    ax.legend()
    sj.plot.save(fig, out / "switching_rate.png")

    b = len(barriers) - 1
    fig, axes = plt.subplots(len(SAMPLERS), 1, figsize=(7, 6), sharex=True, sharey=True)
    for ax, name in zip(axes, SAMPLERS, strict=True):
        trace = arrays["trace"][name][b]
        grads = np.arange(1, trace.size + 1) * arrays["gradients_per_step"][name]
        ax.plot(grads, trace, lw=0.5)
        ax.set_ylabel(f"{name}\n$x_1$")
    axes[-1].set_xlabel("gradient evaluations")
    axes[0].set_title(rf"double well, $\Delta E$ = {barriers[b]:g} (cold chain for PT)")
    sj.plot.save(fig, out / "trajectories.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = ["exact", *SAMPLERS]
    light = [0.2] + [mix[n]["light_weight"] for n in SAMPLERS]
    ax.bar(names, light, color=["0.5", "C0", "C1", "C2", "C3"])
    ax.axhline(0.2, color="k", ls="--", lw=1)
    ax.set_ylabel("weight of the light mode (truth 0.2)")
    sj.plot.save(fig, out / "mode_weights.png")


def main(cfg: Config) -> dict:
    """Run every sampler on every barrier and on the unequal mixture.

    Returns the switching rates, switch counts, slopes, adapted step sizes, non-finite
    counts, the mixture's mode weights and the run time (what metrics.json holds), the two
    tables (``tables``) and, under ``arrays``, the first chain's x_1 trace per barrier and
    the gradient evaluations per step of each sampler (for the figures).
    """
    key = jax.random.key(cfg.seed)
    key_dw, key_mix = jax.random.split(key)
    with Timer() as timer:
        with Timer("double well"):
            dw = double_well(cfg, key_dw)
        with Timer("unequal mixture"):
            mix = mixture_weights(cfg, key_mix)
    rate_rows, rates = _rate_table(cfg, dw)
    mix_rows = [{"sampler": "exact", "light mode": 0.2, "heavy mode": 0.8}]
    mix_rows += [
        {"sampler": n, "light mode": mix[n]["light_weight"], "heavy mode": mix[n]["heavy_weight"]}
        for n in SAMPLERS
    ]
    return {
        "config": dataclasses.asdict(cfg),
        "switching_rate_per_1000_gradients": {n: rates[n] for n in SAMPLERS},
        "switch_counts": {n: dw[n]["switches"].sum(axis=1) for n in SAMPLERS},
        "slope_log_rate_vs_barrier": {
            r["sampler"]: r["slope d log rate / d ΔE"] for r in rate_rows
        },
        "adapted_step_size": dw["step_size"],
        "nonfinite": {n: dw[n]["nonfinite"] for n in SAMPLERS},
        "mixture_mode_weights": {n: mix[n] for n in SAMPLERS},
        "seconds": timer.seconds,
        "tables": {"switching_rate": rate_rows, "mixture_mode_weights": mix_rows},
        "arrays": {
            "trace": {n: dw[n]["trace"] for n in SAMPLERS},
            "gradients_per_step": {n: dw[n]["per_step"] for n in SAMPLERS},
        },
    }


def report(results: dict, cfg: Config) -> None:
    """Write metrics.json, table.md and the three figures; print the tables."""
    out = output_dir(cfg)
    _figures(cfg, out, results)
    write_metrics(out, results)
    text = (
        "## Well switches per 1000 gradient evaluations (double well)\n\n"
        + markdown_table(results["tables"]["switching_rate"])
        + "\n## Mode weights on the unequal mixture (fixed budget)\n\n"
        + markdown_table(results["tables"]["mixture_mode_weights"], fmt="{:.3f}")
    )
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
