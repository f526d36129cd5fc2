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
    "ReplayBuffer",
    "Rings",
    "RunResult",
    "Sampler",
    "TrainState",
    "annealed_langevin",
    "auroc",
    "boltzmann_probs",
    "cd_loss",
    "data",
    "decoupled_langevin",
    "dsm_loss",
    "fit",
    "geometric_sigmas",
    "init_train_state",
    "log_partition_finite",
    "log_partition_quadrature",
    "make_cd_train_step",
    "make_pcd_train_step",
    "make_train_step",
    "metrics",
    "minibatches",
    "ncsn_loss",
    "nets",
    "partition",
    "plot",
    "replay",
    "replay_init",
    "replay_push",
    "replay_sample",
    "run",
    "run_chains",
    "samplers",
    "score_from_energy",
    "training",
    "ula",
    "uniform_noise",
    "warn_if_diverged",
]

# Contrastive divergence (issue 5)
from scorejax import replay
from scorejax.losses import cd_loss
from scorejax.metrics import auroc
from scorejax.replay import (
    ReplayBuffer,
    make_cd_train_step,
    make_pcd_train_step,
    replay_init,
    replay_push,
    replay_sample,
    uniform_noise,
)
from scorejax.samplers import decoupled_langevin
