"""scorejax: energy-based models and score-based generative modelling in JAX.

Re-exports the public names; the logic lives in the modules.
"""

from scorejax import data, diagnostics, metrics, nets, partition, plot, samplers, sharding, training
from scorejax.diagnostics import effective_sample_size, split_rhat
from scorejax.energies import (
    Banana,
    DoubleWell,
    Gaussian,
    GaussianMixture,
    Rings,
    boltzmann_probs,
    log_partition_finite,
)
from scorejax.losses import (
    dsm_loss,
    exact_sm_loss,
    geometric_sigmas,
    ncsn_loss,
    ssm_loss,
    ssm_vr_loss,
)
from scorejax.partition import log_partition_quadrature
from scorejax.samplers import (
    RunResult,
    Sampler,
    adapt_step_size,
    adapt_step_size_chains,
    annealed_langevin,
    hmc,
    mala,
    parallel_tempering,
    run,
    run_chains,
    rwm,
    ula,
    warn_if_diverged,
)
from scorejax.scores import divergence, hessian_trace, hutchinson_divergence, score_from_energy
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
    "adapt_step_size",
    "adapt_step_size_chains",
    "annealed_langevin",
    "boltzmann_probs",
    "data",
    "diagnostics",
    "divergence",
    "dsm_loss",
    "effective_sample_size",
    "exact_sm_loss",
    "fit",
    "geometric_sigmas",
    "hessian_trace",
    "hmc",
    "hutchinson_divergence",
    "init_train_state",
    "log_partition_finite",
    "log_partition_quadrature",
    "make_train_step",
    "mala",
    "metrics",
    "minibatches",
    "ncsn_loss",
    "nets",
    "parallel_tempering",
    "partition",
    "plot",
    "run",
    "run_chains",
    "rwm",
    "samplers",
    "score_from_energy",
    "sharding",
    "split_rhat",
    "ssm_loss",
    "ssm_vr_loss",
    "training",
    "ula",
    "warn_if_diverged",
]
