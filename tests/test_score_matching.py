"""Exact and sliced score matching: the mathematics (Hyvärinen 2005; Song et al. 2019).

Statistical checks compare a Monte Carlo mean with its target at Z = 4 standard errors:
a two-sided false-alarm rate of 6.3e-5 per check under the normal approximation. A float32
rounding allowance of 1e-5 (1 + |target|) is added where the estimator can be exact
(a Rademacher probe on a near-diagonal Jacobian has near-zero variance).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scorejax import (
    Gaussian,
    GaussianMixture,
    divergence,
    dsm_loss,
    exact_sm_loss,
    hessian_trace,
    hutchinson_divergence,
    init_train_state,
    make_train_step,
    nets,
    score_from_energy,
    ssm_loss,
    ssm_vr_loss,
)

Z = 4.0
ROUNDING = 1e-5


def _mc_close(values, target):
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(values.size)
    tol = Z * se + ROUNDING * (1.0 + abs(float(target)))
    assert abs(values.mean() - float(target)) <= tol, (values.mean(), float(target), se)


def _score_net(dim, seed=0, hidden=(32, 32)):
    model = nets.MLPScore(hidden)
    return nets.apply_fn(model), model.init(jax.random.key(seed), jnp.zeros(dim))


def _energy_net(dim, seed=0, hidden=(32, 32)):
    model = nets.MLPEnergy(hidden)
    return nets.apply_fn(model), model.init(jax.random.key(seed), jnp.zeros(dim))


# --- the exact trace -------------------------------------------------------------------------


def _stacked(init, dim, num_seeds=3):
    """A network and ``num_seeds`` random parameter sets stacked on a leading axis."""
    fns_params = [init(dim, seed) for seed in range(num_seeds)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[p for _, p in fns_params])
    return fns_params[0][0], stacked


@pytest.mark.parametrize("dim", [1, 7])
def test_exact_trace_equals_trace_of_jacfwd_on_random_networks(dim):
    x = jax.random.normal(jax.random.key(dim), (dim,))
    score_fn, params = _stacked(_score_net, dim)
    exact = jax.jit(jax.vmap(divergence(score_fn), in_axes=(0, None)))(params, x)
    jacobians = jax.vmap(jax.jacfwd(score_fn, argnums=1), in_axes=(0, None))(params, x)
    np.testing.assert_allclose(exact, jnp.trace(jacobians, axis1=1, axis2=2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dim", [1, 7])
def test_hessian_trace_of_energy_networks(dim):
    x = jax.random.normal(jax.random.key(dim), (dim,))
    energy_fn, params = _stacked(_energy_net, dim)
    traces = jax.jit(jax.vmap(hessian_trace(energy_fn), in_axes=(0, None)))(params, x)
    hessians = jax.vmap(jax.hessian(energy_fn, argnums=1), in_axes=(0, None))(params, x)
    np.testing.assert_allclose(traces, jnp.trace(hessians, axis1=1, axis2=2), rtol=1e-5)
    # the score of an energy model is -grad E, so its divergence is -tr H
    div = jax.jit(jax.vmap(divergence(score_from_energy(energy_fn)), in_axes=(0, None)))
    np.testing.assert_allclose(div(params, x), -traces, rtol=1e-5)


def test_exact_trace_of_analytic_targets():
    # a Gaussian's score -Sigma^{-1}(x - mu) has divergence -tr Sigma^{-1} everywhere
    cov = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], np.float32)
    gauss = Gaussian(jnp.zeros(3), jnp.asarray(cov))
    x = jnp.array([0.3, -1.0, 2.0])
    div = jax.jit(divergence(Gaussian.score))(gauss, x)
    np.testing.assert_allclose(div, -np.trace(np.linalg.inv(cov)), rtol=1e-5)
    means = jnp.array([[-1.0, 0.0], [1.0, 1.0]])
    mixture = GaussianMixture(means, jnp.array([0.5, 0.8]), jnp.array([0.3, 0.7]))
    y = jnp.array([0.2, 0.4])
    np.testing.assert_allclose(
        jax.jit(divergence(GaussianMixture.score))(mixture, y),
        -jax.jit(hessian_trace(GaussianMixture.energy))(mixture, y),
        rtol=1e-5,
    )


@pytest.mark.parametrize("probe", [jax.random.normal, jax.random.rademacher])
def test_hutchinson_is_unbiased(probe):
    dim, num_keys = 6, 4000
    score_fn, params = _score_net(dim, seed=1)
    x = jax.random.normal(jax.random.key(7), (dim,))
    estimate = jax.jit(hutchinson_divergence(score_fn, probe=probe))
    keys = jax.random.split(jax.random.key(11), num_keys)
    values = jax.jit(jax.vmap(estimate, in_axes=(None, 0, None)))(params, keys, x)
    _mc_close(values, divergence(score_fn)(params, x))
    # M probes average M single-probe estimates: same key -> same value, unbiased as well
    many = hutchinson_divergence(score_fn, num_probes=5, probe=probe)
    assert many(params, keys[0], x) == many(params, keys[0], x)
    values5 = jax.jit(jax.vmap(many, in_axes=(None, 0, None)))(params, keys[:800], x)
    _mc_close(values5, divergence(score_fn)(params, x))


# --- the losses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, probe, num_projections",
    [
        (ssm_loss, jax.random.normal, 1),
        (ssm_loss, jax.random.rademacher, 1),
        (ssm_loss, jax.random.normal, 3),
        (ssm_vr_loss, jax.random.normal, 1),
        (ssm_vr_loss, jax.random.rademacher, 2),
    ],
)
def test_sliced_losses_are_unbiased_for_exact_sm(loss, probe, num_projections):
    dim, num_keys = 5, 3000
    score_fn, params = _score_net(dim, seed=2)
    batch = jax.random.normal(jax.random.key(3), (8, dim))
    exact = exact_sm_loss(params, jax.random.key(0), batch, score_fn=score_fn)
    sliced = jax.jit(partial(loss, score_fn=score_fn, num_projections=num_projections, probe=probe))
    keys = jax.random.split(jax.random.key(5), num_keys)
    values = jax.jit(jax.vmap(sliced, in_axes=(None, 0, None)))(params, keys, batch)
    _mc_close(values, exact)


def test_sliced_loss_of_energy_model_is_unbiased():
    dim = 4
    energy_fn, params = _energy_net(dim, seed=3)
    score_fn = score_from_energy(energy_fn)
    batch = jax.random.normal(jax.random.key(4), (8, dim))
    exact = exact_sm_loss(params, jax.random.key(0), batch, score_fn=score_fn)
    keys = jax.random.split(jax.random.key(6), 2000)
    values = jax.jit(jax.vmap(lambda k: ssm_loss(params, k, batch, score_fn=score_fn)))(keys)
    _mc_close(values, exact)


def _linear_score(params, x):
    return -params["precision"] @ (x - params["mean"])


def _gaussian_data(n=400):
    cov = jnp.array([[1.5, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.4]])
    return Gaussian(jnp.array([1.0, -2.0, 0.5]), cov).sample(jax.random.key(0), n)


def test_exact_sm_minimiser_is_the_sample_precision_and_mean():
    """Hyvärinen 2005, Section 3: for s(x) = -P(x - mu) the minimiser is P = C^{-1}, mu = x̄,
    with C the (1/N) sample covariance."""
    x = _gaussian_data()
    mean = jnp.mean(x, axis=0)
    cov = (x - mean).T @ (x - mean) / x.shape[0]
    loss = jax.jit(lambda p: exact_sm_loss(p, jax.random.key(0), x, score_fn=_linear_score))
    # J is quadratic in P at mu = x̄: one Newton step from any P lands on its minimiser
    p0 = jnp.eye(3)
    loss_p = lambda flat: loss({"precision": flat.reshape(3, 3), "mean": mean})
    grad, hess = jax.jit(jax.grad(loss_p))(p0.ravel()), jax.jit(jax.hessian(loss_p))(p0.ravel())
    newton = (p0.ravel() - jnp.linalg.solve(hess, grad)).reshape(3, 3)
    np.testing.assert_allclose(newton, jnp.linalg.inv(cov), rtol=1e-4, atol=1e-4)
    # and the closed form is a stationary point in (P, mu) jointly
    grads = jax.grad(loss)({"precision": jnp.linalg.inv(cov), "mean": mean})
    np.testing.assert_allclose(grads["precision"], 0.0, atol=1e-4)
    np.testing.assert_allclose(grads["mean"], 0.0, atol=1e-4)


def test_train_step_reaches_hyvarinen_estimate():
    """The same make_train_step trains exact SM to the closed form (optimiser convergence)."""
    x = _gaussian_data()
    mean = jnp.mean(x, axis=0)
    precision = jnp.linalg.inv((x - mean).T @ (x - mean) / x.shape[0])
    optimizer = optax.adam(3e-2)
    step = make_train_step(partial(exact_sm_loss, score_fn=_linear_score), optimizer)
    state = init_train_state({"precision": jnp.eye(3), "mean": jnp.zeros(3)}, optimizer)

    @jax.jit
    def train(state):
        body = lambda s, k: step(s, k, x)
        return jax.lax.scan(body, state, jax.random.split(jax.random.key(1), 3000))[0]

    params = train(state).params
    np.testing.assert_allclose(params["precision"], precision, atol=2e-3)
    np.testing.assert_allclose(params["mean"], mean, atol=2e-3)


@pytest.mark.parametrize("parameterisation", ["score", "energy"])
def test_exact_sm_and_fisher_divergence_differ_by_a_constant(parameterisation):
    """J(theta) = 1/2 E|s_theta - s*|^2 - 1/2 E|s*|^2 (Hyvärinen 2005, Theorem 1); for
    N(mu, Sigma) the constant is -1/2 tr Sigma^{-1}. Checked per sample, at two parameters."""
    cov = jnp.array([[1.0, 0.4], [0.4, 0.6]])
    target = Gaussian(jnp.array([0.5, -0.5]), cov)
    x = target.sample(jax.random.key(1), 20000)
    differences = []
    for seed in (0, 1):
        if parameterisation == "score":
            score_fn, params = _score_net(2, seed)
        else:
            energy_fn, params = _energy_net(2, seed)
            score_fn = score_from_energy(energy_fn)
        per_sample = jax.jit(
            jax.vmap(
                lambda xi, p=params, f=score_fn: (
                    exact_sm_loss(p, None, xi[None], score_fn=f)
                    - 0.5 * jnp.sum((f(p, xi) - target.score(xi)) ** 2)
                )
            )
        )
        differences.append(per_sample(x))
        _mc_close(differences[-1], -0.5 * jnp.trace(jnp.linalg.inv(cov)))
    # paired: the same samples at both parameters, so the data noise cancels in part
    _mc_close(differences[0] - differences[1], 0.0)


def _losses():
    return {
        "exact_sm": (exact_sm_loss, {}),
        "ssm_gaussian": (ssm_loss, {}),
        "ssm_rademacher_3": (ssm_loss, {"probe": jax.random.rademacher, "num_projections": 3}),
        "ssm_vr": (ssm_vr_loss, {}),
        "dsm": (dsm_loss, {"sigma": 0.3}),
    }


@pytest.mark.parametrize("name", list(_losses()))
@pytest.mark.parametrize("parameterisation", ["score", "energy"])
def test_every_loss_trains_both_parameterisations(name, parameterisation):
    loss, kwargs = _losses()[name]
    dim = 3
    if parameterisation == "score":
        score_fn, params = _score_net(dim, hidden=(16,))
    else:
        energy_fn, params = _energy_net(dim, hidden=(16,))
        score_fn = score_from_energy(energy_fn)
    optimizer = optax.adam(1e-3)
    step = jax.jit(make_train_step(partial(loss, score_fn=score_fn, **kwargs), optimizer))
    batch = jax.random.normal(jax.random.key(0), (16, dim))
    key = jax.random.key(1)
    state = init_train_state(params, optimizer)
    new_state, metrics = step(state, key, batch)
    changed = jax.tree_util.tree_map(lambda a, b: np.any(a != b), new_state.params, params)
    assert any(jax.tree_util.tree_leaves(changed))
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert metrics["grad_norm"] > 0
    # same key -> same result
    again = step(init_train_state(params, optimizer), key, batch)[1]
    assert metrics["loss"] == again["loss"]


@pytest.mark.parametrize("loss", [exact_sm_loss, ssm_loss, ssm_vr_loss])
def test_jit_and_no_jit_agree(loss):
    score_fn, params = _score_net(2, hidden=(8,))
    batch = jax.random.normal(jax.random.key(0), (4, 2))
    bound = partial(loss, score_fn=score_fn)
    key = jax.random.key(1)
    np.testing.assert_allclose(
        bound(params, key, batch), jax.jit(bound)(params, key, batch), rtol=1e-5, atol=1e-6
    )


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    score_fn, params = _score_net(2)
    batch = jnp.zeros((4, 2))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_projections"):
        ssm_loss(params, key, batch, score_fn=score_fn, num_projections=0)
    with pytest.raises(ValueError, match="num_projections"):
        ssm_vr_loss(params, key, batch, score_fn=score_fn, num_projections=1.5)
    with pytest.raises(ValueError, match="probe"):
        ssm_loss(params, key, batch, score_fn=score_fn, probe="gaussian")
    for loss in (exact_sm_loss, ssm_loss, ssm_vr_loss):
        with pytest.raises(ValueError, match="batch"):
            loss(params, key, jnp.zeros(2), score_fn=score_fn)
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_divergence(score_fn, num_probes=0)
    with pytest.raises(ValueError, match="probe"):
        hutchinson_divergence(score_fn, probe="rademacher")


# --- the experiment ---------------------------------------------------------------------------


def test_quadrature_noised_score_matches_the_closed_form():
    from experiments.score_matching import quadrature_noised_score

    mixture, sigma = (
        GaussianMixture(
            jnp.array([[-1.0, 0.0], [1.0, 0.5]]), jnp.array([0.3, 0.2]), jnp.array([0.4, 0.6])
        ),
        0.2,
    )
    score = quadrature_noised_score(mixture.log_prob, sigma, lim=3.0)
    y = jnp.array([[0.1, 0.2], [-1.2, 0.3], [0.9, 0.9]])
    np.testing.assert_allclose(
        jax.vmap(score)(y), jax.vmap(mixture.noised(sigma).score)(y), rtol=1e-3, atol=1e-3
    )


@pytest.mark.slow  # 48 s on 2 cores
def test_experiment_smoke_run(tmp_path):
    import json

    from experiments.common import parse_config
    from experiments.score_matching import SMOKE, Config, main, report

    cfg = parse_config(Config, SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    result = main(cfg)
    report(result, cfg)
    for name in ("tables.md", "metrics.json", "cost_loglog.png", "samples.png",
                 "divergence_magnitude.png"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["accuracy"]) == len(result["accuracy"]) > 0
    for row in result["accuracy"]:
        assert np.isfinite(row["fisher"]) and np.isfinite(row["mmd"]), row
    for row in result["cost"]:
        assert row["ms_per_step"] > 0 and row["memory_mb"] > 0, row
    # the exact score's terms satisfy E[div s*] = -E|s*|^2 (integration by parts)
    exact = next(r for r in result["terms"] if r["score"] == "exact")
    assert exact["mean_divergence"] < 0 < exact["mean_half_sq_norm"]
