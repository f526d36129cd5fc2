"""Products (AND) and mixtures (OR) of experts: closed forms for Gaussian experts, learned
experts through the same seam, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scorejax.energies import Gaussian, GaussianMixture, mixture_of_experts, product_of_experts
from scorejax.nets import MLPEnergy, apply_fn
from scorejax.partition import log_partition_quadrature
from scorejax.scores import score_from_energy

HORIZONTAL = Gaussian(jnp.array([0.0, 0.5]), jnp.array([[2.0, 0.0], [0.0, 0.1]]))
VERTICAL = Gaussian(jnp.array([1.0, 0.0]), jnp.array([[0.2, 0.05], [0.05, 1.5]]))


def test_product_of_gaussians_is_the_gaussian_with_summed_precisions():
    energy_fn = product_of_experts([Gaussian.energy, Gaussian.energy])
    params = (HORIZONTAL, VERTICAL)
    p1, p2 = jnp.linalg.inv(HORIZONTAL.cov), jnp.linalg.inv(VERTICAL.cov)
    cov = jnp.linalg.inv(p1 + p2)
    mean = cov @ (p1 @ HORIZONTAL.mean + p2 @ VERTICAL.mean)
    product = Gaussian(mean, cov)
    xs = jax.random.normal(jax.random.key(0), (20, 2))
    diff = jax.vmap(lambda x: energy_fn(params, x) - product.energy(x))(xs)
    np.testing.assert_allclose(diff, diff[0], atol=1e-4)  # equal up to a constant
    # its log Z: log Z_1 + log Z_2 + log N(m_1; m_2, S_1 + S_2)
    gap = Gaussian(VERTICAL.mean, HORIZONTAL.cov + VERTICAL.cov)
    expected = HORIZONTAL.log_partition() + VERTICAL.log_partition() + gap.log_prob(HORIZONTAL.mean)
    quadrature = log_partition_quadrature(
        lambda x: energy_fn(params, x), [-6.0, -6.0], [6.0, 6.0], 401
    )
    np.testing.assert_allclose(quadrature, expected, rtol=1e-4)
    # the score of a product is the sum of the scores
    score = score_from_energy(energy_fn)
    np.testing.assert_allclose(
        score(params, xs[0]), HORIZONTAL.score(xs[0]) + VERTICAL.score(xs[0]), rtol=1e-4
    )


def test_mixture_of_normalised_experts_is_the_mixture_density():
    log_prob = lambda g, x: -g.log_prob(x)  # normalised experts E_k = -log p_k
    weights = jnp.array([0.3, 0.7])
    energy_fn = mixture_of_experts([log_prob, log_prob], jnp.log(weights))
    a = Gaussian(jnp.array([-2.0, 0.0]), 0.25 * jnp.eye(2))
    b = Gaussian(jnp.array([2.0, 1.0]), 0.5 * jnp.eye(2))
    mixture = GaussianMixture(jnp.stack([a.mean, b.mean]), jnp.array([0.5, np.sqrt(0.5)]), weights)
    xs = 2 * jax.random.normal(jax.random.key(1), (20, 2))
    np.testing.assert_allclose(
        jax.vmap(lambda x: energy_fn((a, b), x))(xs), jax.vmap(mixture.energy)(xs), rtol=1e-5
    )
    quadrature = log_partition_quadrature(
        lambda x: energy_fn((a, b), x), [-7.0, -6.0], [7.0, 7.0], 401
    )
    np.testing.assert_allclose(quadrature, 0.0, atol=1e-4)
    # default weights are uniform
    uniform = mixture_of_experts([log_prob, log_prob])
    np.testing.assert_allclose(
        uniform((a, a), xs[0]), -a.log_prob(xs[0]), rtol=1e-5
    )  # OR of an expert with itself is the expert


def test_learned_and_analytic_experts_compose_and_train():
    net = MLPEnergy(hidden=(16,))
    net_params = net.init(jax.random.key(0), jnp.zeros(2))
    learned = apply_fn(net)
    experts = [learned, Gaussian.energy]
    params = (net_params, HORIZONTAL)
    x = jnp.array([0.3, -0.2])
    poe = product_of_experts(experts)
    moe = mixture_of_experts(experts)
    e1, e2 = learned(net_params, x), HORIZONTAL.energy(x)
    np.testing.assert_allclose(poe(params, x), e1 + e2, rtol=1e-6)
    np.testing.assert_allclose(moe(params, x), -jnp.logaddexp(-e1, -e2) + jnp.log(2.0), rtol=1e-6)
    # gradients reach the learned expert's parameters, under jit
    grads = jax.jit(jax.grad(poe))(params, x)
    assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(grads[0]))
    assert np.isfinite(float(jax.jit(moe)(params, x)))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="energy_fns"):
        product_of_experts([])
    with pytest.raises(ValueError, match="energy_fns"):
        mixture_of_experts([1.0])
    with pytest.raises(ValueError, match="log_weights"):
        mixture_of_experts([Gaussian.energy] * 2, jnp.zeros(3))
    with pytest.raises(ValueError, match="params"):
        product_of_experts([Gaussian.energy] * 2)((HORIZONTAL,), jnp.zeros(2))


@pytest.mark.slow  # an experiment smoke run (20-30 s); its library has fast tests
def test_experiment_smoke(tmp_path):
    from experiments.common import parse_config
    from experiments.product_of_experts import SMOKE, Config, main, report

    cfg = parse_config(Config, SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    result = main(cfg)
    report(result, cfg)
    for name in ("and_or.png", "metrics.json", "results.md"):
        assert (tmp_path / name).exists()
    rows = {(r["experts"], r["composition"]): r for r in result["compositions"]}
    assert len(rows) == 4
    assert all(np.isfinite(v) for r in rows.values() for v in r.values() if isinstance(v, float))
    # quadrature recovers the closed-form log Z of the analytic product and mixture
    for name in ("AND", "OR"):
        row = rows["analytic", name]
        np.testing.assert_allclose(row["log_z_quadrature"], row["log_z_exact_analytic"], atol=1e-3)
