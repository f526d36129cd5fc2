"""Contrastive divergence: the loss's gradient, PCD's fixed point on a Gaussian family, nets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax.nets import ResNetEnergy, apply_fn, spectral_normalise


def _tiny_energy(params, x):
    # E = 1/2 sum w x^2 + b sum x: its parameter gradient is (x^2 / 2, sum x) by hand
    return 0.5 * jnp.sum(params["w"] * x**2) + params["b"] * jnp.sum(x)


def _tiny_grads(x):
    return {"w": 0.5 * x**2, "b": jnp.sum(x, axis=-1)}


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_cd_gradient_is_the_mean_gradient_difference(alpha):
    key_p, key_n = jax.random.split(jax.random.key(0))
    params = {"w": jnp.array([0.7, 1.3, 0.4]), "b": jnp.array(-0.2)}
    pos = jax.random.normal(key_p, (5, 3))
    neg = 2.0 * jax.random.normal(key_n, (7, 3)) + 0.5
    grads, aux = jax.grad(
        lambda p: sj.cd_loss(p, None, (pos, neg), energy_fn=_tiny_energy, alpha=alpha),
        has_aux=True,
    )(params)
    e_pos = jax.vmap(_tiny_energy, (None, 0))(params, pos)
    e_neg = jax.vmap(_tiny_energy, (None, 0))(params, neg)
    g_pos, g_neg = _tiny_grads(pos), _tiny_grads(neg)
    for name in ("w", "b"):
        shape = (-1,) + (1,) * (g_pos[name].ndim - 1)
        expected = jnp.mean(g_pos[name], 0) - jnp.mean(g_neg[name], 0)
        # d/dtheta alpha (mean E+^2 + mean E-^2) = 2 alpha (mean E+ dE+ + mean E- dE-)
        expected += 2 * alpha * jnp.mean(e_pos.reshape(shape) * g_pos[name], 0)
        expected += 2 * alpha * jnp.mean(e_neg.reshape(shape) * g_neg[name], 0)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["energy_pos"], jnp.mean(e_pos), rtol=1e-6)
    np.testing.assert_allclose(aux["energy_neg"], jnp.mean(e_neg), rtol=1e-6)
    # the negatives are constants: no gradient flows into the sampler
    g_x = jax.grad(lambda n: sj.cd_loss(params, None, (pos, n), energy_fn=_tiny_energy)[0])(neg)
    np.testing.assert_array_equal(g_x, jnp.zeros_like(neg))


def _gaussian_energy(params, x):
    d = x - params["mu"]
    return 0.5 * d @ params["P"] @ d


def test_pcd_recovers_the_gaussian_mle():
    """PCD with ULA on E = 1/2 (x - mu)^T P (x - mu) converges to the (ULA-corrected) MLE.

    Fixed point. With the full data set as the batch, the CD gradient vanishes when the
    chains' mean and second moments equal the data's: mu = xbar (the MLE; ULA's stationary
    mean is exact) and C_h(P) = S, the data covariance (1/n), where C_h(P) = (P - h P^2 / 2)^-1
    is ULA's stationary covariance at step h for precision P (x' = (I - hP) x + sqrt(2h) z,
    so C = (I - hP) C (I - hP) + 2h I). As h -> 0 this is P = S^-1, the MLE.

    Tolerance. With plain SGD the updates telescope: the average of the parameters over the
    last T steps differs from the fixed point by the time-average of the chains' Monte Carlo
    error (plus the drift (theta_T - theta_T0) / (lr T), negligible after burn-in). M = n
    persistent chains, each an AR(1) process per train step with coefficient
    rho = (1 - h lambda_min(P))^k after k ULA moves, so the mean has standard error
    sqrt(tau var / (M T)) with tau = (1 + rho) / (1 - rho) (second moments: rho^2, a smaller
    tau; we use the larger), var = S_ii for the mean and S_ii S_jj + S_ij^2 for the
    covariance entries (Gaussian fourth moments). We allow 5 standard errors
    (false-alarm rate < 6e-7 per entry, 5 entries).
    """
    mean_true = jnp.array([1.0, -0.5])
    cov_true = jnp.array([[1.0, 0.4], [0.4, 0.6]])
    data = sj.Gaussian(mean_true, cov_true).sample(jax.random.key(1), 1000)
    n = data.shape[0]
    xbar = jnp.mean(data, 0)
    cov_data = (data - xbar).T @ (data - xbar) / n
    h, k, lr = 0.1, 5, 0.05
    burn_in, num_avg = 1500, 2000

    score_fn = sj.score_from_energy(_gaussian_energy)
    make_sampler = lambda params: sj.ula(functools.partial(score_fn, params), h)
    noise_fn = sj.uniform_noise(-3.0, 3.0, (2,))
    optimizer = optax.sgd(lr)
    train_step = sj.make_cd_train_step(
        _gaussian_energy, make_sampler, optimizer, num_mcmc_steps=k, persistent=True,
        noise_fn=noise_fn, reinit_fraction=0.0,
    )  # fmt: skip
    params = {"mu": jnp.zeros(2), "P": jnp.eye(2)}
    buffer = sj.replay_init(jax.random.key(2), noise_fn, n)
    state = sj.init_train_state(params, optimizer, extra=buffer)

    @functools.partial(jax.jit, static_argnums=2)
    def steps(state, key, num):
        def body(carry, key):
            state, total = carry
            state, metrics = train_step(state, key, data)
            total = jax.tree_util.tree_map(jnp.add, total, state.params)
            return (state, total), metrics["diverged"]

        zero = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (state, total), diverged = jax.lax.scan(body, (state, zero), jax.random.split(key, num))
        return state, jax.tree_util.tree_map(lambda t: t / num, total), diverged

    state, _, _ = steps(state, jax.random.key(3), burn_in)
    state, avg, diverged = steps(state, jax.random.key(4), num_avg)
    assert float(jnp.max(diverged)) == 0.0

    p_hat = avg["P"]
    cov_model = jnp.linalg.inv(p_hat - 0.5 * h * p_hat @ p_hat)
    lam_min = float(jnp.min(jnp.linalg.eigvalsh(p_hat)))
    rho = (1.0 - h * lam_min) ** k
    tau = (1.0 + rho) / (1.0 - rho)
    m_eff = n * num_avg / tau
    se_mu = np.sqrt(np.diag(cov_data) / m_eff)
    d = np.diag(cov_data)
    se_cov = np.sqrt((np.outer(d, d) + np.asarray(cov_data) ** 2) / m_eff)
    assert np.all(np.abs(avg["mu"] - xbar) < 5 * se_mu), (avg["mu"], xbar, se_mu)
    assert np.all(np.abs(cov_model - cov_data) < 5 * se_cov), (cov_model, cov_data, se_cov)


def test_cd_and_short_run_steps_jit_and_are_deterministic():
    energy_fn = apply_fn(sj.nets.MLPEnergy(hidden=(16,)))
    params = sj.nets.MLPEnergy(hidden=(16,)).init(jax.random.key(0), jnp.zeros(2))
    score_fn = sj.score_from_energy(energy_fn)
    make_sampler = lambda p: sj.decoupled_langevin(functools.partial(score_fn, p), 0.1, 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    batch = jax.random.normal(jax.random.key(1), (32, 2))
    for noise_fn in (None, sj.uniform_noise(-2.0, 2.0, (2,))):
        step = jax.jit(
            sj.make_cd_train_step(
                energy_fn, make_sampler, optimizer, num_mcmc_steps=3, noise_fn=noise_fn,
                alpha=0.1, clip_range=(-3.0, 3.0),
            )
        )  # fmt: skip
        state = sj.init_train_state(params, optimizer)
        s1, m1 = step(state, jax.random.key(5), batch)
        s2, m2 = step(state, jax.random.key(5), batch)
        jax.tree_util.tree_map(np.testing.assert_array_equal, s1.params, s2.params)
        assert float(m1["loss"]) == float(m2["loss"])
        assert int(m1["num_nonfinite"]) == 0 and float(m1["diverged"]) == 0.0
        assert "sampler_num_nonfinite" in m1


def test_divergence_is_reported():
    # an energy with a huge scale: |E| above the limit flags the step as diverged
    energy_fn = lambda params, x: params * 1e6 * jnp.sum(x**2)
    score_fn = sj.score_from_energy(energy_fn)
    make_sampler = lambda p: sj.decoupled_langevin(functools.partial(score_fn, p), 1.0, 0.0)
    step = sj.make_cd_train_step(
        energy_fn, make_sampler, optax.sgd(1e-3), num_mcmc_steps=2, energy_limit=1e4
    )
    state = sj.init_train_state(jnp.array(1.0), optax.sgd(1e-3))
    _, metrics = jax.jit(step)(state, jax.random.key(0), jnp.ones((4, 2)))
    assert float(metrics["diverged"]) == 1.0
    assert int(metrics["num_nonfinite"]) > 0  # the Langevin step overflowed to inf/nan


def test_decoupled_langevin_temperature_and_ula_equivalence():
    score_fn = lambda x: -x  # standard normal, precision p = 1
    h = 0.05
    x0 = jnp.ones(3)
    a = sj.run(jax.random.key(0), sj.ula(score_fn, h), x0, 10).state.x
    b = sj.run(
        jax.random.key(0), sj.decoupled_langevin(score_fn, h, np.sqrt(2 * h)), x0, 10
    ).state.x
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # stationary variance of x' = (1 - h) x + s z is s^2 / (h (2 - h)) = T / (1 - h / 2)
    noise_scale = 0.1
    temperature = noise_scale**2 / (2 * h)
    x0 = jnp.zeros((4000, 1))
    result = sj.run_chains(
        jax.random.key(1), sj.decoupled_langevin(score_fn, h, noise_scale), x0, 200
    )
    var = float(jnp.var(result.state.x))
    expected = temperature / (1 - h / 2)
    se = expected * np.sqrt(2 / 4000)  # chains independent; 200 steps >> 1/h relaxation
    assert abs(var - expected) < 5 * se
    clipped = sj.run(
        jax.random.key(2), sj.decoupled_langevin(score_fn, 1.0, 5.0, clip_range=(-1, 1)), x0[0], 5
    )
    assert float(jnp.max(jnp.abs(clipped.state.x))) <= 1.0


def _check_resnet_energy(cases):
    for shape, widths, sn in cases:
        model = ResNetEnergy(widths=widths, spectral_norm=sn)
        params = jax.jit(model.init)(jax.random.key(0), jnp.zeros(shape))
        x = jax.random.uniform(jax.random.key(1), (3, *shape))
        energy_fn = jax.jit(apply_fn(model))
        energies = jax.jit(jax.vmap(apply_fn(model), (None, 0)))(params, x)
        assert energies.shape == (3,) and bool(jnp.all(jnp.isfinite(energies)))
        # one example at a time equals the vmapped batch
        np.testing.assert_allclose(energy_fn(params, x[1]), energies[1], rtol=1e-5)


def test_resnet_energy_and_spectral_norm():
    _check_resnet_energy([((8, 8), (4, 8), True)])
    kernel = jax.random.normal(jax.random.key(2), (3, 3, 4, 8))
    normalised = jax.jit(spectral_normalise, static_argnums=1)(kernel, 200)
    top = np.linalg.svd(np.asarray(normalised).reshape(-1, 8), compute_uv=False)[0]
    np.testing.assert_allclose(top, 1.0, rtol=1e-4)


@pytest.mark.slow
def test_resnet_energy_on_mnist_size():
    _check_resnet_energy([((28, 28), (4, 4, 4), True)])


def test_bad_input_errors():
    pos = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="negatives"):
        sj.cd_loss(None, None, (pos, jnp.zeros((4, 3))), energy_fn=_tiny_energy)
    with pytest.raises(ValueError, match="alpha"):
        sj.cd_loss(None, None, (pos, pos), energy_fn=_tiny_energy, alpha=-1.0)
    with pytest.raises(ValueError, match="positives"):
        sj.cd_loss(None, None, (jnp.zeros(2), pos), energy_fn=_tiny_energy)
    with pytest.raises(ValueError, match="pair"):
        sj.cd_loss(None, None, pos, energy_fn=_tiny_energy)
    with pytest.raises(ValueError, match="noise_scale"):
        sj.decoupled_langevin(lambda x: -x, 0.1, -1.0)
    with pytest.raises(ValueError, match="step_size"):
        sj.decoupled_langevin(lambda x: -x, 0.0, 1.0)
    with pytest.raises(ValueError, match="clip_range"):
        sj.decoupled_langevin(lambda x: -x, 0.1, 1.0, clip_range=(1.0, 0.0))
    make_sampler = lambda p: sj.ula(functools.partial(sj.score_from_energy(_tiny_energy), p), 0.1)
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        sj.make_cd_train_step(_tiny_energy, make_sampler, optax.sgd(0.1), num_mcmc_steps=0)
    with pytest.raises(TypeError, match="make_sampler"):
        step = sj.make_cd_train_step(_tiny_energy, lambda p: None, optax.sgd(0.1), num_mcmc_steps=1)
        params = {"w": jnp.ones(2), "b": jnp.zeros(())}
        step(sj.init_train_state(params, optax.sgd(0.1)), jax.random.key(0), pos)
    with pytest.raises(ValueError, match="image"):
        ResNetEnergy().init(jax.random.key(0), jnp.zeros(4))


@pytest.mark.slow  # an experiment smoke run (20-30 s); its library has fast tests
def test_ebm_cd_experiment_smoke(tmp_path):
    from experiments import ebm_cd
    from experiments.common import parse_config

    cfg = parse_config(ebm_cd.Config, ebm_cd.SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    metrics = ebm_cd.main(cfg)
    ebm_cd.report(metrics, cfg)
    for name in ("energy_landscapes.png", "samples.png", "loss_curves.png", "nll_table.md",
                 "metrics.json"):  # fmt: skip
        assert (tmp_path / name).exists()
    assert set(metrics["runs"]) == {f"two_gaussians/{m}" for m in cfg.methods}
    for run in metrics["runs"].values():
        assert np.isfinite(run["test_nll"]) and np.isfinite(run["true_nll"])


@pytest.mark.slow  # an experiment smoke run (20-30 s); its library has fast tests
def test_ebm_images_experiment_smoke(tmp_path):
    from experiments import ebm_images
    from experiments.common import parse_config

    cfg = parse_config(ebm_images.Config, ebm_images.SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    metrics = ebm_images.main(cfg)
    ebm_images.report(metrics, cfg)
    for name in ("samples.png", "training_curves.png", "denoising.png", "ood_auroc.md",
                 "sample_quality.md", "metrics.json"):  # fmt: skip
        assert (tmp_path / name).exists()
    assert all(0.0 <= v <= 1.0 for v in metrics["auroc"].values())
    assert np.isfinite(metrics["denoise_mse_after"])
    quality = metrics["sample_quality"]
    assert set(quality) == {"test digits (ceiling)", "uniform noise (floor)", "replay buffer",
                            "short run from noise", "long run"}  # fmt: skip
    assert all(0.0 <= row["fraction p >= 0.9"] <= 1.0 for row in quality.values())


def test_recognisability_separates_digits_from_noise():
    """The sample-quality proxy must tell held-out digits from noise and from the average digit."""
    from experiments.ebm_images import recognisability

    data = sj.data.load_digits(seed=0)
    rng = np.random.default_rng(0)
    noise = rng.uniform(size=data.test_images.shape).astype(np.float32)
    average_digit = np.broadcast_to(data.train_images.mean(0), data.test_images.shape)
    one_digit = np.broadcast_to(data.test_images[0], data.test_images.shape)
    rows, accuracy = recognisability(
        data,
        {"digits": data.test_images, "noise": noise, "average digit": average_digit,
         "one digit repeated": one_digit},
    )  # fmt: skip
    frac = {row["images"]: row["fraction p >= 0.9"] for row in rows}
    assert accuracy > 0.9  # logistic regression on 8x8 digits: ~0.96
    assert frac["digits"] > 0.6
    assert frac["noise"] < 0.2 and frac["average digit"] == 0.0
    by_name = {row["images"]: row for row in rows}
    assert by_name["digits"]["classes covered"] == 10
    # the test split is near-balanced (at most 42 of 359 in one class); a collapse is not
    assert by_name["digits"]["largest class share"] < 0.2
    assert by_name["one digit repeated"]["fraction p >= 0.9"] == 1.0
    assert by_name["one digit repeated"]["largest class share"] == 1.0
