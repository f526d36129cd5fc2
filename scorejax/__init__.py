"""scorejax: energy-based models and score-based generative modelling in JAX.

Re-exports the public names; the logic lives in the modules.
"""

from scorejax import data, metrics, nets, partition, plot, samplers, training
from scorejax.energies import (
    Banana,
    DoubleWell,
    Gaussian,
    GaussianMixture,
    Rings,
    boltzmann_probs,
    log_partition_finite,
)
from scorejax.losses import dsm_loss, geometric_sigmas, ncsn_loss
from scorejax.partition import log_partition_quadrature
from scorejax.samplers import (
    RunResult,
    Sampler,
    annealed_langevin,
    run,
    run_chains,
    ula,
    warn_if_diverged,
)
from scorejax.scores import score_from_energy
from scorejax.training import TrainState, fit, init_train_state, make_train_step, minibatches

__all__ = [
    "Banana",
    "DoubleWell",
    "Gaussian",
    "GaussianMixture",
    "Rings",
    "RunResult",
    "Sampler",
    "TrainState",
    "annealed_langevin",
    "boltzmann_probs",
    "data",
    "dsm_loss",
    "fit",
    "geometric_sigmas",
    "init_train_state",
    "log_partition_finite",
    "log_partition_quadrature",
    "make_train_step",
    "metrics",
    "minibatches",
    "ncsn_loss",
    "nets",
    "partition",
    "plot",
    "run",
    "run_chains",
    "samplers",
    "score_from_energy",
    "training",
    "ula",
    "warn_if_diverged",
]

# score matching, exact and sliced (issue 3)
from scorejax.losses import exact_sm_loss, ssm_loss, ssm_vr_loss
from scorejax.scores import divergence, hessian_trace, hutchinson_divergence

__all__ += [
    "divergence",
    "exact_sm_loss",
    "hessian_trace",
    "hutchinson_divergence",
    "ssm_loss",
    "ssm_vr_loss",
]
