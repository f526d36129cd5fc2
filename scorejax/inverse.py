"""Inverse problems with any score model: linear measurements y = A x + noise, their
conditional samplers, and the exact posterior of a Gaussian mixture for the tests.

A ``LinearMeasurement`` is written once; inpainting (A keeps the known pixels) and
super-resolution (A averages blocks of pixels) are two matrices, not two samplers. The
samplers condition any kernel of the library on y by a projection after each of its steps
(``measurement_conditioned``): with x at noise level (m, s) (x = m x0 + s z: NCSN's sigma
has m = 1, s = sigma; an SDE's kernel at t), the measurement is carried to the same level,
y_t = m y + s A z with fresh z, and x moves to the nearest point of {x : A x = y_t},

    x <- x - A^+ (A x - y_t),

A^+ the pseudo-inverse. For a mask A^+ = A^T and this replaces the known pixels by the
noised observation: NCSN's inpainting (Song & Ermon 2019, Section 5 and Appendix B.3) under
annealed Langevin, score_sde's imputation (Song et al. 2021, Appendix I.2) under a reverse
SDE, and its projection for general linear A (Song, Shen, Xing & Ermon 2022, "Solving
Inverse Problems in Medical Imaging with Score-Based Generative Models", Eq. 6-8, with
lambda = 1). After the last step ``project_exact`` makes A x = y hold to float precision.

These samplers are approximations: replacing the known part ignores what it says about the
unknown part's law at high noise. ``mixture_posterior`` gives the exact posterior of a
Gaussian-mixture prior under a masking measurement (a mixture with updated weights), so the
approximation's error can be measured and an exact conditional sampler checked.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import check_positive_int
from scorejax._compile import as_pytree
from scorejax.energies import GaussianMixture
from scorejax.samplers.base import Sampler
from scorejax.sde import check_sde
from scorejax.types import Array, Key


class LinearMeasurement(NamedTuple):
    """y = A x.reshape(-1) + noise_std * n, n ~ N(0, I).

    matrix: A, (M, D) for examples of D values (any shape, flattened).
    pinv: A^+, (D, M), computed once (``linear_measurement``).
    noise_std: the measurement noise's standard deviation (0 for noise-free masks).
    """

    matrix: Array
    pinv: Array
    noise_std: Array


def linear_measurement(matrix, noise_std=0.0) -> LinearMeasurement:
    """A measurement y = A x + noise_std * n from its (M, D) matrix; A^+ by SVD."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[0] > matrix.shape[1]:
        raise ValueError(f"matrix must be (M, D) with 1 <= M <= D, got shape {matrix.shape}")
    if not np.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    return LinearMeasurement(
        jnp.asarray(matrix, jnp.float32),
        jnp.asarray(np.linalg.pinv(matrix), jnp.float32),
        jnp.asarray(noise_std, jnp.float32),
    )


def inpainting(mask, noise_std=0.0) -> LinearMeasurement:
    """A keeps the pixels where ``mask`` is True (any shape, that of one example): the rows
    of the identity at the known pixels, so A^+ = A^T."""
    mask = np.asarray(mask, bool).reshape(-1)
    if not mask.any():
        raise ValueError("mask must keep at least one pixel (all False)")
    return linear_measurement(np.eye(mask.size)[mask], noise_std)


def downsampling(shape, factor: int, noise_std=0.0) -> LinearMeasurement:
    """A averages ``factor`` x ``factor`` blocks of an (H, W) or (H, W, C) image
    (super-resolution's measurement); H and W must be multiples of ``factor``."""
    factor = check_positive_int("factor", factor)
    shape = tuple(shape)
    if len(shape) not in (2, 3) or shape[0] % factor or shape[1] % factor:
        raise ValueError(f"shape must be (H, W[, C]) with H, W multiples of factor={factor}, "
                         f"got {shape}")  # fmt: skip
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    index = np.arange(height * width * channels).reshape(height, width, channels)
    blocks = index.reshape(height // factor, factor, width // factor, factor, channels)
    blocks = blocks.transpose(0, 2, 4, 1, 3).reshape(-1, factor * factor)
    matrix = np.zeros((blocks.shape[0], index.size))
    matrix[np.arange(blocks.shape[0])[:, None], blocks] = 1.0 / factor**2
    return linear_measurement(matrix, noise_std)


def _check_example(measurement: LinearMeasurement, x) -> None:
    if int(np.prod(np.shape(x))) != measurement.matrix.shape[1]:
        raise ValueError(
            f"x must hold {measurement.matrix.shape[1]} values (the measurement's D), got "
            f"shape {np.shape(x)}"
        )


def measure(key: Key, measurement: LinearMeasurement, x: Array) -> Array:
    """y = A x + noise_std * n for one example x."""
    _check_example(measurement, x)
    n = jax.random.normal(key, (measurement.matrix.shape[0],))
    return measurement.matrix @ jnp.reshape(x, -1) + measurement.noise_std * n


def _check_observation(measurement: LinearMeasurement, y) -> None:
    if np.shape(y) != (measurement.matrix.shape[0],):
        raise ValueError(
            f"y must have shape ({measurement.matrix.shape[0]},) (the measurement's M), got "
            f"{np.shape(y)}"
        )


def project(key: Key, measurement: LinearMeasurement, y: Array, x: Array, mean, std) -> Array:
    """x - A^+ (A x - y_t) with y_t = mean * y + std * A z: x moved onto the measurement
    carried to x's noise level (x = mean x0 + std z)."""
    flat = jnp.reshape(x, -1)
    z = jax.random.normal(key, flat.shape, flat.dtype)
    y_t = mean * y + std * (measurement.matrix @ z)
    flat = flat - measurement.pinv @ (measurement.matrix @ flat - y_t)
    return flat.reshape(jnp.shape(x)).astype(jnp.result_type(x))


def project_exact(measurement: LinearMeasurement, y: Array, x: Array) -> Array:
    """x - A^+ (A x - y): the nearest point with A x = y exactly (after the last step)."""
    _check_example(measurement, x)
    _check_observation(measurement, y)
    flat = jnp.reshape(x, -1)
    flat = flat - measurement.pinv @ (measurement.matrix @ flat - y)
    return flat.reshape(jnp.shape(x)).astype(jnp.result_type(x))


def sigma_level(sigma, step_size):
    """The level (mean, std) = (1, sigma) reached by a step of annealed Langevin's schedule
    (``annealed_step_sizes``: entries (sigma, step_size))."""
    del step_size
    return jnp.ones_like(sigma), sigma


def sde_level(sde):
    """``level(t, dt)``: the level (m, s) = ``sde.kernel(t - dt)`` reached by a reverse-SDE
    step of ``reverse_time_grid``'s schedule, for ``measurement_conditioned``."""
    return Partial(_sde_level, sde)


def _sde_level(sde, t, dt):
    return sde.kernel(t - dt)


def denoising_start(sde, y: Array, noise_std: float) -> tuple[float, Array]:
    """Where the reverse process starts to denoise y = x + noise_std n, n ~ N(0, I): the
    time t* at which the forward kernel's noise-to-signal ratio s(t*)/m(t*) equals
    noise_std, and x(t*) = m(t*) y, which has exactly the forward marginal's law given x
    (m(t*) y = m(t*) x + s(t*) n). Running a reverse sampler from there
    (``reverse_time_grid(sde, N, t_start=t*)``) samples p(x | y) for an exact score
    (Song et al. 2021, Section 5 and Appendix I; for annealed Langevin, start at the ladder's
    levels below noise_std with x = y, NCSN's m = 1).

    t* is found by bisection of the increasing ratio on [eps, 1] (to 1e-9); noise_std must
    lie between its values there.
    """
    check_sde(sde)

    def ratio(t):
        mean, std = sde.kernel(jnp.asarray(t))
        return float(std / mean)

    low, high = float(sde.eps), 1.0
    if not (np.isscalar(noise_std) and ratio(low) <= noise_std <= ratio(high)):
        raise ValueError(
            f"noise_std must be a number in [{ratio(low):.4g}, {ratio(high):.4g}] (the SDE's "
            f"noise-to-signal ratio on [eps, 1]), got {noise_std!r}"
        )
    while high - low > 1e-9:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if ratio(middle) < noise_std else (low, middle)
    mean, _ = sde.kernel(jnp.asarray(high))
    return high, mean * jnp.asarray(y)


def measurement_conditioned(
    sampler: Sampler, measurement: LinearMeasurement, y: Array, level
) -> Sampler:
    """``sampler`` with each step followed by the projection onto the noised measurement.

    Args:
      sampler: any kernel whose state has a field ``x`` and whose step reads a schedule
        (``noise_conditional_ula`` with ``annealed_step_sizes``; ``pc_sampler`` with
        ``reverse_time_grid``).
      measurement: the ``LinearMeasurement``.
      y: the observation, (M,).
      level: ``level(*schedule_entry) -> (mean, std)`` of the noise level a step ends at:
        ``sigma_level`` for annealed Langevin, ``sde_level(sde)`` for a reverse SDE.

    Returns:
      a Sampler with the same state, info and schedule; ``project_exact`` its result to
      make A x = y hold exactly at the end.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a Sampler, got {type(sampler).__name__}")
    _check_observation(measurement, y)
    if not callable(level):
        raise TypeError(f"level must be a function level(*schedule) -> (mean, std), got {level!r}")
    level = as_pytree(level)
    return Sampler(sampler.init, Partial(_conditioned_step, sampler.step, measurement, y, level))


def _conditioned_step(step, measurement, y, level, key, state, *schedule):
    key_step, key_project = jax.random.split(key)
    state, info = step(key_step, state, *schedule)
    mean, std = level(*schedule)
    return state._replace(x=project(key_project, measurement, y, state.x, mean, std)), info


def mixture_posterior(prior: GaussianMixture, measurement: LinearMeasurement, y) -> GaussianMixture:
    """The exact posterior p(x | y) of a Gaussian-mixture prior under a masking measurement
    (A the rows of the identity at the known coordinates) with noise_std > 0.

    Component k, N(mu_k, diag(s_k^2)), becomes N(mu'_k, diag(s'_k^2)) with, on a known
    coordinate j (observed y_j, noise variance r), the Gaussian conjugate update
    s'^2 = s^2 r / (s^2 + r), mu' = s'^2 (mu / s^2 + y_j / r), and the unknown coordinates
    unchanged; its weight is w_k N(y; A mu_k, A diag(s_k^2) A^T + r I) normalised (Bishop
    2006, Eq. 2.116 and 2.117 per coordinate; Bayes' rule over the components).
    """
    _check_observation(measurement, y)
    matrix = np.asarray(measurement.matrix)
    rows = np.abs(matrix).sum(axis=1)
    known = np.argmax(matrix, axis=1)
    if not (np.all(rows == 1.0) and np.all(matrix[np.arange(len(known)), known] == 1.0)):
        raise ValueError("mixture_posterior needs a masking measurement (rows of the identity)")
    if not float(measurement.noise_std) > 0:
        raise ValueError("mixture_posterior needs noise_std > 0 (a noise-free mask is degenerate)")
    r = measurement.noise_std**2
    means, scales = prior.means, prior._scales()
    var = scales**2
    var_known = var[:, known]
    post_var = var.at[:, known].set(var_known * r / (var_known + r))
    post_mean = means.at[:, known].set(
        post_var[:, known] * (means[:, known] / var_known + jnp.asarray(y) / r)
    )
    total = var_known + r
    log_evidence = -0.5 * jnp.sum(
        (jnp.asarray(y) - means[:, known]) ** 2 / total + jnp.log(2 * jnp.pi * total), axis=1
    )
    log_w = jnp.log(jnp.asarray(prior.weights) / jnp.sum(prior.weights)) + log_evidence
    return GaussianMixture(post_mean, jnp.sqrt(post_var), jax.nn.softmax(log_w))
