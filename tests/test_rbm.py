"""RBM: free energy and conditionals against enumeration, block Gibbs against the exact
distribution, CD/PCD training, DBN, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import logsumexp

from scorejax.losses import cd_loss
from scorejax.rbm import (
    RBM,
    RBMTrainConfig,
    block_gibbs,
    init_rbm,
    rbm_log_likelihood,
    rbm_log_partition_exact,
    sample_dbn,
    train_dbn,
    train_rbm,
)
from scorejax.replay import ReplayBuffer, make_cd_train_step
from scorejax.samplers import run, run_chains
from scorejax.training import init_train_state


def random_rbm(key, num_visible, num_hidden, scale=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    return RBM(
        scale * jax.random.normal(k1, (num_visible, num_hidden)),
        jax.random.normal(k2, (num_visible,)),
        jax.random.normal(k3, (num_hidden,)),
    )


def binary_states(n):
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=n)), jnp.float32)


def test_free_energy_equals_enumerated_sum_over_hidden():
    params = random_rbm(jax.random.key(0), 5, 4)
    hs = binary_states(4)
    for v in binary_states(5):
        neg_e = jax.vmap(lambda h, v=v: -params.energy(v, h))(hs)
        np.testing.assert_allclose(params.free_energy(v), -logsumexp(neg_e), rtol=1e-5)
    # and the unbound method is an energy_fn(params, x)
    v = binary_states(5)[7]
    assert float(RBM.free_energy(params, v)) == float(params.free_energy(v))


def test_conditionals_match_enumeration():
    params = random_rbm(jax.random.key(1), 4, 3)
    vs, hs = binary_states(4), binary_states(3)
    for v in vs:
        w = jax.nn.softmax(jax.vmap(lambda h, v=v: -params.energy(v, h))(hs))
        np.testing.assert_allclose(params.hidden_probs(v), w @ hs, rtol=1e-5, atol=1e-6)
    for h in hs:
        w = jax.nn.softmax(jax.vmap(lambda v, h=h: -params.energy(v, h))(vs))
        np.testing.assert_allclose(params.visible_probs(h), w @ vs, rtol=1e-5, atol=1e-6)


def test_block_gibbs_samples_the_exact_marginal():
    # 4 visibles: 16 states. 4000 chains, the last state of each after 30 steps (the
    # chain mixes in a few steps at this scale), compared by a chi-square test at
    # false-alarm rate 1e-3 (the residual bias from finite burn-in is far below it).
    params = random_rbm(jax.random.key(2), 4, 3, scale=0.7)
    vs = binary_states(4)
    probs = np.asarray(jax.nn.softmax(-jax.vmap(params.free_energy)(vs)), np.float64)
    num_chains = 4000
    result = run_chains(jax.random.key(3), block_gibbs(params), jnp.zeros((num_chains, 4)), 30)
    index = np.asarray(result.state.x @ (2.0 ** jnp.arange(3, -1, -1))).astype(int)
    counts = np.bincount(index, minlength=16)
    chi2 = np.sum((counts - num_chains * probs) ** 2 / (num_chains * probs))
    assert chi2 < 37.70  # chi-square(15) quantile at 0.999
    assert float(np.max(result.info.num_nonfinite)) == 0.0
    # same key, same chain; jit-compatible step
    sampler = block_gibbs(params)
    a = run(jax.random.key(4), sampler, jnp.zeros(4), 5)
    b = run(jax.random.key(4), sampler, jnp.zeros(4), 5)
    np.testing.assert_array_equal(a.state.x, b.state.x)


def test_cd_loss_gradient_is_the_likelihood_gradient_with_exact_negatives():
    # with the negatives weighted exactly by p(v), the gradient of F(data) - E_p F is minus
    # the log-likelihood gradient; check it through the weighted free-energy gap
    params = random_rbm(jax.random.key(5), 5, 3, scale=0.5)
    data = binary_states(5)[jnp.array([1, 6, 9, 30])]
    vs = binary_states(5)

    def exact_gap(p):
        probs = jax.lax.stop_gradient(jax.nn.softmax(-jax.vmap(p.free_energy)(vs)))
        return jnp.mean(jax.vmap(p.free_energy)(data)) - probs @ jax.vmap(p.free_energy)(vs)

    def neg_log_likelihood(p):
        return -rbm_log_likelihood(p, data, rbm_log_partition_exact(p))

    for a, b in zip(
        jax.tree_util.tree_leaves(jax.grad(exact_gap)(params)),
        jax.tree_util.tree_leaves(jax.grad(neg_log_likelihood)(params)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # the library's one CD loss, with the free energy as the energy, is the same gap with
    # unweighted negatives (Monte Carlo samples)
    loss, _ = cd_loss(params, jax.random.key(0), (data, vs[:4]), energy_fn=RBM.free_energy)
    gap = jnp.mean(jax.vmap(params.free_energy)(data)) - jnp.mean(
        jax.vmap(params.free_energy)(vs[:4])
    )
    np.testing.assert_allclose(loss, gap, rtol=1e-6)
    assert float(params.reconstruction_error(data[0])) >= 0.0


def _teacher_data(key, n=2000):
    """Exact samples of a random 8-visible RBM (enumerating its 256 visible states)."""
    teacher = random_rbm(key, 8, 3, scale=2.0)
    vs = binary_states(8)
    index = jax.random.categorical(
        jax.random.key(11), -jax.vmap(teacher.free_energy)(vs), shape=(n,)
    )
    return teacher, vs[index]


@pytest.mark.parametrize("persistent", [False, True], ids=["cd1", "pcd"])
def test_training_raises_the_exact_log_likelihood(persistent):
    # the teacher's data log-likelihood is -3.24 nats, the base-rate start's -3.55; a
    # behavioural check (not a statistical one): training closes over a third of that gap
    teacher, data = _teacher_data(jax.random.key(10))
    key = jax.random.key(12)
    initial = init_rbm(jax.random.split(key, 3)[0], 8, 3, data)  # what train_rbm starts from
    config = RBMTrainConfig(num_hidden=3, num_steps=600, learning_rate=0.1, persistent=persistent)
    params, history = train_rbm(key, data, config, progress=False)
    before = rbm_log_likelihood(initial, data, rbm_log_partition_exact(initial))
    after = rbm_log_likelihood(params, data, rbm_log_partition_exact(params))
    best = rbm_log_likelihood(teacher, data, rbm_log_partition_exact(teacher))
    assert float(after) > float(before) + (float(best) - float(before)) / 3
    assert np.all(np.isfinite(history["loss"]))


def test_train_rbm_again_compiles_nothing():
    """A second train_rbm with the same config on new data of the same shape reuses the
    compiled loop (no XLA compilation at all), and trains on the new data."""
    _, data = _teacher_data(jax.random.key(10))
    config = RBMTrainConfig(num_hidden=3, num_steps=20)
    first, _ = train_rbm(jax.random.key(0), data, config, progress=False)
    flipped = np.asarray(1.0 - data)
    compiles = []
    listener = lambda event, duration, **kwargs: compiles.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second, _ = train_rbm(jax.random.key(0), flipped, config, progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert "/jax/core/compile/backend_compile_duration" not in compiles
    assert not np.allclose(first.W, second.W)


def test_pcd_keeps_its_chains_in_the_replay_buffer():
    """An RBM trains through the library's one CD step: block Gibbs negatives, the chains
    kept in the same ReplayBuffer the continuous EBMs use."""
    params = init_rbm(jax.random.key(0), 6, 4)
    optimizer = optax.sgd(0.1)
    chains = ReplayBuffer(jnp.zeros((10, 6)))
    state = init_train_state(params, optimizer, extra=chains)
    step = make_cd_train_step(
        RBM.free_energy, block_gibbs, optimizer, num_mcmc_steps=2, persistent=True,
        reinit_fraction=0.0,
    )  # fmt: skip
    step = jax.jit(step)
    batch = jnp.ones((5, 6))
    new_state, metrics = step(state, jax.random.key(1), batch)
    assert new_state.extra.x.shape == (10, 6)
    assert not np.array_equal(new_state.extra.x, chains.x)  # 5 chains x 2 steps moved
    assert set(np.unique(np.asarray(new_state.extra.x))) <= {0.0, 1.0}
    again, _ = step(state, jax.random.key(1), batch)
    np.testing.assert_array_equal(again.extra.x, new_state.extra.x)
    assert float(metrics["reinit_fraction"]) == 0.0 and float(metrics["diverged"]) == 0.0


def test_train_rbm_history_has_the_reconstruction_error():
    _, data = _teacher_data(jax.random.key(10), n=200)
    config = RBMTrainConfig(num_hidden=3, num_steps=10, persistent=True, num_chains=100)
    _, history = train_rbm(jax.random.key(0), data, config, progress=False)
    assert history["reconstruction_error"].shape == (10,)
    with pytest.raises(ValueError, match="num_chains"):
        train_rbm(jax.random.key(0), data, config._replace(num_chains=50), progress=False)


@pytest.mark.slow  # the experiment's smoke run trains and samples a DBN in CI
def test_dbn_trains_greedily_and_samples_through_the_stack():
    _, data = _teacher_data(jax.random.key(20), n=500)
    config = RBMTrainConfig(num_steps=50, learning_rate=0.05)
    rbms = train_dbn(jax.random.key(21), data, (5, 3), config, progress=False)
    assert [r.W.shape for r in rbms] == [(8, 5), (5, 3)]
    samples = sample_dbn(jax.random.key(22), rbms, 50, num_gibbs_steps=20)
    again = sample_dbn(jax.random.key(22), rbms, 50, num_gibbs_steps=20)
    np.testing.assert_array_equal(samples, again)
    assert samples.shape == (50, 8)
    assert bool(jnp.all((samples > 0) & (samples < 1)))  # bottom-layer probabilities


def test_bad_input_raises():
    params = random_rbm(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="params"):
        block_gibbs(RBM(jnp.zeros((4, 3)), jnp.zeros(3), jnp.zeros(3)))
    with pytest.raises(ValueError, match="x0 must have shape"):
        run(jax.random.key(0), block_gibbs(params), jnp.zeros(5), 3)
    with pytest.raises(ValueError, match="binary"):
        train_rbm(jax.random.key(0), jnp.full((10, 4), 0.5), RBMTrainConfig(num_steps=1))
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        make_cd_train_step(RBM.free_energy, block_gibbs, optax.sgd(0.1), num_mcmc_steps=0)
    with pytest.raises(ValueError, match="layer_sizes"):
        train_dbn(jax.random.key(0), jnp.zeros((10, 4)), ())


@pytest.mark.slow  # an experiment smoke run (20-30 s); its library has fast tests
def test_experiment_smoke(tmp_path):
    from experiments.common import parse_config
    from experiments.rbm import SMOKE, Config, main, report

    cfg = parse_config(Config, SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    result = main(cfg)
    report(result, cfg)
    for name in ("samples.png", "filters.png", "training.png", "dbn_samples.png", "metrics.json",
                 "results.md"):  # fmt: skip
        assert (tmp_path / name).exists()
    rows = result["log_likelihood"]
    assert [r["model"] for r in rows][1:] == ["CD-1", "CD-2", "PCD-1"]
    for row in rows:
        assert np.isfinite(row["test_ll_exact"]) and np.isfinite(row["test_ll_ais"])
        assert row["test_ll_exact"] < 0.0  # a log-probability of a binary vector
    assert all(np.isfinite(r["log_z_ais"]) for r in result["ais_vs_exact"])
