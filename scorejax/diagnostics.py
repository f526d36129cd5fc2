"""MCMC diagnostics: autocorrelation, integrated autocorrelation time, ESS, MCSE, split R-hat.

Samples are laid out as ``run_chains`` traces them: ``(num_chains, num_draws, *event)``;
every statistic is computed per event entry (a chain of scalars is ``x[None]``).

The autocorrelation pools the chains as in Gelman et al. (2013, BDA3 §11.5) and Vehtari,
Gelman, Simpson, Carpenter & Bürkner (2021, Eq. 10):

    rho_t = 1 - (W - mean_m gamma_{t,m}) / var_plus,

with gamma_{t,m} the (biased, FFT) autocovariance of chain m, W the mean within-chain
variance and var_plus = (N - 1)/N W + B/N. The sum of autocorrelations is truncated by
Geyer's (1992, Section 3.3) initial monotone sequence estimator: the pair sums
P_k = rho_{2k} + rho_{2k+1} are kept while positive and made non-increasing, and

    tau = -1 + 2 sum_k P_k,      ESS = M N / tau.

For an AR(1) chain with coefficient phi, tau = (1 + phi) / (1 - phi) (the tests check it).

Degenerate input is defined, not garbage: an event entry with a NaN draw gets NaN (with a
RuntimeWarning); a constant entry (every draw of every chain equal) has a mean known
exactly, so its tau is 1, its ESS M N, its MCSE 0 and its split R-hat 1; integer draws are
treated as floats. Chains that are each constant at different values have W = 0 < B: R-hat
is infinite there and ESS small, as chains that never move should have.
"""

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax.types import Array


def _check_samples(name: str, x, min_draws: int = 4) -> Array:
    if np.ndim(x) < 2:
        raise ValueError(
            f"{name} must have shape (num_chains, num_draws, ...); for one chain pass "
            f"x[None], got shape {np.shape(x)}"
        )
    if np.shape(x)[1] < min_draws:
        raise ValueError(f"{name} needs at least {min_draws} draws, got shape {np.shape(x)}")
    dtype = jnp.result_type(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name} must hold real numbers, got {dtype}")
    x = jnp.asarray(x, jnp.result_type(float) if jnp.issubdtype(dtype, jnp.integer) else dtype)
    try:
        num_nan = int(jnp.sum(jnp.isnan(x)))
    except jax.errors.ConcretizationTypeError:  # traced: the NaN results speak for themselves
        num_nan = 0
    if num_nan:
        warnings.warn(
            f"{name} has {num_nan} NaN draw(s): the statistics of the entries concerned are NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    return x


def _with_nan(value: Array, x: Array) -> Array:
    """``value`` (per event entry) with NaN where any draw of that entry is NaN."""
    return jnp.where(jnp.any(jnp.isnan(x), axis=(0, 1)), jnp.nan, value)


def _constant(x: Array) -> Array:
    """Per event entry: every draw of every chain equal."""
    return jnp.all(x == x[:1, :1], axis=(0, 1))


def _autocovariance(x: Array) -> Array:
    """Biased autocovariance (1/N) sum_t (x_t - x̄)(x_{t+k} - x̄) along axis 1, by FFT."""
    n = x.shape[1]
    centred = x - jnp.mean(x, axis=1, keepdims=True)
    size = 2 * n  # zero padding makes the circular correlation linear
    spectrum = jnp.fft.rfft(centred, n=size, axis=1)
    acov = jnp.fft.irfft(spectrum * jnp.conj(spectrum), n=size, axis=1)[:, :n]
    return acov / n


def autocorrelation(x: Array) -> Array:
    """Multi-chain autocorrelation rho_t, t = 0..N-1 (Vehtari et al. 2021, Eq. 10).

    Args:
      x: (num_chains, num_draws, ...) samples.

    Returns:
      (num_draws, ...) autocorrelations pooled over chains, rho_0 = 1.
    """
    return _autocorrelation(_check_samples("x", x))


def _autocorrelation(x: Array) -> Array:
    n = x.shape[1]
    acov = _autocovariance(x)  # (M, N, ...)
    within = jnp.mean(acov[:, 0] * n / (n - 1.0), axis=0)  # W: mean of s_m^2
    chain_means = jnp.mean(x, axis=1)
    between = n * jnp.var(chain_means, axis=0, ddof=1) if x.shape[0] > 1 else 0.0
    var_plus = (n - 1.0) / n * within + between / n
    rho = 1.0 - (within - jnp.mean(acov, axis=0)) / jnp.where(var_plus > 0, var_plus, 1.0)
    # a constant entry: uncorrelated by definition (rho_0 = 1, rho_t = 0)
    lag0 = (jnp.arange(n) == 0).reshape((n,) + (1,) * (x.ndim - 2))
    return jnp.where(_constant(x), lag0.astype(rho.dtype), rho)


def integrated_autocorrelation_time(x: Array) -> Array:
    """Integrated autocorrelation time tau = 1 + 2 sum_{t>=1} rho_t, by Geyer's initial
    monotone sequence (Geyer 1992, Section 3.3; Vehtari et al. 2021, Section 3.2).

    tau = -1 + 2 sum_k P_k, P_k = rho_{2k} + rho_{2k+1} truncated at the first
    non-positive pair and made non-increasing by a running minimum.

    Args:
      x: (num_chains, num_draws, ...) samples.

    Returns:
      (...) tau per event entry (1 for independent draws, (1 + phi)/(1 - phi) for AR(1)).
    """
    return _tau(_check_samples("x", x))


def _tau(x: Array) -> Array:
    rho = _autocorrelation(x)
    num_pairs = rho.shape[0] // 2
    pairs = rho[0 : 2 * num_pairs : 2] + rho[1 : 2 * num_pairs : 2]  # (K, ...)
    positive = jnp.cumprod(pairs > 0, axis=0).astype(bool)
    monotone = jax.lax.cummin(jnp.where(positive, pairs, jnp.inf), axis=0)
    tau = -1.0 + 2.0 * jnp.sum(jnp.where(positive, monotone, 0.0), axis=0)
    return _with_nan(jnp.where(_constant(x), 1.0, tau), x)


def effective_sample_size(x: Array) -> Array:
    """ESS = M N / tau (Geyer 1992; Gelman et al. 2013, Eq. 11.8; Vehtari et al. 2021).

    Args:
      x: (num_chains, num_draws, ...) samples.

    Returns:
      (...) effective sample size per event entry.
    """
    x = _check_samples("x", x)
    return x.shape[0] * x.shape[1] / _tau(x)


def mcse(x: Array) -> Array:
    """Monte Carlo standard error of the mean, sd / sqrt(ESS) (Geyer 1992; Flegal et al. 2008).

    Args:
      x: (num_chains, num_draws, ...) samples.

    Returns:
      (...) standard error of ``x.mean((0, 1))`` per event entry.
    """
    x = _check_samples("x", x)
    sd = jnp.std(x.reshape(-1, *x.shape[2:]), axis=0, ddof=1)
    return sd / jnp.sqrt(x.shape[0] * x.shape[1] / _tau(x))


def split_rhat(x: Array) -> Array:
    """Split R-hat (Gelman et al. 2013, BDA3 Eq. 11.4; Vehtari et al. 2021, Eq. 3–4).

    Each chain is cut into halves of n = N // 2 draws (M' = 2M chains), then

        B = n / (M' - 1) sum_m (x̄_m - x̄)^2,   W = mean_m s_m^2,
        var_plus = (n - 1)/n W + B/n,        R-hat = sqrt(var_plus / W).

    Values near 1 indicate the chains agree; Vehtari et al. recommend R-hat < 1.01.

    Args:
      x: (num_chains, num_draws, ...) samples, num_draws >= 4.

    Returns:
      (...) split R-hat per event entry.
    """
    x = _check_samples("x", x)
    n = x.shape[1] // 2
    halves = jnp.concatenate([x[:, :n], x[:, -n:]], axis=0)
    within = jnp.mean(jnp.var(halves, axis=1, ddof=1), axis=0)
    between = n * jnp.var(jnp.mean(halves, axis=1), axis=0, ddof=1)
    var_plus = (n - 1.0) / n * within + between / n
    rhat = jnp.sqrt(var_plus / jnp.where(within > 0, within, 1.0))
    # chains that never move: agreeing ones (B = 0) have converged, differing ones never will
    rhat = jnp.where(within > 0, rhat, jnp.where(between > 0, jnp.inf, 1.0))
    return _with_nan(rhat, x)


class AcceptanceSummary(NamedTuple):
    """Acceptance rate across chains: mean, min and max of the per-chain rates."""

    mean: Array
    min: Array
    max: Array


def acceptance_summary(info) -> AcceptanceSummary:
    """Summarise ``info.acceptance_rate`` from ``run`` / ``run_chains`` (one value per chain,
    already averaged over steps) or from a per-step trace (averaged over its last axis)."""
    if not hasattr(info, "acceptance_rate"):
        raise ValueError("info must have an acceptance_rate field (an MCMC kernel's info)")
    rate = jnp.atleast_1d(jnp.asarray(info.acceptance_rate, jnp.float32))
    rate = rate.reshape(rate.shape[0], -1).mean(axis=1) if rate.ndim > 1 else rate
    return AcceptanceSummary(jnp.mean(rate), jnp.min(rate), jnp.max(rate))
