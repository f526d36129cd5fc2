"""Ising model: exact enumeration against symmetries and Kaufman's closed form, MCMC
against enumeration within Monte Carlo error, Onsager's curves, denoising, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.diagnostics import mcse as monte_carlo_standard_error
from scorejax.ising import (
    Ising,
    annealed_gibbs,
    checkerboard_gibbs,
    checkerboard_metropolis,
    critical_beta,
    denoising_posterior,
    flip_noise,
    icm,
    ising_enumerate,
    magnetisation,
    onsager_energy_per_site,
    onsager_magnetisation,
    pixel_error,
    single_site_metropolis,
)
from scorejax.samplers import run, run_chains


def ising(coupling=1.0, field=0.0, beta=0.4):
    return Ising(jnp.float32(coupling), jnp.asarray(field, jnp.float32), jnp.float32(beta))


def kaufman_log_partition(k: float, m: int, n: int) -> float:
    """Exact log Z of the m x n periodic lattice at h = 0 (Kaufman 1949, Eq. 39), float64.

    Z = 1/2 (2 sinh 2K)^{mn/2} [prod_r 2cosh(m g_{2r+1}/2) + prod_r 2sinh(m g_{2r+1}/2)
        + prod_r 2cosh(m g_{2r}/2) + prod_r 2sinh(m g_{2r}/2)],
    cosh g_l = cosh 2K coth 2K - cos(l pi / n) (l != 0), g_0 = 2K + log tanh K (may be < 0).
    """

    def gamma(index):
        if index == 0:
            return 2 * k + np.log(np.tanh(k))
        return np.arccosh(np.cosh(2 * k) / np.tanh(2 * k) - np.cos(index * np.pi / n))

    odd = np.array([gamma(2 * r + 1) for r in range(n)])
    even = np.array([gamma(2 * r) for r in range(n)])
    terms = []  # (sign, log|prod|) of the four products
    for g in (odd, even):
        terms.append((1.0, np.sum(np.log(2 * np.cosh(m * g / 2)))))
        s = 2 * np.sinh(m * g / 2)
        terms.append((np.prod(np.sign(s)), np.sum(np.log(np.abs(s)))))
    top = max(t[1] for t in terms)
    total = sum(sign * np.exp(log - top) for sign, log in terms)
    return np.log(0.5) + 0.5 * m * n * np.log(2 * np.sinh(2 * k)) + top + np.log(total)


def test_enumeration_symmetry_and_infinite_temperature():
    # h -> -h maps x -> -x, a bijection of the states with equal weights
    for field in (0.3, -1.2):
        a = ising_enumerate(ising(field=field, beta=0.5), 4).log_partition
        b = ising_enumerate(ising(field=-field, beta=0.5), 4).log_partition
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # a site-dependent field: flip it everywhere
    field = jax.random.normal(jax.random.key(0), (4, 4))
    a = ising_enumerate(ising(field=field), 4).log_partition
    b = ising_enumerate(ising(field=-field), 4).log_partition
    np.testing.assert_allclose(a, b, rtol=1e-6)
    exact = ising_enumerate(ising(coupling=1.7, field=0.4, beta=0.0), 4)
    np.testing.assert_allclose(exact.log_partition, 16 * np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(exact.energy_per_site, 0.0, atol=1e-6)


@pytest.mark.parametrize("size", [2, 4])
def test_enumeration_matches_kaufman_closed_form(size):
    for beta in (0.1, 0.3, 0.4406868, 0.7, 1.2):
        exact = ising_enumerate(ising(beta=beta), size)
        np.testing.assert_allclose(
            exact.log_partition, kaufman_log_partition(beta, size, size), rtol=2e-6
        )


def test_energy_and_heat_capacity_are_derivatives_of_log_partition():
    # <H> = -d log Z / d beta and Var(H) = d^2 log Z / d beta^2 (any field)
    def log_z(beta):
        return ising_enumerate(ising(field=0.2, beta=beta), 3).log_partition

    beta = jnp.float32(0.35)
    exact = ising_enumerate(ising(field=0.2, beta=beta), 3)
    np.testing.assert_allclose(
        -jax.jit(jax.grad(log_z))(beta) / 9, exact.energy_per_site, rtol=1e-4
    )
    np.testing.assert_allclose(
        beta**2 * jax.jit(jax.grad(jax.grad(log_z)))(beta) / 9, exact.specific_heat, rtol=1e-3
    )
    # vmapping the enumeration over beta works
    many = jax.vmap(lambda b: ising_enumerate(ising(beta=b), 4))(jnp.array([0.2, 0.5]))
    assert many.log_partition.shape == (2,)
    np.testing.assert_allclose(many.log_partition[1], ising_enumerate(ising(beta=0.5), 4)[0])


def test_onsager_curves_against_kaufman_on_a_large_lattice():
    # away from beta_c finite-size corrections on 128 x 128 are exponentially small; the
    # energy per site is -d log Z / d beta / N by a central difference of Kaufman's formula
    n, eps = 128, 1e-4
    for beta in (0.3, 0.6):
        u = -(kaufman_log_partition(beta + eps, n, n) - kaufman_log_partition(beta - eps, n, n))
        u /= 2 * eps * n * n
        np.testing.assert_allclose(onsager_energy_per_site(beta), u, rtol=1e-4)
    assert float(onsager_magnetisation(0.4)) == 0.0  # above T_c
    np.testing.assert_allclose(onsager_energy_per_site(critical_beta()), -np.sqrt(2), rtol=1e-5)
    np.testing.assert_allclose(onsager_energy_per_site(5.0), -2.0, rtol=1e-5)  # ground state
    np.testing.assert_allclose(onsager_magnetisation(5.0), 1.0, rtol=1e-5)


# Four MCMC checks (two samplers x two temperatures), each a two-sided z-test at
# z = 3.29 (false-alarm rate 1e-3 when the MCSE is right; 4e-3 for the family).
Z_CRIT = 3.29


@pytest.mark.parametrize("make_sampler", [checkerboard_gibbs, checkerboard_metropolis])
@pytest.mark.parametrize("beta", [0.3, 0.6])
def test_mcmc_reproduces_enumerated_energy_within_mcse(make_sampler, beta):
    model = ising(beta=beta)
    exact = ising_enumerate(model, 4)
    num_chains, num_steps, burn_in = 16, 500, 50
    x0 = jnp.where(jax.random.bernoulli(jax.random.key(1), 0.5, (num_chains, 4, 4)), 1.0, -1.0)
    result = run_chains(jax.random.key(2), make_sampler(model), x0, num_steps, thin=1)
    energy = np.asarray(jax.vmap(jax.vmap(model.energy))(result.trace.x))[:, burn_in:] / 16
    mcse = float(monte_carlo_standard_error(energy))
    assert abs(energy.mean() - float(exact.energy_per_site)) < Z_CRIT * mcse
    absm = np.abs(np.asarray(jax.vmap(jax.vmap(magnetisation))(result.trace.x)))[:, burn_in:]
    assert abs(absm.mean() - float(exact.abs_magnetisation)) < Z_CRIT * (
        float(monte_carlo_standard_error(absm))
    )
    assert float(np.max(result.info.num_nonfinite)) == 0.0


def test_single_site_metropolis_on_odd_lattice_matches_enumeration():
    # 3 x 3 (odd: no checkerboard), one more z-test at z = 3.29
    model = ising(field=0.1, beta=0.4)
    exact = ising_enumerate(model, 3)
    x0 = jnp.ones((8, 3, 3))
    result = run_chains(jax.random.key(3), single_site_metropolis(model), x0, 300, thin=1)
    energy = np.asarray(jax.vmap(jax.vmap(model.energy))(result.trace.x))[:, 30:] / 9
    mcse = float(monte_carlo_standard_error(energy))
    assert abs(energy.mean() - float(exact.energy_per_site)) < Z_CRIT * mcse
    assert 0.0 < float(np.mean(result.info.acceptance_rate)) < 1.0


def test_kernels_jit_and_same_key_same_result():
    model = ising(beta=0.5)
    x0 = jnp.ones((4, 4))
    sampler = checkerboard_gibbs(model)
    a = run(jax.random.key(0), sampler, x0, 20)
    b = run(jax.random.key(0), sampler, x0, 20)
    np.testing.assert_array_equal(a.state.x, b.state.x)
    state, info = jax.jit(sampler.step)(jax.random.key(1), sampler.init(x0))
    assert set(np.unique(np.asarray(state.x))) <= {-1.0, 1.0}
    assert 0.0 <= float(info.flip_rate) <= 1.0


def _clean_image(size=16):
    i, j = np.indices((size, size))
    disc = (i - size / 2) ** 2 + (j - size / 2) ** 2 < (size / 3) ** 2
    return jnp.asarray(np.where(disc, 1.0, -1.0), jnp.float32)


def test_icm_is_a_local_optimum_and_denoising_helps():
    clean = _clean_image()
    noisy = flip_noise(jax.random.key(0), clean, 0.1)
    model = denoising_posterior(noisy, coupling=1.0, field_strength=0.5 * np.log(0.9 / 0.1))
    x = icm(model, noisy, num_sweeps=20)
    f = model.local_field(x)
    # conditional modes everywhere (where f != 0), and the energy went down
    assert bool(jnp.all(x * f >= 0))
    assert float(model.energy(x)) <= float(model.energy(noisy))
    noisy_error = float(pixel_error(noisy, clean))
    assert float(pixel_error(x, clean)) < noisy_error
    betas = jnp.linspace(0.5, 3.0, 30)
    annealed = annealed_gibbs(jax.random.key(1), model, noisy, betas).state.x
    assert float(pixel_error(annealed, clean)) < noisy_error


def test_bad_input_raises():
    with pytest.raises(ValueError, match="size"):
        ising_enumerate(ising(), 5)
    with pytest.raises(ValueError, match="field"):
        ising_enumerate(ising(field=jnp.zeros((3, 3))), 4)
    with pytest.raises(ValueError, match="beta"):
        checkerboard_gibbs(ising(beta=-1.0))
    with pytest.raises(ValueError, match="even"):
        run(jax.random.key(0), checkerboard_gibbs(ising()), jnp.ones((3, 3)), 5)
    with pytest.raises(ValueError, match="lattice"):
        run(jax.random.key(0), single_site_metropolis(ising()), jnp.ones(9), 5)
    with pytest.raises(ValueError, match="flip_prob"):
        flip_noise(jax.random.key(0), jnp.ones((4, 4)), 0.7)
    with pytest.raises(ValueError, match="field_strength"):
        denoising_posterior(jnp.ones((4, 4)), 1.0, -1.0)
    with pytest.raises(ValueError, match="betas"):
        annealed_gibbs(jax.random.key(0), ising(), jnp.ones((4, 4)), jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="same shape"):
        pixel_error(jnp.ones((4, 4)), jnp.ones((2, 2)))


@pytest.mark.slow  # an experiment smoke run (20-30 s); its library has fast tests
def test_experiment_smoke(tmp_path):
    import json

    from experiments.common import parse_config
    from experiments.ising import SMOKE, Config, main, report

    cfg = parse_config(Config, SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    result = main(cfg)
    report(result, cfg)
    for name in ("phase_transition.png", "denoising.png", "metrics.json", "results.md"):
        assert (tmp_path / name).exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    values = [v for row in saved["phase_transition"] for v in row.values()]
    values += [row["pixel_error"] for row in result["denoising"]]
    assert np.all(np.isfinite(values))


def _log_partition_float64(size: int, beta: float) -> float:
    """log Z of the periodic size x size Ising model at J = 1, h = 0, by NumPy in float64."""
    n = size * size
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    x = (2.0 * bits - 1.0).reshape(-1, size, size)
    bonds = np.sum(x * np.roll(x, 1, 1) + x * np.roll(x, 1, 2), axis=(1, 2))
    return float(np.logaddexp.reduce(beta * bonds))


def test_float64_is_honoured_when_enabled():
    """With jax_enable_x64 on and float64 (or Python float) numbers, enumeration and Onsager's
    curves compute in float64: agreement to 1e-12, which float32 (eps 1.2e-7) cannot give."""
    from scipy.special import ellipk

    with jax.enable_x64(True):
        exact = ising_enumerate(Ising(1.0, 0.0, 0.4), 3)
        assert exact.log_partition.dtype == jnp.float64
        np.testing.assert_allclose(float(exact.log_partition), _log_partition_float64(3, 0.4),
                                   rtol=1e-12)  # fmt: skip
        k = 0.3
        u = onsager_energy_per_site(k)
        assert u.dtype == jnp.float64 and onsager_magnetisation(0.6).dtype == jnp.float64
        q = 2 * np.sinh(2 * k) / np.cosh(2 * k) ** 2
        bracket = 1 + 2 / np.pi * (2 * np.tanh(2 * k) ** 2 - 1) * ellipk(q**2)
        np.testing.assert_allclose(float(u), -bracket / np.tanh(2 * k), rtol=1e-12)
    assert ising_enumerate(Ising(1.0, 0.0, 0.4), 2).log_partition.dtype == jnp.float32
