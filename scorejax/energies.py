"""Analytic targets: energies, normalised log-densities, closed-form scores, exact samplers.

Each target is a NamedTuple pytree of its parameters with methods, so the unbound
method is an energy function in the library's form: ``GaussianMixture.energy(params, x)``
takes the parameters first and one example ``x: (D,)``, and returns a scalar. The same
``score_from_energy`` therefore serves analytic and learned energies alike, and the
closed-form ``score`` beside each energy lets the tests compare the two.

Conventions: p(x) = exp(-E(x)) / Z, ``log_prob`` is normalised, ``log_partition`` is log Z
of ``energy`` (zero where the energy is defined as the negative normalised log-density).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp, ndtr

from scorejax.sde import check_sde, check_time
from scorejax.types import Array, Key

_LOG_2PI = math.log(2.0 * math.pi)  # a Python float: importing scorejax starts no JAX backend


def _check_example(x, dim) -> None:
    """An analytic target takes one example x of shape (D,): a batch must be vmapped, or it
    would broadcast silently against the target's own axes (K components of a mixture)."""
    if np.ndim(x) != 1 or (dim is not None and np.shape(x)[0] != dim):
        expected = "(D,)" if dim is None else f"({dim},)"
        raise ValueError(
            f"x must be one example of shape {expected} (batch with jax.vmap), "
            f"got shape {np.shape(x)}"
        )


def _normalised_log_weights(weights: Array) -> Array:
    log_w = jnp.log(jnp.asarray(weights))
    return log_w - logsumexp(log_w)


def boltzmann_probs(energies: Array, temperature: float = 1.0) -> Array:
    """Boltzmann distribution over a finite set of states.

    p_i = exp(-E_i / T) / Z with Z = sum_j exp(-E_j / T). For energies (3, 1, 2) at T = 1
    this gives (0.090, 0.665, 0.245).

    Args:
      energies: (N,) energies of the states.
      temperature: T > 0.

    Returns:
      (N,) probabilities summing to one.
    """
    return jax.nn.softmax(-jnp.asarray(energies) / temperature)


class Gaussian(NamedTuple):
    """Multivariate normal N(mean, cov) with full covariance.

    E(x) = 1/2 (x - mu)^T Sigma^{-1} (x - mu), log Z = D/2 log 2 pi + 1/2 log det Sigma,
    score -Sigma^{-1}(x - mu).
    """

    mean: Array  # (D,)
    cov: Array  # (D, D)

    def _cholesky(self):
        return jnp.linalg.cholesky(self.cov)

    def energy(self, x: Array) -> Array:
        """E(x) = 1/2 (x - mu)^T Sigma^{-1} (x - mu)."""
        _check_example(x, np.shape(self.mean)[-1])
        z = jax.scipy.linalg.solve_triangular(self._cholesky(), x - self.mean, lower=True)
        return 0.5 * jnp.sum(z**2)

    def log_partition(self) -> Array:
        """log Z = D/2 log 2 pi + 1/2 log det Sigma."""
        chol = self._cholesky()
        return 0.5 * self.mean.shape[-1] * _LOG_2PI + jnp.sum(jnp.log(jnp.diag(chol)))

    def log_prob(self, x: Array) -> Array:
        """Normalised log-density log N(x; mu, Sigma)."""
        return -self.energy(x) - self.log_partition()

    def score(self, x: Array) -> Array:
        """Closed-form score -Sigma^{-1}(x - mu)."""
        _check_example(x, np.shape(self.mean)[-1])
        return -jnp.linalg.solve(self.cov, x - self.mean)

    def sample(self, key: Key, n: int) -> Array:
        """n exact samples mu + L z, L L^T = Sigma. Returns (n, D)."""
        z = jax.random.normal(key, (n, self.mean.shape[-1]))
        return self.mean + z @ self._cholesky().T

    def noised(self, sigma) -> "Gaussian":
        """The Gaussian convolved with N(0, sigma^2 I): N(mu, Sigma + sigma^2 I)."""
        return Gaussian(self.mean, self.cov + sigma**2 * jnp.eye(self.mean.shape[-1]))


class GaussianMixture(NamedTuple):
    """Mixture sum_k w_k N(mu_k, diag(s_k^2)) with isotropic (K,) or diagonal (K, D) scales.

    E(x) = -log p(x) (so log Z = 0). The weights are normalised wherever they are used
    (w_k / sum_j w_j in ``log_prob``, ``score`` and ``sample`` alike), so unnormalised
    positive weights define the same mixture. ``noised(sigma)`` is the exact convolution
    with N(0, sigma^2 I): each component's variance grows by sigma^2 (the perturbed data
    distribution q_sigma of Song & Ermon 2019, Section 4.2).
    """

    means: Array  # (K, D)
    scales: Array  # (K,) isotropic or (K, D) diagonal
    weights: Array  # (K,) positive (normalised on use)

    def _scales(self) -> Array:
        scales = jnp.asarray(self.scales)
        if scales.ndim == 1:
            scales = scales[:, None]
        return jnp.broadcast_to(scales, self.means.shape)

    def component_log_probs(self, x: Array) -> Array:
        """(K,) log w_k + log N(x; mu_k, diag(s_k^2)), w normalised."""
        _check_example(x, np.shape(self.means)[-1])
        scales = self._scales()
        z = (x - self.means) / scales
        log_norm = -0.5 * jnp.sum(z**2 + _LOG_2PI + 2 * jnp.log(scales), axis=-1)
        return _normalised_log_weights(self.weights) + log_norm

    def log_prob(self, x: Array) -> Array:
        """log p(x) = logsumexp_k [log w_k + log N(x; mu_k, diag(s_k^2))]."""
        return logsumexp(self.component_log_probs(x))

    def energy(self, x: Array) -> Array:
        """E(x) = -log p(x)."""
        return -self.log_prob(x)

    def log_partition(self) -> Array:
        """log Z = 0: the energy is the negative normalised log-density."""
        return jnp.zeros(())

    def score(self, x: Array) -> Array:
        """Closed form sum_k r_k(x) (mu_k - x) / s_k^2, r_k the posterior responsibilities."""
        resp = jax.nn.softmax(self.component_log_probs(x))
        return jnp.sum(resp[:, None] * (self.means - x) / self._scales() ** 2, axis=0)

    def sample(self, key: Key, n: int) -> Array:
        """n exact samples: a component by its weight, then its Gaussian. Returns (n, D)."""
        key_k, key_z = jax.random.split(key)
        p = jnp.asarray(self.weights) / jnp.sum(self.weights)
        k = jax.random.choice(key_k, self.means.shape[0], (n,), p=p)
        z = jax.random.normal(key_z, (n, self.means.shape[1]))
        return self.means[k] + self._scales()[k] * z

    def noised(self, sigma) -> "GaussianMixture":
        """The exact mixture convolved with N(0, sigma^2 I): scales sqrt(s_k^2 + sigma^2)."""
        return GaussianMixture(self.means, jnp.sqrt(self._scales() ** 2 + sigma**2), self.weights)

    def marginal(self, sde, t) -> "GaussianMixture":
        """The exact law of x(t) under a score SDE (``scorejax.sde``) started from this mixture.

        With the kernel x(t) = m(t) x(0) + s(t) z, component k becomes
        N(m(t) mu_k, diag(m(t)^2 s_k^2 + s(t)^2)) with its weight unchanged (Song et al.
        2021, Eq. 29 applied per component), so the score, log-density and samples of the
        noised data are exact at every t in [0, 1] (t = 0 returns the mixture itself).
        """
        check_sde(sde)
        check_time("t", t, sde, low=0.0)
        mean, std = sde.kernel(jnp.asarray(t))
        scales = jnp.sqrt((mean * self._scales()) ** 2 + std**2)
        return GaussianMixture(mean * self.means, scales, self.weights)


def _trapezoid_log_integral(log_f: Array, dx: float) -> Array:
    """log of the trapezoid rule integral of exp(log_f) on a uniform grid."""
    log_w = jnp.full(log_f.shape, jnp.log(dx)).at[0].add(-jnp.log(2.0)).at[-1].add(-jnp.log(2.0))
    return logsumexp(log_f + log_w)


def _inverse_cdf_sample(key: Key, grid: Array, log_density: Array, shape) -> Array:
    """Sample a 1-D density tabulated on a fine grid by inverting its trapezoid CDF.

    The error is that of linear interpolation of the CDF, O(h^2) in the grid spacing h.
    """
    density = jnp.exp(log_density - jnp.max(log_density))
    cdf = jnp.concatenate([jnp.zeros(1), jnp.cumsum(0.5 * (density[1:] + density[:-1]))])
    u = jax.random.uniform(key, shape) * cdf[-1]
    return jnp.interp(u, cdf, grid)


class DoubleWell(NamedTuple):
    """Double well in D dimensions with a barrier of height ``barrier`` along x_1.

    E(x) = barrier (x_1^2 - 1)^2 + 1/2 sum_{i>1} x_i^2: minima at x_1 = +-1 with E = 0,
    saddle at x_1 = 0 with E = barrier, so the barrier height Delta E equals ``barrier``
    (at temperature one; Kramers' rate for escape scales as exp(-Delta E)).
    """

    barrier: Array  # scalar Delta E > 0

    def energy(self, x: Array) -> Array:
        """E(x) = barrier (x_1^2 - 1)^2 + 1/2 sum_{i>1} x_i^2."""
        _check_example(x, None)
        return self.barrier * (x[0] ** 2 - 1.0) ** 2 + 0.5 * jnp.sum(x[1:] ** 2)

    def score(self, x: Array) -> Array:
        """Closed form: (-4 barrier x_1 (x_1^2 - 1), -x_2, ..., -x_D)."""
        _check_example(x, None)
        return (-x).at[0].set(-4.0 * self.barrier * x[0] * (x[0] ** 2 - 1.0))

    def _grid(self):
        # exp(-barrier x^4) < e^-50 beyond |x| = (50 / barrier)^(1/4) + 1
        half_width = 1.0 + jnp.maximum(2.0, (50.0 / self.barrier) ** 0.25)
        grid = jnp.linspace(-half_width, half_width, 8001)
        # the spacing from the endpoints: grid[1] - grid[0] loses digits in float32
        return grid, -self.barrier * (grid**2 - 1.0) ** 2, 2 * half_width / 8000

    def log_partition(self, dim: int) -> Array:
        """log Z in ``dim`` dimensions: a 1-D integral along x_1 (trapezoid on 8001 points,
        spectrally accurate for this smooth, rapidly decaying integrand) plus (D-1)/2 log 2 pi.
        """
        _, log_f, dx = self._grid()
        return _trapezoid_log_integral(log_f, dx) + 0.5 * (dim - 1) * _LOG_2PI

    def log_prob(self, x: Array) -> Array:
        """Normalised log-density -E(x) - log Z."""
        return -self.energy(x) - self.log_partition(x.shape[-1])

    def sample(self, key: Key, n: int, dim: int = 2) -> Array:
        """n samples in ``dim`` dimensions: x_1 by inverse CDF on a fine grid, the rest N(0, 1)."""
        key_1, key_rest = jax.random.split(key)
        grid, log_f, _ = self._grid()
        x1 = _inverse_cdf_sample(key_1, grid, log_f, (n,))
        rest = jax.random.normal(key_rest, (n, dim - 1))
        return jnp.concatenate([x1[:, None], rest], axis=1)


def _safe_norm(x: Array) -> Array:
    # the norm's gradient at 0 is undefined; use a finite surrogate there
    sq = jnp.sum(x**2)
    return jnp.sqrt(jnp.where(sq > 0, sq, 1e-30))


class Rings(NamedTuple):
    """Concentric rings in 2-D: p(x) = sum_k w_k exp(-(|x| - r_k)^2 / (2 s^2)) / C_k.

    C_k = 2 pi [s^2 exp(-r_k^2 / 2 s^2) + r_k s sqrt(2 pi) Phi(r_k / s)] normalises each ring
    (the radial integral of r exp(-(r - r_k)^2 / 2 s^2) over r > 0). E(x) = -log p(x). The
    weights are normalised wherever they are used.
    """

    radii: Array  # (K,)
    scale: Array  # scalar ring width s
    weights: Array  # (K,) positive (normalised on use)

    def _log_norms(self) -> Array:
        r, s = self.radii, self.scale
        c = s**2 * jnp.exp(-(r**2) / (2 * s**2)) + r * s * jnp.sqrt(2 * jnp.pi) * ndtr(r / s)
        return jnp.log(2 * jnp.pi * c)

    def component_log_probs(self, x: Array) -> Array:
        """(K,) log w_k - (|x| - r_k)^2 / 2 s^2 - log C_k, w normalised."""
        _check_example(x, 2)
        radius = _safe_norm(x)
        return (
            _normalised_log_weights(self.weights)
            - (radius - self.radii) ** 2 / (2 * self.scale**2)
            - self._log_norms()
        )

    def log_prob(self, x: Array) -> Array:
        """Normalised log-density."""
        return logsumexp(self.component_log_probs(x))

    def energy(self, x: Array) -> Array:
        """E(x) = -log p(x)."""
        return -self.log_prob(x)

    def log_partition(self) -> Array:
        """log Z = 0: the energy is the negative normalised log-density."""
        return jnp.zeros(())

    def score(self, x: Array) -> Array:
        """Closed form sum_k r_k(x) (r_k - |x|) / s^2 * x / |x|."""
        radius = _safe_norm(x)
        resp = jax.nn.softmax(self.component_log_probs(x))
        return jnp.sum(resp * (self.radii - radius)) / self.scale**2 * x / radius

    def sample(self, key: Key, n: int) -> Array:
        """n samples: a ring by weight, the radius by inverse CDF of r exp(-(r - r_k)^2/2s^2)
        on a fine grid, the angle uniform. Returns (n, 2)."""
        key_k, key_r, key_a = jax.random.split(key, 3)
        p = jnp.asarray(self.weights) / jnp.sum(self.weights)
        k = jax.random.choice(key_k, self.radii.shape[0], (n,), p=p)
        top = jnp.max(self.radii) + 10 * self.scale
        grid = jnp.linspace(0.0, top, 4001)
        log_f = jnp.log(grid + 1e-30)[None] - (grid[None] - self.radii[:, None]) ** 2 / (
            2 * self.scale**2
        )
        # invert each ring's CDF for every uniform, then keep the drawn ring's radius
        radii = jax.vmap(lambda lf: _inverse_cdf_sample(key_r, grid, lf, (n,)))(log_f)
        radius = jnp.take_along_axis(radii, k[None], axis=0)[0]
        angle = jax.random.uniform(key_a, (n,), maxval=2 * jnp.pi)
        return radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)


class Banana(NamedTuple):
    """Twisted Gaussian ("banana", Haario, Saksman & Tamminen 1999) in 2-D.

    x_1 ~ N(0, a^2), x_2 | x_1 ~ N(b (x_1^2 - a^2), 1). The map is volume preserving, so
    log p(x) = log N(x_1; 0, a^2) + log N(x_2 - b (x_1^2 - a^2); 0, 1) and E(x) = -log p(x).
    """

    scale: Array  # a
    curvature: Array  # b

    def _u(self, x):
        _check_example(x, 2)
        return x[1] - self.curvature * (x[0] ** 2 - self.scale**2)

    def log_prob(self, x: Array) -> Array:
        """Normalised log-density."""
        a = self.scale
        return -0.5 * (x[0] / a) ** 2 - jnp.log(a) - 0.5 * self._u(x) ** 2 - _LOG_2PI

    def energy(self, x: Array) -> Array:
        """E(x) = -log p(x)."""
        return -self.log_prob(x)

    def log_partition(self) -> Array:
        """log Z = 0: the energy is the negative normalised log-density."""
        return jnp.zeros(())

    def score(self, x: Array) -> Array:
        """Closed form (-x_1/a^2 + 2 b x_1 u, -u), u = x_2 - b (x_1^2 - a^2)."""
        u = self._u(x)
        return jnp.stack([-x[0] / self.scale**2 + 2 * self.curvature * x[0] * u, -u])

    def sample(self, key: Key, n: int) -> Array:
        """n exact samples by the generative map. Returns (n, 2)."""
        z = jax.random.normal(key, (n, 2))
        x1 = self.scale * z[:, 0]
        x2 = z[:, 1] + self.curvature * (x1**2 - self.scale**2)
        return jnp.stack([x1, x2], axis=1)


# ------------------------------------------------------------------------------------------
# Composing energies: products of experts (AND) and mixtures of experts (OR)


def _check_energy_fns(energy_fns) -> tuple:
    energy_fns = tuple(energy_fns)
    if len(energy_fns) < 1 or not all(callable(f) for f in energy_fns):
        raise ValueError("energy_fns must be a non-empty sequence of energy_fn(params, x)")
    return energy_fns


def _check_params(params, num_experts: int) -> None:
    if not isinstance(params, tuple | list) or len(params) != num_experts:
        raise ValueError(
            f"params must be a tuple with one entry per expert ({num_experts}), "
            f"got {type(params).__name__}"
        )


def product_of_experts(energy_fns):
    """Compose energies by summation: a product of experts, the "AND" of the experts.

    E(x) = sum_k E_k(x), i.e. p(x) ∝ prod_k exp(-E_k(x)) (Hinton 2002, Eq. 1): x must be
    plausible under every expert. The log-partition is not the sum of the experts' (for two
    Gaussians the product is the Gaussian with summed precisions).

    Convention: every expert is an energy function of (params, x), the library's form
    (``Gaussian.energy``, ``nets.apply_fn(MLPEnergy(...))``, ``RBM.free_energy``), and the
    composed energy is again one, with ``params`` a tuple holding each expert's params in
    order. Analytic and learned experts therefore mix freely, ``score_from_energy`` and
    the losses apply unchanged, and training the composition trains every expert. A
    closed-over expert ``f(x)`` enters as ``lambda _, x: f(x)`` with params None.

    Args:
      energy_fns: sequence of K energy functions ``E_k(params_k, x) -> ()``.

    Returns:
      energy_fn(params, x) with params a K-tuple.
    """
    energy_fns = _check_energy_fns(energy_fns)

    def energy_fn(params, x):
        _check_params(params, len(energy_fns))
        return sum(f(p, x) for f, p in zip(energy_fns, params, strict=True))

    return energy_fn


def mixture_of_experts(energy_fns, log_weights=None):
    """Compose energies by log-sum-exp: a mixture, the "OR" of the experts.

    E(x) = -logsumexp_k(-E_k(x) + log w_k), i.e. p(x) ∝ sum_k w_k exp(-E_k(x)): x need be
    plausible under one expert only. With normalised experts (E_k = -log p_k) and weights
    summing to one this is the mixture density itself (log Z = 0); with unnormalised
    experts component k effectively weighs w_k Z_k, so normalise learned experts first
    (e.g. subtract ``log_partition_quadrature`` in 2-D) to control the weights.

    Convention as ``product_of_experts``: experts are energy_fn(params_k, x) and the result
    takes a K-tuple of params.

    Args:
      energy_fns: sequence of K energy functions.
      log_weights: (K,) log mixture weights (default log(1/K)).

    Returns:
      energy_fn(params, x) with params a K-tuple.
    """
    energy_fns = _check_energy_fns(energy_fns)
    num = len(energy_fns)
    if log_weights is None:
        log_weights = jnp.full(num, -jnp.log(float(num)))
    log_weights = jnp.asarray(log_weights, jnp.float32)
    if log_weights.shape != (num,):
        raise ValueError(f"log_weights must have shape ({num},), got {log_weights.shape}")

    def energy_fn(params, x):
        _check_params(params, num)
        neg = jnp.stack([-f(p, x) for f, p in zip(energy_fns, params, strict=True)])
        return -logsumexp(neg + log_weights)

    return energy_fn
