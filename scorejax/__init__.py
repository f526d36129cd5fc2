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

# Discrete energy-based models (issue 6): Ising, RBMs and DBNs, products of experts, RBM log Z
from scorejax import ising, rbm
from scorejax.energies import mixture_of_experts, product_of_experts
from scorejax.ising import Ising, ising_enumerate
from scorejax.partition import (
    ais_betas,
    rbm_ais,
    rbm_log_likelihood,
    rbm_log_partition_exact,
)
from scorejax.rbm import RBM, block_gibbs, train_dbn, train_rbm

__all__ += [
    "RBM",
    "Ising",
    "ais_betas",
    "block_gibbs",
    "ising",
    "ising_enumerate",
    "mixture_of_experts",
    "product_of_experts",
    "rbm",
    "rbm_ais",
    "rbm_log_likelihood",
    "rbm_log_partition_exact",
    "train_dbn",
    "train_rbm",
]
