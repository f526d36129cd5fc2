"""Ising model: energy per site and |m| across the phase transition, and image denoising.

Part 1: checkerboard Gibbs on an L x L torus and on 4 x 4 at temperatures around Onsager's
T_c = 2 / log(1 + sqrt 2) = 2.269, against the exact 4 x 4 curve (enumeration of 65,536
states) and Onsager's infinite-lattice curve, with MCSE error bars from the ESS.
Part 2: Ising-prior denoising of a binary image corrupted by a binary symmetric channel,
by ICM, annealed Gibbs (MAP) and the posterior-marginal mode (MPM) of Gibbs at beta = 1.

``main`` returns both tables and the curves and pictures; ``report`` writes results.md,
metrics.json and the two figures into results/ising/ (results/smoke/ising/ with --smoke).

    python -m experiments.ising [--smoke] [--lattice-size 32] [--flip-prob 0.15]
"""

import dataclasses

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from experiments.common import Timer, markdown_table, output_dir, parse_config, write_metrics
from scorejax import plot
from scorejax.diagnostics import mcse
from scorejax.ising import (
    Ising,
    annealed_gibbs,
    checkerboard_gibbs,
    critical_beta,
    denoising_posterior,
    flip_noise,
    icm,
    ising_enumerate,
    magnetisation,
    onsager_energy_per_site,
    onsager_magnetisation,
    pixel_error,
)
from scorejax.samplers import run, run_chains


@dataclasses.dataclass(frozen=True)
class Config:
    """Ising phase transition and denoising."""

    lattice_size: int = 16
    temperatures: tuple = (1.5, 1.8, 2.0, 2.15, 2.27, 2.4, 2.6, 3.0, 3.5)
    num_chains: int = 16
    num_sweeps: int = 2000
    burn_in: int = 500
    image_size: int = 64
    flip_prob: float = 0.1
    coupling: float = 1.0
    num_icm_sweeps: int = 20
    num_anneal_sweeps: int = 300
    num_mpm_sweeps: int = 300
    seed: int = 0
    out_dir: str = "results/ising"


SMOKE = dict(
    lattice_size=8,
    temperatures=(1.8, 3.0),
    num_chains=4,
    num_sweeps=60,
    burn_in=10,
    image_size=16,
    num_icm_sweeps=3,
    num_anneal_sweeps=10,
    num_mpm_sweeps=10,
)


def observables(key, sampler, size, beta, cfg):
    """Energy per site and |m| (mean, MCSE) from checkerboard Gibbs at inverse temp. beta."""
    x0 = jnp.ones((cfg.num_chains, size, size))
    betas = jnp.full(cfg.num_sweeps, beta, jnp.float32)  # a schedule: one compile for all T
    result = run_chains(key, sampler, x0, cfg.num_sweeps, schedule=(betas,), thin=1)
    model = Ising(jnp.float32(1.0), jnp.float32(0.0), jnp.float32(beta))
    trace = result.trace.x[:, cfg.burn_in :]
    energy = np.asarray(jax.vmap(jax.vmap(model.energy))(trace)) / size**2
    absm = np.abs(np.asarray(jax.vmap(jax.vmap(magnetisation))(trace)))
    return (
        float(energy.mean()),
        float(mcse(energy)),
        float(absm.mean()),
        float(mcse(absm)),
    )


def phase_transition(key, cfg):
    """One row per temperature (Gibbs on 4 x 4 and L x L, exact 4 x 4, Onsager), and the
    exact 4 x 4 and Onsager curves on a fine grid of temperatures."""
    # one sampler at beta = 1; each temperature is a schedule (data), so one compile per size
    sampler = checkerboard_gibbs(Ising(jnp.float32(1.0), jnp.float32(0.0), jnp.float32(1.0)))
    rows = []
    for temperature in tqdm(cfg.temperatures, desc="temperatures", leave=False):
        beta = 1.0 / temperature
        key, key_small, key_large = jax.random.split(key, 3)
        exact = ising_enumerate(Ising(1.0, 0.0, beta), 4)
        e4, e4_se, m4, m4_se = observables(key_small, sampler, 4, beta, cfg)
        e_l, e_l_se, m_l, m_l_se = observables(key_large, sampler, cfg.lattice_size, beta, cfg)
        rows.append(
            {
                "T": temperature,
                "exact_4x4_e": float(exact.energy_per_site),
                "gibbs_4x4_e": e4,
                "gibbs_4x4_e_mcse": e4_se,
                "z_4x4": (e4 - float(exact.energy_per_site)) / e4_se,
                "exact_4x4_abs_m": float(exact.abs_magnetisation),
                "gibbs_4x4_abs_m": m4,
                "gibbs_4x4_abs_m_mcse": m4_se,
                f"gibbs_{cfg.lattice_size}_e": e_l,
                f"gibbs_{cfg.lattice_size}_e_mcse": e_l_se,
                "onsager_e": float(onsager_energy_per_site(beta)),
                f"gibbs_{cfg.lattice_size}_abs_m": m_l,
                f"gibbs_{cfg.lattice_size}_abs_m_mcse": m_l_se,
                "onsager_abs_m": float(onsager_magnetisation(beta)),
            }
        )

    # exact 4 x 4 and Onsager curves on a fine grid
    grid = np.linspace(min(cfg.temperatures) * 0.9, max(cfg.temperatures) * 1.05, 200)
    exact = jax.vmap(lambda b: ising_enumerate(Ising(1.0, 0.0, b), 4))(jnp.asarray(1.0 / grid))
    curves = {
        "T": grid,
        "exact_4x4_e": np.asarray(exact.energy_per_site),
        "exact_4x4_abs_m": np.asarray(exact.abs_magnetisation),
        "onsager_e": np.asarray(onsager_energy_per_site(1.0 / grid)),
        "onsager_abs_m": np.asarray(onsager_magnetisation(1.0 / grid)),
    }
    return rows, curves


def phase_figure(path, rows, curves, large):
    """Energy per site and <|m|> against T: exact and Onsager curves, Gibbs with 3 MCSE bars."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    temps = np.array([r["T"] for r in rows])
    for ax, name in zip(axes, ("e", "abs_m"), strict=True):
        ax.plot(curves["T"], curves[f"exact_4x4_{name}"], "k-", lw=1,
                label="exact 4x4 (enumeration)")  # fmt: skip
        ax.plot(curves["T"], curves[f"onsager_{name}"], "k--", lw=1,
                label="Onsager (infinite lattice)")  # fmt: skip
        ax.errorbar(temps, [r[f"gibbs_4x4_{name}"] for r in rows],
                    yerr=[3 * r[f"gibbs_4x4_{name}_mcse"] for r in rows],
                    fmt="o", ms=4, label="Gibbs 4x4")  # fmt: skip
        ax.errorbar(temps, [r[f"gibbs_{large}_{name}"] for r in rows],
                    yerr=[3 * r[f"gibbs_{large}_{name}_mcse"] for r in rows],
                    fmt="s", ms=4, label=f"Gibbs {large}x{large}")  # fmt: skip
        ax.axvline(1.0 / critical_beta(), color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("temperature T = 1/beta")
        ax.set_ylabel("energy per site" if name == "e" else "<|m|>")
        ax.legend(fontsize=7)
    plot.save(fig, path)


def clean_image(size):
    """A binary test picture in {-1, +1}: a disc, a bar and a ring."""
    i, j = np.indices((size, size)) / size
    disc = (i - 0.3) ** 2 + (j - 0.3) ** 2 < 0.2**2
    bar = (np.abs(i - 0.75) < 0.08) & (j > 0.15) & (j < 0.85)
    radius = np.sqrt((i - 0.3) ** 2 + (j - 0.72) ** 2)
    ring = (radius > 0.1) & (radius < 0.2)
    return jnp.asarray(np.where(disc | bar | ring, 1.0, -1.0), jnp.float32)


def denoising(key, cfg):
    """Restore a noisy picture by ICM, annealed Gibbs and the Gibbs marginal mode.

    Returns the rows (pixel error and posterior energy per method), the likelihood's field
    strength and the pictures (clean, noisy and restored)."""
    key_noise, key_anneal, key_mpm = jax.random.split(key, 3)
    clean = clean_image(cfg.image_size)
    noisy = flip_noise(key_noise, clean, cfg.flip_prob)
    # the exact likelihood strength of a binary symmetric channel
    field_strength = 0.5 * np.log((1 - cfg.flip_prob) / cfg.flip_prob)
    model = denoising_posterior(noisy, cfg.coupling, field_strength)
    restored = {"noisy": noisy}
    restored["ICM"] = icm(model, noisy, cfg.num_icm_sweeps)
    betas = jnp.geomspace(0.3, 5.0, cfg.num_anneal_sweeps)
    restored["annealed Gibbs (MAP)"] = annealed_gibbs(key_anneal, model, noisy, betas).state.x
    mpm = run(key_mpm, checkerboard_gibbs(model), noisy, cfg.num_mpm_sweeps, thin=1)
    mean = jnp.mean(mpm.trace.x[cfg.num_mpm_sweeps // 5 :], axis=0)
    restored["Gibbs marginal mode (MPM)"] = jnp.where(mean >= 0, 1.0, -1.0)
    rows = [
        {
            "method": name,
            "pixel_error": float(pixel_error(x, clean)),
            "posterior_energy": float(model.energy(x)),
        }
        for name, x in restored.items()
    ]
    pictures = {"clean": np.asarray(clean)} | {k: np.asarray(v) for k, v in restored.items()}
    return rows, field_strength, pictures


def denoising_figure(path, pictures):
    clean = pictures["clean"]
    fig, axes = plt.subplots(1, len(pictures), figsize=(3 * len(pictures), 3.8))
    for ax, (name, x) in zip(axes, pictures.items(), strict=True):
        ax.imshow(x, cmap="gray", vmin=-1, vmax=1)
        error = float(pixel_error(x, clean))
        ax.set_title(f"{name}\nerror {error:.3%}", fontsize=8)
        ax.axis("off")
    plot.save(fig, path)


def main(cfg: Config) -> dict:
    """Both parts. Returns ``phase_transition`` and ``denoising`` (tables as lists of
    rows), ``denoising_field_strength``, ``seconds``, ``config``, and under ``arrays`` the
    exact and Onsager curves and the denoising pictures."""
    key_phase, key_denoise = jax.random.split(jax.random.key(cfg.seed))
    with Timer() as timer:
        with Timer("phase transition"):
            phase_rows, curves = phase_transition(key_phase, cfg)
        with Timer("denoising"):
            denoise_rows, field_strength, pictures = denoising(key_denoise, cfg)
    return {
        "config": dataclasses.asdict(cfg),
        "phase_transition": phase_rows,
        "denoising": denoise_rows,
        "denoising_field_strength": field_strength,
        "seconds": timer.seconds,
        "arrays": {"curves": curves, "pictures": pictures},
    }


def report(results: dict, cfg: Config) -> None:
    """Write phase_transition.png, denoising.png, metrics.json and results.md; print them."""
    out = output_dir(cfg)
    phase_rows, denoise_rows = results["phase_transition"], results["denoising"]
    large = cfg.lattice_size
    phase_figure(out / "phase_transition.png", phase_rows, results["arrays"]["curves"], large)
    denoising_figure(out / "denoising.png", results["arrays"]["pictures"])
    write_metrics(out, results)
    columns = ["T", "exact_4x4_e", "gibbs_4x4_e", "gibbs_4x4_e_mcse", "z_4x4", "exact_4x4_abs_m",
               "gibbs_4x4_abs_m", f"gibbs_{large}_e", f"gibbs_{large}_e_mcse", "onsager_e",
               f"gibbs_{large}_abs_m", "onsager_abs_m"]  # fmt: skip
    text = (
        "## Energy per site and abs_m across the transition\n\n"
        + markdown_table(phase_rows, columns)
        + f"\n## Denoising ({cfg.image_size}x{cfg.image_size}, flip probability "
        + f"{cfg.flip_prob}, J = {cfg.coupling}, "
        + f"eta = {results['denoising_field_strength']:.3f})\n\n"
        + markdown_table(denoise_rows)
    )
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
