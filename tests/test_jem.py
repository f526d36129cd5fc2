"""JEM: the classifier-as-energy identities, the hybrid train step (cross-entropy + PCD), and
a short JEM run on two moons that classifies and gives data low energy."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scorejax as sj
from scorejax import jem, nets, replay

MODEL = nets.MLP(hidden=(32, 32), out_dim=3)
PARAMS = MODEL.init(jax.random.key(0), jnp.zeros(2))
LOGITS = nets.apply_fn(MODEL)


def test_energies_are_the_negative_logits_and_their_logsumexp():
    x = jax.random.normal(jax.random.key(1), (5, 2))
    logits = jax.vmap(LOGITS, in_axes=(None, 0))(PARAMS, x)
    e_xy = jax.vmap(lambda v: jax.vmap(lambda y: jem.class_energy(LOGITS)(PARAMS, v, y))(
        jnp.arange(3)))(x)  # fmt: skip
    np.testing.assert_allclose(e_xy, -logits, rtol=1e-6)
    e_x = jax.vmap(lambda v: jem.jem_energy(LOGITS)(PARAMS, v))(x)
    np.testing.assert_allclose(e_x, -jax.nn.logsumexp(logits, axis=1), rtol=1e-6)
    # p(y | x) = exp(-E(x, y)) / exp(-E(x)) is the classifier's softmax
    np.testing.assert_allclose(jnp.exp(-e_xy + e_x[:, None]), jax.nn.softmax(logits), rtol=1e-5)


def test_hybrid_step_adds_the_cross_entropy_to_the_cd_loss():
    noise = replay.uniform_noise(-3.0, 3.0, (2,))
    optimizer = optax.sgd(0.0)  # no update: the metrics are those of PARAMS
    step = jem.make_jem_train_step(LOGITS, optimizer, noise, num_mcmc_steps=3)
    state = sj.init_train_state(PARAMS, optimizer, extra=replay.replay_init(jax.random.key(2),
                                                                            noise, 32))  # fmt: skip
    x = jax.random.normal(jax.random.key(3), (16, 2))
    labels = jnp.arange(16) % 3
    _, metrics = jax.jit(step)(state, jax.random.key(4), (x, labels))
    ce = jem.cross_entropy_loss(PARAMS, None, (x, labels), logits_fn=LOGITS)
    np.testing.assert_allclose(metrics["supervised_loss"], ce, rtol=1e-6)
    cd = metrics["energy_pos"] - metrics["energy_neg"]
    np.testing.assert_allclose(metrics["loss"], cd + ce, rtol=1e-5, atol=1e-6)
    assert float(metrics["diverged"]) == 0.0


def _train(loss_step, state, num_steps):
    x, labels = _moons(jax.random.key(6), 1024)
    batch_fn = jax.tree_util.Partial(_labelled_rows, x, labels)
    return sj.fit(loss_step, state, jax.random.key(5), batch_fn, num_steps=num_steps,
                  progress=False)  # fmt: skip


@pytest.mark.slow
def test_jem_on_two_moons_classifies_and_its_energy_models_the_data():
    """400 steps on two moons labelled by moon, T = 1 SGLD (step 0.01, noise sqrt(0.02)):
    held-out accuracy above 0.95, and -E separates held-out data from uniform noise on the
    box (AUROC) nearly as well as the true density does (0.93, by a kernel estimate from
    20,000 draws), where the same network trained on the cross-entropy alone scores 0.47
    (measured): asserted, AUROC above 0.85 and above the classifier's by 0.25."""
    model = nets.MLP(hidden=(64, 64), out_dim=2)
    logits_fn = nets.apply_fn(model)
    x_test, labels_test = _moons(jax.random.key(7), 512)
    noise = replay.uniform_noise(-2.5, 2.5, (2,))
    uniform = noise(jax.random.key(10), 512)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    params = model.init(jax.random.key(8), jnp.zeros(2))
    step = jem.make_jem_train_step(
        logits_fn, optimizer, noise, num_mcmc_steps=20, step_size=0.01, noise_scale=0.1414,
        alpha=0.1,
    )  # fmt: skip
    buffer = replay.replay_init(jax.random.key(9), noise, 1000)
    state, history = _train(step, sj.init_train_state(params, optimizer, extra=buffer), 400)
    assert np.all(history["diverged"] == 0)
    plain_step = sj.make_train_step(partial(jem.cross_entropy_loss, logits_fn=logits_fn),
                                    optimizer)  # fmt: skip
    plain, _ = _train(plain_step, sj.init_train_state(params, optimizer), 400)
    aurocs = []
    for trained in (state, plain):
        logits = jax.vmap(logits_fn, in_axes=(None, 0))(trained.params, x_test)
        assert float(jnp.mean(jnp.argmax(logits, 1) == labels_test)) > 0.95
        energy = jax.vmap(partial(jem.jem_energy(logits_fn), trained.params))
        aurocs.append(float(sj.auroc(-energy(x_test), -energy(uniform))))
    assert aurocs[0] > 0.85 and aurocs[0] > aurocs[1] + 0.25


def _moons(key, n):
    return sj.data.labelled_two_moons(key, n)


def _labelled_rows(x, labels, key):
    index = jax.random.randint(key, (64,), 0, x.shape[0])
    return x[index], labels[index]


def test_bad_input():
    with pytest.raises(ValueError, match="num_mcmc_steps"):
        jem.make_jem_train_step(LOGITS, optax.sgd(0.1), replay.uniform_noise(0, 1, (2,)),
                                num_mcmc_steps=0)  # fmt: skip
    with pytest.raises(ValueError, match="step_size"):
        jem.make_jem_train_step(LOGITS, optax.sgd(0.1), replay.uniform_noise(0, 1, (2,)),
                                step_size=-1.0)  # fmt: skip


def test_ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_is_not():
    """Labels drawn from the predicted probabilities: calibrated by construction, ECE within
    its sampling error of 0 (per bin |acc - conf| is about sqrt(conf (1 - conf) / n_b), so
    ECE <= sum_b n_b/N * 4 sqrt(1/(4 n_b))); a predictor reporting 0.99 on 70%-accurate
    answers has ECE 0.29."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=20_000)
    labels = np.array([rng.choice(4, p=p) for p in probs])
    ece, bins = sj.metrics.expected_calibration_error(probs, labels)
    bound = np.sum(bins["count"] / len(labels) * 4 * np.sqrt(0.25 / np.maximum(bins["count"], 1)))
    assert ece < bound and bound < 0.05
    confident = np.full((1000, 2), 0.01)
    confident[:, 0] = 0.99
    truth = (np.arange(1000) >= 700).astype(int)  # the argmax (0) is right 70% of the time
    ece, _ = sj.metrics.expected_calibration_error(confident, truth)
    assert ece == pytest.approx(0.29, abs=1e-9)


@pytest.mark.slow
def test_jem_experiment_smoke(tmp_path):
    import dataclasses
    import json

    from experiments import jem as experiment

    cfg = dataclasses.replace(experiment.Config(), **experiment.SMOKE, out_dir=str(tmp_path))
    experiment.report(experiment.main(cfg), cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["model"] for row in written["models"]] == ["classifier", "JEM"]
    assert set(written["pixel_knn"]) == {"uniform noise", "pixel-shuffled", "flipped"}
    for name in ("table.md", "reliability.png", "class_samples.png", "moons_energy.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_pixel_knn_auroc_is_a_half_on_the_same_images_and_one_far_away():
    """The reference score ties on identical sets (AUROC 1/2 exactly) and separates a set
    shifted far from the training images completely; k counts neighbours (k = 1 on the
    training images themselves scores every one at distance 0)."""
    from experiments.jem import pixel_knn_auroc

    rng = np.random.default_rng(0)
    train = rng.uniform(size=(50, 4, 4)).astype(np.float32)
    test = rng.uniform(size=(20, 4, 4)).astype(np.float32)
    assert pixel_knn_auroc(train, test, test) == 0.5
    assert pixel_knn_auroc(train, test, test + 3.0) == 1.0
    assert pixel_knn_auroc(train, train[:20], test, k=1) == 1.0
    # against a brute-force reference: sorted distances and the pairwise definition of AUROC
    out = rng.uniform(size=(30, 4, 4)).astype(np.float32) ** 2  # darker: a real separation
    flat = train.reshape(50, -1).astype(np.float64)

    def brute(x, k=5):
        d2 = ((x.reshape(len(x), 1, -1) - flat[None]) ** 2).sum(-1)
        return -np.sort(d2, axis=1)[:, :k].mean(axis=1)

    s_in, s_out = brute(test.astype(np.float64)), brute(out.astype(np.float64))
    pairwise = np.mean(s_in[:, None] > s_out[None]) + 0.5 * np.mean(s_in[:, None] == s_out[None])
    assert 0.5 < pairwise < 1.0  # the reference case is not one of the trivial ones above
    # the same count ratio (600 pairs), returned in float32
    assert pixel_knn_auroc(train, test, out) == pytest.approx(pairwise, rel=1e-6)
