"""Inverse problems: measurements, projections, conditional samplers, and the exact
posterior of a Gaussian mixture (checked on a grid, then recovered by the samplers).
Tolerances are Monte Carlo standard errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import inverse, samplers
from scorejax import sde as sdes

# two components separated along the unknown coordinate (x1), so a sample's component is
# the sign of x1; the known coordinate x0 is observed with noise
PRIOR = sj.GaussianMixture(
    means=jnp.array([[-1.0, -4.0], [1.0, 4.0]]),
    scales=jnp.array([[1.0, 0.7], [0.8, 1.2]]),
    weights=jnp.array([0.3, 0.7]),
)
KNOWN = np.array([True, False])
Y = jnp.array([-0.6])


def test_mixture_posterior_equals_bayes_rule_on_a_grid():
    measurement = inverse.inpainting(KNOWN, noise_std=0.5)
    posterior = inverse.mixture_posterior(PRIOR, measurement, Y)
    grid = np.linspace(-10, 10, 801)
    xs, ys = np.meshgrid(grid, grid, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    log_joint = np.asarray(jax.vmap(PRIOR.log_prob)(points), np.float64)
    log_joint += -0.5 * (points[:, 0] - float(Y[0])) ** 2 / 0.25
    brute = np.exp(log_joint - log_joint.max())
    brute /= brute.sum() * (grid[1] - grid[0]) ** 2
    exact = np.exp(np.asarray(jax.vmap(posterior.log_prob)(points), np.float64))
    assert np.max(np.abs(exact - brute)) < 1e-4 * brute.max()


@pytest.mark.slow
def test_exact_conditional_score_samplers_recover_the_posterior():
    """The posterior is a mixture, so its noised score is exact under any SDE; EM and PC
    sampling from it recover its weights (the sign of x1) and its mean of x0."""
    measurement = inverse.inpainting(KNOWN, noise_std=0.5)
    posterior = inverse.mixture_posterior(PRIOR, measurement, Y)
    sde = sdes.VPSDE()
    score = lambda x, t: posterior.marginal(sde, t).score(x)
    n = 4000
    x_init = sde.prior_sample(jax.random.key(0), (n, 2))
    weight = float(posterior.weights[1])
    exact_mean = float(jnp.sum(posterior.weights * posterior.means[:, 0]))
    for sampler in (samplers.pc_sampler(sde, score),
                    samplers.pc_sampler(sde, score, samplers.reverse_diffusion,
                                        samplers.langevin_corrector)):  # fmt: skip
        x = sj.run_chains(jax.random.key(1), sampler, x_init, 400,
                          schedule=samplers.reverse_time_grid(sde, 400)).state.x  # fmt: skip
        upper = np.asarray(x[:, 1] > 0, np.float64)
        assert abs(upper.mean() - weight) < 4 * np.sqrt(weight * (1 - weight) / n)
        x0 = np.asarray(x[:, 0], np.float64)
        assert abs(x0.mean() - exact_mean) < 4 * x0.std(ddof=1) / np.sqrt(n)


def test_denoising_from_the_observed_level_samples_the_posterior():
    """y = x + 0.8 n observed in full: the reverse SDE started at t* (s/m = 0.8) from m(t*) y
    samples p(x | y), the exact mixture posterior under A = I."""
    noise_std, y = 0.8, jnp.array([0.4, -0.8])
    posterior = inverse.mixture_posterior(PRIOR, inverse.inpainting([True, True], noise_std), y)
    sde = sdes.VPSDE()
    t_start, x_start = inverse.denoising_start(sde, y, noise_std)
    mean, std = sde.kernel(jnp.asarray(t_start))
    assert abs(float(std / mean) - noise_std) < 1e-6
    score = lambda x, t: PRIOR.marginal(sde, t).score(x)
    n = 4000
    grid = samplers.reverse_time_grid(sde, 200, t_start=t_start)
    x = sj.run_chains(jax.random.key(5), samplers.pc_sampler(sde, score),
                      jnp.broadcast_to(x_start, (n, 2)), 200, schedule=grid).state.x  # fmt: skip
    x = np.asarray(x, np.float64)
    # P(x1 > 0 | y), exact: sum_k w'_k Phi(mu'_k / s'_k) over the posterior's components
    z = posterior.means[:, 1] / posterior.scales[:, 1]
    upper = float(jnp.sum(posterior.weights * jax.scipy.stats.norm.cdf(z)))
    assert 0.2 < upper < 0.8  # an ambiguous observation: both modes matter
    assert abs(np.mean(x[:, 1] > 0) - upper) < 4 * np.sqrt(upper * (1 - upper) / n)
    exact_mean = np.asarray(jnp.sum(posterior.weights[:, None] * posterior.means, axis=0))
    assert np.all(np.abs(x.mean(axis=0) - exact_mean) < 4 * x.std(axis=0, ddof=1) / np.sqrt(n))


def test_reverse_time_grid_from_an_intermediate_time():
    sde = sdes.VPSDE()
    t, dt = samplers.reverse_time_grid(sde, 4, t_start=0.5)
    np.testing.assert_allclose(t[0], 0.5)
    np.testing.assert_allclose(t[-1] - dt[-1], sde.eps, rtol=1e-5)


@pytest.mark.slow
def test_replacement_inpainting_is_exact_for_a_factorised_prior():
    """With a diagonal Gaussian prior the unknown pixels are independent of the known ones, so
    projecting onto the observation (NCSN's replacement) targets their exact conditional,
    under annealed Langevin and under a reverse SDE; the known pixel ends equal to y."""
    prior = sj.GaussianMixture(jnp.array([[0.5, -1.0, 2.0]]), jnp.array([[0.7, 0.5, 1.5]]),
                               jnp.ones(1))  # fmt: skip
    mask = np.array([True, False, False])
    measurement = inverse.inpainting(mask)
    y = jnp.array([1.3])
    n = 4000
    sde = sdes.VESDE(sigma_max=10.0)
    score = lambda x, t: prior.marginal(sde, t).score(x)
    conditioned = inverse.measurement_conditioned(samplers.pc_sampler(sde, score), measurement,
                                                  y, inverse.sde_level(sde))  # fmt: skip
    x_init = sde.prior_sample(jax.random.key(2), (n, 3))
    result = sj.run_chains(jax.random.key(3), conditioned, x_init, 500,
                           schedule=samplers.reverse_time_grid(sde, 500))  # fmt: skip
    sigmas = sj.geometric_sigmas(10.0, 0.01, 40)
    nc_score = lambda x, sigma: prior.noised(sigma).score(x)
    annealed = inverse.measurement_conditioned(samplers.noise_conditional_ula(nc_score),
                                               measurement, y, inverse.sigma_level)  # fmt: skip
    step = samplers.ncsnv2_step_size(sigmas, 20)
    result_nc = sj.run_chains(jax.random.key(4), annealed, 10.0 * x_init / x_init.std(), 800,
                              schedule=samplers.annealed_step_sizes(sigmas, step, 20))  # fmt: skip
    # annealed Langevin at T = 20 keeps about 10% excess variance in the unknown pixels (a
    # property of the sampler at finite T, measured: 12% at T = 20, 7% at T = 100), so only
    # its mean is checked; the reverse SDE's variance is checked too
    for x, check_variance in ((result.state.x, True), (result_nc.state.x, False)):
        x = jax.vmap(lambda v: inverse.project_exact(measurement, y, v))(x)
        np.testing.assert_array_equal(np.asarray(x[:, 0]), np.full(n, 1.3, np.float32))
        unknown = np.asarray(x[:, 1:], np.float64)
        se = unknown.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(unknown.mean(axis=0) - np.array([-1.0, 2.0])) < 4 * se)
        if check_variance:  # the variance's standard error for Gaussian draws
            var = np.array([0.5, 1.5]) ** 2
            assert np.all(np.abs(unknown.var(axis=0, ddof=1) - var) < 4 * var * np.sqrt(2 / n))


def test_downsampling_averages_blocks_and_projection_meets_it():
    measurement = inverse.downsampling((4, 6), 2)
    x = jax.random.normal(jax.random.key(0), (4, 6))
    blocks = np.asarray(x).reshape(2, 2, 3, 2).mean(axis=(1, 3)).reshape(-1)
    np.testing.assert_allclose(inverse.measure(jax.random.key(1), measurement, x), blocks,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(measurement.matrix @ measurement.pinv, np.eye(6), atol=1e-5)
    y = jnp.arange(6.0)
    projected = inverse.project_exact(measurement, y, x)
    np.testing.assert_allclose(measurement.matrix @ projected.reshape(-1), y, atol=1e-5)
    # the projection moves x least: the change lies in the row space of A
    change = np.asarray(projected - x).reshape(-1)
    np.testing.assert_allclose(measurement.pinv @ (measurement.matrix @ change), change, atol=1e-5)


def test_inpainting_of_an_image_mask_keeps_the_known_pixels():
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True  # the left half is known
    measurement = inverse.inpainting(mask)
    truth = jax.random.uniform(jax.random.key(0), (4, 4))
    y = inverse.measure(jax.random.key(1), measurement, truth)
    x = inverse.project_exact(measurement, y, jnp.zeros((4, 4)))
    np.testing.assert_array_equal(np.asarray(x)[mask], np.asarray(truth)[mask])
    np.testing.assert_array_equal(np.asarray(x)[~mask], 0.0)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: inverse.inpainting(np.zeros(4, bool)), "mask"),
        (lambda: inverse.linear_measurement(np.ones((3, 2))), "matrix"),
        (lambda: inverse.denoising_start(sdes.VPSDE(), Y, 1e3), "noise_std"),
        (lambda: samplers.reverse_time_grid(sdes.VPSDE(), 4, t_start=1.5), "t_start"),
        (lambda: inverse.linear_measurement(np.ones((1, 2)), noise_std=-1.0), "noise_std"),
        (lambda: inverse.downsampling((5, 4), 2), "shape"),
        (lambda: inverse.project_exact(inverse.inpainting(KNOWN), Y, jnp.zeros(3)), "x"),
        (lambda: inverse.project_exact(inverse.inpainting(KNOWN), jnp.zeros(2), jnp.zeros(2)),
         "y"),
        (lambda: inverse.mixture_posterior(PRIOR, inverse.downsampling((2, 2), 2, 0.1),
                                           jnp.zeros(1)), "masking"),
        (lambda: inverse.mixture_posterior(PRIOR, inverse.inpainting(KNOWN), Y), "noise_std"),
        (lambda: inverse.measurement_conditioned(
            samplers.pc_sampler(sdes.VPSDE(), lambda x, t: x), inverse.inpainting(KNOWN),
            jnp.zeros(2), inverse.sigma_level), "y"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
