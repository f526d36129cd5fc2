"""Samplers: init/step kernels and the runner that scans them (one file per family)."""

from scorejax.samplers.base import (
    RunResult,
    Sampler,
    count_nonfinite,
    run,
    run_chains,
    warn_if_diverged,
)
from scorejax.samplers.langevin import (
    LangevinInfo,
    LangevinState,
    annealed_langevin,
    annealed_step_sizes,
    langevin_update,
    ula,
)

__all__ = [
    "LangevinInfo",
    "LangevinState",
    "RunResult",
    "Sampler",
    "annealed_langevin",
    "annealed_step_sizes",
    "count_nonfinite",
    "langevin_update",
    "run",
    "run_chains",
    "ula",
    "warn_if_diverged",
]

# issue 4: MCMC toolkit
from scorejax.samplers.adaptation import (
    HMC_TARGET_ACCEPTANCE,
    MALA_TARGET_ACCEPTANCE,
    AdaptationResult,
    DualAveragingState,
    adapt_step_size,
    adapt_step_size_chains,
    dual_averaging_init,
    dual_averaging_update,
)
from scorejax.samplers.mcmc import (
    HMCInfo,
    HMCState,
    MALAState,
    MetropolisInfo,
    RWMState,
    hmc,
    kinetic_energy,
    leapfrog,
    mala,
    rwm,
)
from scorejax.samplers.schedules import (
    constant_schedule,
    cube_root_decay,
    inverse_sqrt_decay,
    polynomial_decay,
)
from scorejax.samplers.tempering import (
    TemperingInfo,
    TemperingState,
    geometric_temperatures,
    parallel_tempering,
)

__all__ += [
    "HMC_TARGET_ACCEPTANCE",
    "MALA_TARGET_ACCEPTANCE",
    "AdaptationResult",
    "DualAveragingState",
    "HMCInfo",
    "HMCState",
    "MALAState",
    "MetropolisInfo",
    "RWMState",
    "TemperingInfo",
    "TemperingState",
    "adapt_step_size",
    "adapt_step_size_chains",
    "constant_schedule",
    "cube_root_decay",
    "dual_averaging_init",
    "dual_averaging_update",
    "geometric_temperatures",
    "hmc",
    "inverse_sqrt_decay",
    "kinetic_energy",
    "leapfrog",
    "mala",
    "parallel_tempering",
    "polynomial_decay",
    "rwm",
]
