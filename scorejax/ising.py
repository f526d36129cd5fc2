"""The Ising model on a periodic lattice: energy, exact enumeration, Gibbs and Metropolis
kernels, Onsager's infinite-lattice curves, and Ising-prior image denoising.

Spins x in {-1, +1}^{H x W} on a torus (periodic boundaries; the lattice is L x L in the
usual setting). The Hamiltonian, with every nearest-neighbour bond counted once, is

    H(x) = -J sum_<ij> x_i x_j - sum_i h_i x_i,

and the Boltzmann law is p(x) = exp(-beta H(x)) / Z(beta). ``Ising(coupling, field, beta)``
is a NamedTuple pytree, so the unbound method ``Ising.energy(params, x)`` has the library's
energy-function form (it returns H; the weight of a state is exp(-beta H)). The field ``h``
is a scalar or an (H, W) array: the denoising posterior is an Ising model whose field is
the observed image times a strength (``denoising_posterior``).

Kernels follow the Sampler contract (``init(x) -> state``, ``step(key, state, beta) ->
(state, info)``; ``scorejax.samplers.run`` scans them, ``jax.vmap`` runs many chains), and
``step`` takes a per-step ``beta`` override so annealing is ``run(..., schedule=(betas,))``.
Their accept steps are the library's one ``metropolis_accept``, their info its
``MetropolisInfo``. Exact results and Onsager's curves compute in the precision of the
model's numbers (float64 when ``jax_enable_x64`` is on and they are float64 or Python
floats).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.tree_util import Partial

from scorejax._checks import check_positive, check_positive_int
from scorejax._compile import jit
from scorejax.samplers.base import RunResult, Sampler, count_nonfinite, run
from scorejax.samplers.mcmc import MetropolisInfo, metropolis_accept
from scorejax.types import Array, Key


class Ising(NamedTuple):
    """Ising model p(x) ∝ exp(-beta H(x)), H(x) = -J sum_<ij> x_i x_j - sum_i h_i x_i.

    Lenz 1920, Ising 1925; two dimensions solved by Onsager 1944. Bonds join each site to
    its right and lower neighbours on a torus, so an L x L lattice has 2 L^2 bonds.
    """

    coupling: Array  # J (scalar); J > 0 is ferromagnetic
    field: Array  # h, scalar or (H, W)
    beta: Array  # inverse temperature 1 / T (k_B = 1)

    def neighbour_sum(self, x: Array) -> Array:
        """sum of the four nearest neighbours of every site (periodic), shape of x."""
        return jnp.roll(x, 1, 0) + jnp.roll(x, -1, 0) + jnp.roll(x, 1, 1) + jnp.roll(x, -1, 1)

    def local_field(self, x: Array) -> Array:
        """f_i = J sum_{j ~ i} x_j + h_i, so p(x_i = +1 | rest) = sigmoid(2 beta f_i)."""
        return self.coupling * self.neighbour_sum(x) + self.field

    def energy(self, x: Array) -> Array:
        """H(x) = -J sum_<ij> x_i x_j - sum_i h_i x_i for one (H, W) configuration."""
        bonds = x * jnp.roll(x, 1, 0) + x * jnp.roll(x, 1, 1)
        return -self.coupling * jnp.sum(bonds) - jnp.sum(self.field * x)

    def log_weight(self, x: Array) -> Array:
        """Unnormalised log-probability -beta H(x)."""
        return -self.beta * self.energy(x)


def magnetisation(x: Array) -> Array:
    """m(x) = (1/N) sum_i x_i, the magnetisation per site of one configuration."""
    return jnp.mean(x)


def _check_lattice(x, *, even: bool) -> None:
    shape = np.shape(x)
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"x must be an (H, W) lattice of spins with H, W >= 2, got {shape}")
    if even and (shape[0] % 2 or shape[1] % 2):
        raise ValueError(
            f"checkerboard updates on a periodic lattice need even H and W, got {shape}"
        )


def _check_model(model: Ising) -> None:
    if not isinstance(model, Ising):
        raise ValueError(f"model must be an Ising NamedTuple, got {type(model).__name__}")
    check_positive("beta", model.beta)
    if np.ndim(model.coupling) != 0:
        raise ValueError(f"coupling must be a scalar, got shape {np.shape(model.coupling)}")


def _checkerboard(shape) -> Array:
    i, j = np.indices(shape)
    return jnp.asarray((i + j) % 2 == 0)


def _spins(x) -> Array:
    """A configuration as a float array (integer spins +-1 become JAX's default float)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _float_dtype(*values):
    """The floating dtype of ``values`` (Python floats count as JAX's default float)."""
    return jnp.result_type(*values, 1.0)


# ----------------------------------------------------------------------------- exact results


class IsingExact(NamedTuple):
    """Exact finite-lattice results from enumerating all 2^N states.

    log_partition: log Z(beta). energy_per_site: <H>/N. abs_magnetisation: <|m|>.
    magnetisation_sq: <m^2>. specific_heat: beta^2 Var(H) / N.
    """

    log_partition: Array
    energy_per_site: Array
    abs_magnetisation: Array
    magnetisation_sq: Array
    specific_heat: Array


def all_spin_states(size: int, dtype=None) -> Array:
    """All 2^(size^2) configurations of a size x size lattice, shape (2^N, size, size), in
    ``dtype`` (JAX's default float when None)."""
    size = check_positive_int("size", size)
    n = size * size
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    return jnp.asarray(2 * bits - 1, dtype or jnp.result_type(float)).reshape(-1, size, size)


def ising_enumerate(model: Ising, size: int) -> IsingExact:
    """Exact log Z and observables of an Ising model on a size x size torus, size <= 4.

    Z = sum_x exp(-beta H(x)) over all 2^N states (N = size^2 <= 16, i.e. 65,536 states for
    4 x 4), evaluated at once with ``jax.vmap`` and ``logsumexp``. Works under ``jax.vmap``
    over the model's parameters (e.g. a sweep over beta).

    Args:
      model: Ising(coupling, field, beta); field scalar or (size, size).
      size: lattice side L, 2 <= L <= 4.

    Returns:
      IsingExact(log_partition, energy_per_site, abs_magnetisation, magnetisation_sq,
      specific_heat).
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 4:
        raise ValueError(f"size must be an int in [2, 4] (2^(size^2) states), got {size!r}")
    if np.ndim(model.field) not in (0, 2) or (
        np.ndim(model.field) == 2 and np.shape(model.field) != (size, size)
    ):
        raise ValueError(f"field must be a scalar or ({size}, {size}), got {np.shape(model.field)}")
    return _ising_enumerate(model, size)


@jit
def _ising_enumerate(model, size):
    states = all_spin_states(size, _float_dtype(model.coupling, model.field, model.beta))
    n = size * size
    energies = jax.vmap(model.energy)(states)
    log_w = -model.beta * energies
    log_z = logsumexp(log_w)
    p = jnp.exp(log_w - log_z)
    m = jnp.mean(states, axis=(1, 2))
    mean_e = jnp.sum(p * energies)
    var_e = jnp.sum(p * (energies - mean_e) ** 2)
    return IsingExact(
        log_partition=log_z,
        energy_per_site=mean_e / n,
        abs_magnetisation=jnp.sum(p * jnp.abs(m)),
        magnetisation_sq=jnp.sum(p * m**2),
        specific_heat=model.beta**2 * var_e / n,
    )


def _ellipk_from_complement(k_prime: Array) -> Array:
    """K(k) = pi / (2 AGM(1, k')) from the complementary modulus k' = sqrt(1 - k^2)."""
    a, b = jnp.ones_like(k_prime), k_prime
    for _ in range(30):  # the AGM converges quadratically
        a, b = 0.5 * (a + b), jnp.sqrt(a * b)
    return jnp.pi / (2.0 * a)


def critical_beta(coupling=1.0) -> float:
    """Onsager's critical point of the square lattice: beta_c J = log(1 + sqrt 2) / 2."""
    return float(np.log1p(np.sqrt(2.0)) / 2.0 / coupling)


def onsager_energy_per_site(beta: Array, coupling=1.0) -> Array:
    """Energy per site of the infinite square lattice at h = 0 (Onsager 1944).

    u = -J coth(2K) [1 + (2/pi)(2 tanh^2(2K) - 1) K_1(q)], K = beta J,
    q = 2 sinh(2K) / cosh^2(2K), K_1 the complete elliptic integral of the first kind.
    K_1 is evaluated by the arithmetic-geometric mean from the complementary modulus
    sqrt(1 - q^2) = |1 - sinh^2(2K)| / cosh^2(2K), exact in floating point near T_c, where
    K_1 diverges logarithmically but its prefactor vanishes (u(T_c) = -sqrt(2) J).
    """
    k = jnp.asarray(beta, _float_dtype(beta, coupling)) * coupling
    sinh, cosh = jnp.sinh(2 * k), jnp.cosh(2 * k)
    k_prime = jnp.abs(1.0 - sinh**2) / cosh**2
    prefactor = 2.0 * jnp.tanh(2 * k) ** 2 - 1.0
    term = jnp.where(
        k_prime > 0, prefactor * _ellipk_from_complement(jnp.maximum(k_prime, 1e-30)), 0.0
    )
    bracket = 1.0 + (2.0 / jnp.pi) * term
    return -coupling / jnp.tanh(2 * k) * bracket


def onsager_magnetisation(beta: Array, coupling=1.0) -> Array:
    """Spontaneous magnetisation of the infinite lattice (Onsager 1949, Yang 1952):
    |m| = (1 - sinh(2 beta J)^-4)^(1/8) for beta > beta_c, else 0."""
    k = jnp.asarray(beta, _float_dtype(beta, coupling)) * coupling
    inner = 1.0 - jnp.sinh(2 * k) ** -4.0
    return jnp.where(inner > 0, jnp.abs(inner) ** 0.125, 0.0)


# ------------------------------------------------------------------------------------ kernels


class IsingState(NamedTuple):
    """One chain: the spin configuration x, (H, W) with entries +-1."""

    x: Array


class GibbsInfo(NamedTuple):
    """Per-step diagnostics of Gibbs: fraction of spins that changed, non-finite count."""

    flip_rate: Array
    num_nonfinite: Array


def _init(even: bool, x):
    _check_lattice(x, even=even)
    return IsingState(x)


def checkerboard_gibbs(model: Ising) -> Sampler:
    """Checkerboard (two-colour block) Gibbs sampler for the Ising model.

    Sites of one colour are conditionally independent given the other colour, so a sweep
    draws all "black" sites from p(x_i = +1 | rest) = sigmoid(2 beta f_i),
    f_i = J sum_{j~i} x_j + h_i, then all "white" sites (Geman & Geman 1984). One ``step``
    is one full sweep. Needs even H and W on the torus.

    Args:
      model: Ising(coupling, field, beta).

    Returns:
      Sampler; ``step(key, state, beta=model.beta)`` (a schedule of betas anneals), state
      IsingState, info GibbsInfo.
    """
    _check_model(model)
    return Sampler(Partial(_init, True), Partial(_gibbs_step, model))


def _gibbs_step(model, key, state, beta=None):
    beta = model.beta if beta is None else beta
    x = state.x
    black = _checkerboard(x.shape)
    changed = jnp.zeros((), jnp.float32)
    for colour, sub_key in zip((black, ~black), jax.random.split(key), strict=True):
        p_up = jax.nn.sigmoid(2.0 * beta * model.local_field(x))
        new = jnp.where(jax.random.uniform(sub_key, x.shape) < p_up, 1.0, -1.0).astype(x.dtype)
        x_new = jnp.where(colour, new, x)
        changed = changed + jnp.sum(x_new != x)
        x = x_new
    return IsingState(x), GibbsInfo(changed / x.size, count_nonfinite(x))


def _metropolis_info(prob_sum, accepted, x) -> MetropolisInfo:
    no = jnp.zeros((), bool)  # a flip cannot blow up
    return MetropolisInfo(prob_sum / x.size, accepted / x.size, no, count_nonfinite(x))


def checkerboard_metropolis(model: Ising) -> Sampler:
    """Checkerboard Metropolis: flip-proposals for all sites of one colour at once.

    Each proposal flips x_i -> -x_i, changing the energy by dH_i = 2 x_i f_i, and is
    accepted with probability min(1, exp(-beta dH_i)) (Metropolis et al. 1953). Same-colour
    sites do not interact, so the per-site decisions are independent and exact. One
    ``step`` is a sweep (both colours).

    Returns:
      Sampler; ``step(key, state, beta=model.beta)``, info MetropolisInfo (rates are the
      means over the N sites of a sweep).
    """
    _check_model(model)
    return Sampler(Partial(_init, True), Partial(_checkerboard_metropolis_step, model))


def _checkerboard_metropolis_step(model, key, state, beta=None):
    beta = model.beta if beta is None else beta
    x = state.x
    black = _checkerboard(x.shape)
    prob_sum = jnp.zeros((), jnp.float32)
    accepted = jnp.zeros((), jnp.float32)
    for colour, sub_key in zip((black, ~black), jax.random.split(key), strict=True):
        delta = 2.0 * x * model.local_field(x)
        accept, prob = metropolis_accept(sub_key, -beta * delta)
        accept = colour & accept
        x = jnp.where(accept, -x, x)
        prob_sum = prob_sum + jnp.sum(jnp.where(colour, prob, 0.0))
        accepted = accepted + jnp.sum(accept)
    return IsingState(x), _metropolis_info(prob_sum, accepted, x)


def single_site_metropolis(model: Ising) -> Sampler:
    """Random-scan single-site Metropolis: N = H W flip proposals at uniform random sites.

    Each proposal x_i -> -x_i is accepted with min(1, exp(-2 beta x_i f_i)) (Metropolis et
    al. 1953). One ``step`` is N proposals (one sweep on average), run with ``lax.scan``.
    Works for any H, W >= 2.

    Returns:
      Sampler; ``step(key, state, beta=model.beta)``, info MetropolisInfo.
    """
    _check_model(model)
    return Sampler(Partial(_init, False), Partial(_single_site_step, model))


def _single_site_step(model, key, state, beta=None):
    beta = model.beta if beta is None else beta
    x = state.x
    height, width = x.shape
    field = jnp.broadcast_to(jnp.asarray(model.field, x.dtype), x.shape)
    key_site, key_accept = jax.random.split(key)
    sites = jax.random.randint(key_site, (x.size,), 0, x.size)
    keys = jax.random.split(key_accept, x.size)

    def propose(x, inputs):
        site, key = inputs
        i, j = site // width, site % width
        neighbours = (
            x[(i + 1) % height, j]
            + x[(i - 1) % height, j]
            + x[i, (j + 1) % width]
            + x[i, (j - 1) % width]
        )
        delta = 2.0 * x[i, j] * (model.coupling * neighbours + field[i, j])
        accept, prob = metropolis_accept(key, -beta * delta)
        x = x.at[i, j].set(jnp.where(accept, -x[i, j], x[i, j]))
        return x, (prob, accept)

    x, (prob, accept) = jax.lax.scan(propose, x, (sites, keys))
    return IsingState(x), _metropolis_info(jnp.sum(prob), jnp.sum(accept), x)


# ---------------------------------------------------------------------------------- denoising


def flip_noise(key: Key, x: Array, flip_prob: float) -> Array:
    """Binary symmetric channel: each spin of x flips sign independently with ``flip_prob``."""
    if not 0.0 <= flip_prob < 0.5:
        raise ValueError(f"flip_prob must lie in [0, 0.5), got {flip_prob}")
    return jnp.where(jax.random.uniform(key, jnp.shape(x)) < flip_prob, -x, x)


def denoising_posterior(noisy: Array, coupling: float, field_strength: float) -> Ising:
    """The Ising-prior denoising posterior as an Ising model.

    The pairwise model p(x, y) ∝ exp(sum_i psi_i(x_i, y_i) + sum_<ij> psi_ij(x_i, x_j))
    with psi_ij = J x_i x_j (the Ising prior on the clean image x) and psi_i = eta x_i y_i
    (the observation y), so p(x | y) ∝ exp(J sum x_i x_j + eta sum y_i x_i): an Ising model
    with field h = eta y at beta = 1 (Bishop 2006, §8.3.3; Besag 1986). For a binary
    symmetric channel with flip probability q the likelihood term is exact with
    eta = (1/2) log((1 - q) / q).

    Args:
      noisy: (H, W) observed image in {-1, +1}.
      coupling: J > 0, the prior's smoothness.
      field_strength: eta > 0, trust in the observation.
    """
    check_positive("coupling", coupling)
    check_positive("field_strength", field_strength)
    _check_lattice(noisy, even=False)
    noisy = jnp.asarray(noisy, jnp.float32)
    return Ising(jnp.float32(coupling), field_strength * noisy, jnp.float32(1.0))


def icm(model: Ising, x0: Array, num_sweeps: int = 10) -> Array:
    """Iterated conditional modes (Besag 1986): set every site to its conditional mode.

    x_i <- sign(f_i) (kept where f_i = 0), one checkerboard colour at a time, so each half
    sweep maximises p(x | rest) over one colour exactly and H never increases: a greedy
    descent to a local minimum of the energy.

    Args:
      model: Ising model (typically ``denoising_posterior``); beta does not matter.
      x0: (H, W) initial configuration (typically the noisy image), H and W even.
      num_sweeps: number of sweeps.

    Returns:
      (H, W) configuration.
    """
    _check_lattice(x0, even=True)
    check_positive_int("num_sweeps", num_sweeps)
    return _icm(model, _spins(x0), num_sweeps)


@jit
def _icm(model, x0, num_sweeps):
    black = _checkerboard(x0.shape)

    def sweep(x, _):
        for colour in (black, ~black):
            f = model.local_field(x)
            mode = jnp.where(f > 0, 1.0, jnp.where(f < 0, -1.0, x)).astype(x.dtype)
            x = jnp.where(colour, mode, x)
        return x, None

    x, _ = jax.lax.scan(sweep, x0, None, length=num_sweeps)
    return x


def annealed_gibbs(key: Key, model: Ising, x0: Array, betas: Array) -> RunResult:
    """Simulated annealing with checkerboard Gibbs (Geman & Geman 1984).

    Sweep t samples at inverse temperature betas[t] times the model's own (so the target is
    p(x)^{beta_t}); with betas rising to large values the chain freezes near a mode, the
    MAP estimate in denoising.

    Args:
      key: PRNG key.
      model: Ising model (beta is the base inverse temperature, usually 1).
      x0: (H, W) initial configuration, H and W even.
      betas: (T,) increasing positive multipliers, one per sweep.

    Returns:
      RunResult; ``state.x`` is the final configuration.
    """
    betas = jnp.asarray(betas)
    if betas.ndim != 1:
        raise ValueError(f"betas must be a 1-D schedule, got shape {betas.shape}")
    check_positive("betas", betas)
    return run(
        key, checkerboard_gibbs(model), _spins(x0), betas.shape[0], schedule=(model.beta * betas,)
    )


def pixel_error(x: Array, clean: Array) -> Array:
    """Fraction of pixels where x differs from the clean image."""
    if np.shape(x) != np.shape(clean):
        raise ValueError(
            f"x and clean must have the same shape, got {np.shape(x)}, {np.shape(clean)}"
        )
    return jnp.mean(jnp.asarray(x) != jnp.asarray(clean))
