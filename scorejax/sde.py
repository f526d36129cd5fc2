"""Score SDEs as data (Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations", ICLR; "the paper" below).

A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, 1] carries data x(0) ~ p_0 to a prior
x(1) ~ p_1 that is easy to sample. Each SDE here is a NamedTuple of its constants (the
paper's defaults are the defaults) with pure methods, passed to functions as a value:

- ``drift(x, t)``: f(x, t), shaped like ``x``;
- ``diffusion(t)``: the scalar g(t);
- ``kernel(t)``: the perturbation kernel p_0t(x(t) | x(0)) = N(m(t) x(0), s(t)^2 I) as the
  pair (mean coefficient m(t), std s(t)), exact for these linear SDEs;
- ``prior_sample(key, shape)`` and ``prior_log_prob(x)`` (one example) of the prior;
- ``discretize(x, t, dt)``: the forward step from t - dt to t as x(t) = x(t - dt) + F + G z,
  returned as (F, G), which the reverse-diffusion and ancestral predictors invert (paper,
  Appendix E, Eq. 45-47);
- ``eps``: the smallest time used in training and sampling (the kernel's std vanishes at
  t = 0, where the score is undefined for data on a set of measure zero).

All three share one linear drift f(x, t) = a(t) x, so a Gaussian mixture stays a Gaussian
mixture at every t (``GaussianMixture.marginal``), which is what the tests check every
sampler and loss against. The constants are not validated when a tuple is built (a
NamedTuple cannot check its fields); the functions that consume an SDE call ``check_sde``
first, in Python, before tracing.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scorejax._checks import check_positive, concrete
from scorejax._compile import as_pytree
from scorejax.types import Array, Key

_LOG_2PI = math.log(2.0 * math.pi)


def _gaussian_log_prob(x: Array, std) -> Array:
    """log N(x; 0, std^2 I) of one example, summed over all its coordinates."""
    return -0.5 * jnp.sum((x / std) ** 2 + _LOG_2PI + 2.0 * jnp.log(std))


class VESDE(NamedTuple):
    """Variance-exploding SDE (paper Eq. 9 and Appendix B; SMLD/NCSN in continuous time).

    sigma(t) = sigma_min (sigma_max / sigma_min)^t, dx = sqrt(d[sigma^2(t)]/dt) dw, so
    f = 0 and g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min)). The kernel is exact:
    m(t) = 1 and s(t)^2 = sigma(t)^2 - sigma_min^2, the variance the SDE adds from time 0
    (Appendix B, Eq. 29). score_sde's code uses s(t) = sigma(t), the kernel of data already
    noised at sigma_min; the two differ by less than sigma_min. Prior N(0, sigma_max^2 I).
    ``discretize`` is SMLD's ladder: F = 0, G = sqrt(sigma(t)^2 - sigma(t - dt)^2) (Eq. 46).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    eps: float = 1e-5

    def sigma(self, t) -> Array:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x: Array, t) -> Array:
        """f(x, t) = 0."""
        return jnp.zeros_like(x)

    def diffusion(self, t) -> Array:
        """g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))."""
        return self.sigma(t) * jnp.sqrt(2.0 * jnp.log(self.sigma_max / self.sigma_min))

    def kernel(self, t) -> tuple[Array, Array]:
        """(m(t), s(t)) = (1, sqrt(sigma(t)^2 - sigma_min^2))."""
        std = jnp.sqrt(self.sigma(t) ** 2 - self.sigma_min**2)
        return jnp.ones_like(std), std

    def prior_sample(self, key: Key, shape) -> Array:
        """Samples of N(0, sigma_max^2 I) of the given shape."""
        return self.sigma_max * jax.random.normal(key, shape)

    def prior_log_prob(self, x: Array) -> Array:
        """log N(x; 0, sigma_max^2 I) of one example."""
        return _gaussian_log_prob(x, self.sigma_max)

    def discretize(self, x: Array, t, dt) -> tuple[Array, Array]:
        """SMLD's step: (F, G) = (0, sqrt(sigma(t)^2 - sigma(t - dt)^2))."""
        g = jnp.sqrt(self.sigma(t) ** 2 - self.sigma(t - dt) ** 2)
        return jnp.zeros_like(x), g


def _vp_log_mean_coeff(beta_min, beta_max, t) -> Array:
    """log m(t) = -1/2 int_0^t beta(s) ds = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min."""
    return -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min


class VPSDE(NamedTuple):
    """Variance-preserving SDE (paper Eq. 11 and Appendix B; DDPM in continuous time).

    beta(t) = beta_min + t (beta_max - beta_min), dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw.
    Kernel: m(t) = exp(-1/2 int_0^t beta), s(t)^2 = 1 - m(t)^2 (Eq. 29); prior N(0, I).
    ``discretize`` is DDPM's step x_i = sqrt(1 - b_i) x_{i-1} + sqrt(b_i) z (Eq. 45) with
    1 - b = m(t)^2 / m(t - dt)^2, i.e. b = beta(t) dt + O(dt^2) as in the paper, chosen so that
    b < 1 at any step size and the steps compose to the exact kernel:
    F = (sqrt(1 - b) - 1) x, G = sqrt(b).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps: float = 1e-3

    def beta(self, t) -> Array:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift(self, x: Array, t) -> Array:
        """f(x, t) = -1/2 beta(t) x."""
        return -0.5 * self.beta(t) * x

    def diffusion(self, t) -> Array:
        """g(t) = sqrt(beta(t))."""
        return jnp.sqrt(self.beta(t))

    def kernel(self, t) -> tuple[Array, Array]:
        """(m(t), sqrt(1 - m(t)^2)) with m(t) = exp(-1/2 int_0^t beta)."""
        log_mean = _vp_log_mean_coeff(self.beta_min, self.beta_max, t)
        return jnp.exp(log_mean), jnp.sqrt(-jnp.expm1(2.0 * log_mean))

    def prior_sample(self, key: Key, shape) -> Array:
        """Samples of N(0, I) of the given shape."""
        return jax.random.normal(key, shape)

    def prior_log_prob(self, x: Array) -> Array:
        """log N(x; 0, I) of one example."""
        return _gaussian_log_prob(x, 1.0)

    def discretize(self, x: Array, t, dt) -> tuple[Array, Array]:
        """DDPM's step: (F, G) = ((sqrt(1 - b) - 1) x, sqrt(b)), 1 - b = m(t)^2 / m(t - dt)^2."""
        log_ratio = _vp_log_mean_coeff(self.beta_min, self.beta_max, t) - _vp_log_mean_coeff(
            self.beta_min, self.beta_max, t - dt
        )
        b = -jnp.expm1(2.0 * log_ratio)
        return (jnp.sqrt(1.0 - b) - 1.0) * x, jnp.sqrt(b)


class SubVPSDE(NamedTuple):
    """Sub-VP SDE (paper Eq. 12 and Appendix B): VP's drift with a smaller diffusion,
    dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.

    Kernel: m(t) = exp(-1/2 int_0^t beta) as for VP and s(t) = 1 - m(t)^2 (Eq. 29: the
    variance is (1 - m^2)^2, below VP's 1 - m^2 at every t, hence the name); prior N(0, I).
    ``discretize`` is Euler-Maruyama: F = f(x, t) dt, G = g(t) sqrt(dt).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    eps: float = 1e-3

    # VP's beta schedule, drift and prior, shared
    beta = VPSDE.beta
    drift = VPSDE.drift
    prior_sample = VPSDE.prior_sample
    prior_log_prob = VPSDE.prior_log_prob

    def diffusion(self, t) -> Array:
        """g(t) = sqrt(beta(t) (1 - exp(-2 int_0^t beta)))."""
        log_mean = _vp_log_mean_coeff(self.beta_min, self.beta_max, t)
        return jnp.sqrt(self.beta(t) * -jnp.expm1(4.0 * log_mean))

    def kernel(self, t) -> tuple[Array, Array]:
        """(m(t), 1 - m(t)^2) with m(t) = exp(-1/2 int_0^t beta)."""
        log_mean = _vp_log_mean_coeff(self.beta_min, self.beta_max, t)
        return jnp.exp(log_mean), -jnp.expm1(2.0 * log_mean)

    def discretize(self, x: Array, t, dt) -> tuple[Array, Array]:
        """Euler-Maruyama: (F, G) = (f(x, t) dt, g(t) sqrt(dt))."""
        return self.drift(x, t) * dt, self.diffusion(t) * jnp.sqrt(dt)


SDE = VESDE | VPSDE | SubVPSDE


def check_sde(sde) -> None:
    """Raise TypeError unless ``sde`` is one of the SDEs here, and ValueError naming the
    field unless its constants are valid: 0 < sigma_min < sigma_max (VE),
    0 < beta_min <= beta_max (VP, sub-VP), 0 < eps < 1. Traced constants are not checked."""
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a VESDE, VPSDE or SubVPSDE, got {sde!r}")
    low, high = ("sigma_min", "sigma_max") if isinstance(sde, VESDE) else ("beta_min", "beta_max")
    check_positive(low, getattr(sde, low))
    check_positive(high, getattr(sde, high))
    lo, hi = concrete(getattr(sde, low)), concrete(getattr(sde, high))
    if lo is not None and hi is not None:
        too_high = lo >= hi if isinstance(sde, VESDE) else lo > hi
        if np.any(too_high):
            relation = "below" if isinstance(sde, VESDE) else "at most"
            raise ValueError(f"{low} must be {relation} {high}, got {low}={lo}, {high}={hi}")
    eps = concrete(sde.eps)
    if eps is not None and not (np.all(np.isfinite(eps)) and 0 < eps < 1):
        raise ValueError(f"eps (the SDE's smallest time) must be in (0, 1), got {sde.eps!r}")


def check_time(name: str, t, sde, low: float | None = None) -> None:
    """Raise ValueError unless every concrete time in ``t`` lies in [low, 1] (low defaults
    to the SDE's ``eps``); traced times are not checked."""
    low = sde.eps if low is None else low
    arr = concrete(t)
    bound = concrete(low)
    if arr is None or bound is None:
        return
    if not (np.all(np.isfinite(arr)) and np.all(arr >= bound) and np.all(arr <= 1.0)):
        raise ValueError(f"{name} must lie in [{float(bound):g}, 1], got {t!r}")


def std_weighting(sde, t) -> Array:
    """lambda(t) = s(t)^2, the kernel's variance: the paper's default weighting (Eq. 7 with
    lambda proportional to 1 / E||grad log p_0t||^2), which makes the DSM residual the
    noise-prediction error ||s(t) s_theta + z||^2 at every t."""
    return sde.kernel(t)[1] ** 2


def likelihood_weighting(sde, t) -> Array:
    """lambda(t) = g(t)^2 (Song, Durkan, Murray & Ermon 2021, "Maximum Likelihood Training of
    Score-Based Diffusion Models", Theorem 1): with it the score-matching objective bounds
    the KL divergence from the data to the model's SDE, i.e. the negative log-likelihood up
    to a constant."""
    return sde.diffusion(t) ** 2


def ve_noise_conditional(sde: VESDE, score_fn):
    """A VE-SDE score model as a noise-conditional (NCSN) one: ``score(x, sigma)`` is
    ``score_fn(x, t)`` at the time t where the kernel's std s(t) equals sigma.

    SMLD/NCSN is the VE SDE's discretisation (Song et al. 2021, Section 3.4 and Appendix B),
    so annealed Langevin (``samplers.noise_conditional_ula``) runs on a model trained with the
    VE SDE's loss, and one trained model serves NCSN's sampler and the reverse-SDE and ODE
    samplers. With the exact kernel s(t)^2 = sigma(t)^2 - sigma_min^2 (Eq. 29),
    t(sigma) = log(sqrt(sigma^2 + sigma_min^2) / sigma_min) / log(sigma_max / sigma_min),
    clipped to [eps, 1] (a ladder that starts at sigma_max asks for t a hair above 1).

    Args:
      sde: a VESDE.
      score_fn: ``score_fn(x, t)`` for one example, parameters closed over.

    Returns:
      ``score(x, sigma)`` for one example, a jax Partial.
    """
    if not isinstance(sde, VESDE):
        raise TypeError(f"sde must be a VESDE (only its kernel has m = 1), got {sde!r}")
    check_sde(sde)
    if not callable(score_fn):
        raise TypeError(f"score_fn must be a function score_fn(x, t), got {score_fn!r}")
    return jax.tree_util.Partial(_ve_noise_conditional, sde, as_pytree(score_fn))


def _ve_noise_conditional(sde, score_fn, x, sigma):
    t = jnp.log(jnp.sqrt(sigma**2 + sde.sigma_min**2) / sde.sigma_min) / jnp.log(
        sde.sigma_max / sde.sigma_min
    )
    return score_fn(x, jnp.clip(t, sde.eps, 1.0))
