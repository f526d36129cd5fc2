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
    decoupled_langevin,
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
    "decoupled_langevin",
    "langevin_update",
    "run",
    "run_chains",
    "ula",
    "warn_if_diverged",
]
