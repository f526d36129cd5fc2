"""Scores by autodiff.

The score of p(x) = exp(-E(x)) / Z is grad_x log p(x) = -grad_x E(x): the partition
function, constant in x, drops out (Hyvärinen 2005, Section 2).
"""

import jax

from scorejax.types import EnergyFn, ScoreFn


def score_from_energy(energy_fn: EnergyFn) -> ScoreFn:
    """Turn ``energy_fn(params, x, *args) -> ()`` into ``score_fn(params, x, *args) = -grad_x E``.

    One line of autodiff (DESIGN §2), so learned and analytic energies share it:
    ``score_from_energy(GaussianMixture.energy)(mixture, x)`` equals ``mixture.score(x)``.
    Extra positional arguments (a noise level ``sigma``) pass through undifferentiated.
    """
    grad_energy = jax.grad(energy_fn, argnums=1)

    def score_fn(params, x, *args):
        return -grad_energy(params, x, *args)

    return score_fn
