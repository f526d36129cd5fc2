"""Why annealing: plain Langevin does not recover unequal mixture weights; annealed does.

The NCSN paper's toy (Song & Ermon 2019, Section 3.2 and Appendix B.1) with exact scores:
p = 1/5 N((-5, -5), I) + 4/5 N((5, 5), I). Chains start uniform on [-8, 8]^2. Plain
Langevin with the exact score of p stays in the mode it first falls into, so its mode
weights reflect the basins of attraction (about 1/2 each), not 0.2/0.8. Annealed Langevin
with the exact scores of p convolved with N(0, sigma^2 I), sigma from 20 to 1, sees one
broad mode at large sigma and splits the chains in proportion to the weights.
``main`` returns the mode weights; ``report`` writes table.md, metrics.json and
mode_weights.png into results/mode_weights/ (results/smoke/mode_weights/ with --smoke).

    python -m experiments.mode_weights [--smoke]
"""

import dataclasses

import jax
import matplotlib.pyplot as plt
import numpy as np

import scorejax as sj
from experiments.common import Timer, markdown_table, output_dir, parse_config, write_metrics
from scorejax import data, metrics, plot


@dataclasses.dataclass(frozen=True)
class Config:
    """Mode weights of plain and annealed Langevin on the NCSN toy mixture."""

    seed: int = 0
    num_chains: int = 5000
    init_box: float = 8.0
    sigma_max: float = 20.0  # the paper's ladder: 10 levels from 20 down to 1
    sigma_min: float = 1.0
    num_levels: int = 10
    steps_per_level: int = 100
    step_size: float = 0.05  # our h; the paper's epsilon = 0.1 is 2h (docs/design.md §6)
    out_dir: str = "results/mode_weights"


SMOKE = dict(num_chains=400, steps_per_level=20)


def main(cfg: Config) -> dict:
    """Run both samplers from the same uniform starts and count the chains in each mode.

    Returns ``rows`` (one per sampler: the weight of each mode and its binomial standard
    error; the first row is the exact mixture), ``config``, and under ``arrays`` the final
    positions the figure scatters.
    """
    target = data.unequal_mixture()
    key_init, key_plain, key_annealed = jax.random.split(jax.random.key(cfg.seed), 3)
    x0 = jax.random.uniform(
        key_init, (cfg.num_chains, 2), minval=-cfg.init_box, maxval=cfg.init_box
    )
    sigmas = sj.geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.num_levels)
    num_steps = cfg.num_levels * cfg.steps_per_level

    # the same number of steps, at the smallest level's step size, without annealing
    with Timer("plain Langevin"):
        plain = sj.run_chains(
            key_plain, sj.ula(target.score, cfg.step_size), x0, num_steps, warn=False
        )
    exact_noised_score = lambda x, sigma: target.noised(sigma).score(x)
    with Timer("annealed Langevin"):
        annealed = jax.vmap(
            lambda k, x: sj.annealed_langevin(
                k,
                exact_noised_score,
                x,
                sigmas,
                step_size=cfg.step_size,
                num_steps_per_level=cfg.steps_per_level,
                denoise=False,
            )
        )(jax.random.split(key_annealed, cfg.num_chains), x0)
    sj.warn_if_diverged(plain.info, "Langevin")
    sj.warn_if_diverged(annealed.info, "annealed Langevin")

    rows = []
    for name, x in (
        ("true", target.sample(key_init, cfg.num_chains)),
        ("Langevin", plain.state.x),
        ("annealed Langevin", annealed.state.x),
    ):
        w = np.asarray(metrics.mode_weights(x, target.means))
        mcse = np.sqrt(w * (1 - w) / cfg.num_chains)  # binomial standard error, independent chains
        rows.append(
            {
                "sampler": name,
                "weight (-5,-5)": float(w[0]),
                "weight (5,5)": float(w[1]),
                "standard error": float(mcse[0]),
            }
        )
    rows[0]["weight (-5,-5)"], rows[0]["weight (5,5)"] = 0.2, 0.8  # the exact weights
    rows[0]["standard error"] = 0.0
    return {
        "rows": rows,
        "config": dataclasses.asdict(cfg),
        "arrays": {"langevin": np.asarray(plain.state.x), "annealed": np.asarray(annealed.state.x)},
    }


def report(results: dict, cfg: Config) -> None:
    """Write table.md, metrics.json and mode_weights.png; print the table."""
    out = output_dir(cfg)
    rows, arrays = results["rows"], results["arrays"]
    table = markdown_table(rows)
    (out / "table.md").write_text(table)
    write_metrics(out, results)

    target = data.unequal_mixture()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    plot.energy_landscape(axes[0], target.energy, lim=9.0)
    axes[0].set_title("p = 0.2 N((-5,-5), I) + 0.8 N((5,5), I)")
    plot.samples(axes[1], arrays["langevin"], lim=9.0, label="Langevin")
    axes[1].set_title(
        "plain Langevin, exact score: weights {:.2f} / {:.2f}".format(
            rows[1]["weight (-5,-5)"], rows[1]["weight (5,5)"]
        )
    )
    plot.samples(axes[2], arrays["annealed"], lim=9.0, label="annealed")
    axes[2].set_title(
        "annealed Langevin: weights {:.2f} / {:.2f}".format(
            rows[2]["weight (-5,-5)"], rows[2]["weight (5,5)"]
        )
    )
    plot.save(fig, out / "mode_weights.png")
    print(table)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
