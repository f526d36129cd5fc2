"""Implicit behavioural cloning: the task's invariants, the InfoNCE loss against its formula,
the action optimisers on known energies, the implicit policy against the explicit one,
errors, and the experiment's smoke run."""

import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from scorejax import policy

LOW, HIGH = policy.ACTION_LOW, policy.ACTION_HIGH


def _episodes(policy_fn, num_episodes, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_episodes)
    return jax.jit(jax.vmap(lambda k: policy.rollout(k, policy_fn)))(keys)


# --- the task ---------------------------------------------------------------------------------


def test_the_expert_always_succeeds():
    """The expert is deterministic once it has chosen a side, and both sides clear the
    obstacle by 0.2: every episode succeeds (no tolerance needed)."""
    episodes = _episodes(policy.expert_action, 300)
    assert bool(jnp.all(episodes.success))
    assert episodes.states.shape == (300, policy.NUM_STEPS + 1, 2)
    assert episodes.actions.shape == (300, policy.NUM_STEPS, 2)


@pytest.mark.slow
def test_demonstrations_are_multimodal_and_their_mean_hits_the_obstacle():
    """At the start the expert passes above or below with probability 1/2: the fraction
    above is within 4.5 binomial standard errors of 1/2 (false alarm < 1e-5), every first
    action is one of the two modes, and the modes' mean lies between them and, held for an
    episode, drives into the obstacle."""
    n = 400
    episodes = _episodes(policy.expert_action, n, seed=1)
    starts, first = episodes.states[:, 0], episodes.actions[:, 0]
    above = float(jnp.mean(first[:, 1] > 0))
    assert abs(above - 0.5) < 4.5 * np.sqrt(0.25 / n)
    assert not bool(jnp.any(jax.vmap(policy.between_modes)(starts, first)))
    # the modes are far apart: the y components differ in sign and by more than 0.9
    modes = policy.expert_modes(starts[0])
    assert modes[0, 1] > 0.45 and modes[1, 1] < -0.45
    mean = jnp.mean(first, axis=0)
    assert bool(policy.between_modes(starts[0], mean))
    averaged = policy.rollout(jax.random.key(2), lambda key, o: mean)
    assert bool(jnp.any(jax.vmap(policy.in_obstacle)(averaged.states)))
    assert not bool(averaged.success)


def test_demonstrations_are_the_expert_episodes_flattened():
    observations, actions = policy.demonstrations(jax.random.key(3), 7, num_steps=12)
    assert observations.shape == actions.shape == (7 * 12, 2)
    episodes = jax.vmap(lambda k: policy.rollout(k, policy.expert_action, 12))(
        jax.random.split(jax.random.key(3), 7)
    )
    np.testing.assert_array_equal(observations, episodes.states[:, :-1].reshape(-1, 2))
    # each observation follows from the previous one and its action
    np.testing.assert_allclose(
        episodes.states[:, 1:],
        episodes.states[:, :-1] + policy.TIME_STEP * episodes.actions,
        atol=1e-6,
    )


def test_rollout_same_key_same_episode_and_jit_agrees():
    fn = lambda k: policy.rollout(k, policy.expert_action)
    key = jax.random.key(4)
    eager, jitted = fn(key), jax.jit(fn)(key)
    np.testing.assert_allclose(eager.states, jitted.states, atol=1e-6)
    np.testing.assert_array_equal(jax.jit(fn)(key).states, jitted.states)


def test_success_needs_the_goal_and_no_collision():
    goal, obstacle = jnp.asarray(policy.GOAL), jnp.asarray(policy.OBSTACLE_CENTER)
    start = jnp.asarray(policy.START)
    assert bool(policy.success(jnp.stack([start, goal])))
    assert not bool(policy.success(jnp.stack([start, obstacle, goal])))
    assert not bool(policy.success(jnp.stack([start, start])))


# --- the InfoNCE loss -------------------------------------------------------------------------


def _quadratic_energy(observation, action, target=(0.3, -0.6), scale=0.1):
    del observation
    return jnp.sum((action - jnp.asarray(target)) ** 2) / (2 * scale**2)


def test_info_nce_of_an_action_blind_energy_is_log_of_n_plus_one():
    """E(o, a) = c for every action: the softmax is uniform over the N + 1 candidates."""
    energy_fn = lambda params, o, a: params + 0.0 * jnp.sum(a)
    batch = (jnp.zeros((5, 2)), jnp.zeros((5, 2)))
    for n in (1, 64):
        loss = policy.info_nce_loss(
            jnp.asarray(3.0), jax.random.key(0), batch,
            energy_fn=energy_fn, num_negatives=n, action_low=LOW, action_high=HIGH,
        )  # fmt: skip
        assert float(loss) == pytest.approx(np.log(n + 1), rel=1e-6)


def test_info_nce_equals_minus_log_softmax_by_hand():
    """With a box so narrow that every counter-example is the point c, Eq. 1 reads
    -log[exp(-E(o, a)) / (exp(-E(o, a)) + N exp(-E(o, c)))], computed here in float64."""
    energy_fn = lambda params, o, a: params * jnp.sum((a - o) ** 2)
    observations = jnp.array([[0.0, 0.0], [0.5, -0.5], [-0.2, 0.4]])
    actions = jnp.array([[0.1, 0.2], [0.5, -0.4], [0.9, 0.9]])
    c = np.array([0.3, -0.1])
    weight, n = 2.0, 16
    loss = policy.info_nce_loss(
        jnp.asarray(weight), jax.random.key(1), (observations, actions),
        energy_fn=energy_fn, num_negatives=n, action_low=c, action_high=c + 1e-7,
    )  # fmt: skip
    o, a = np.asarray(observations, np.float64), np.asarray(actions, np.float64)
    positive = weight * np.sum((a - o) ** 2, axis=1)
    negative = weight * np.sum((c - o) ** 2, axis=1)
    by_hand = -np.log(np.exp(-positive) / (np.exp(-positive) + n * np.exp(-negative)))
    assert float(loss) == pytest.approx(by_hand.mean(), rel=1e-5)


def test_info_nce_batch_is_the_mean_of_its_examples():
    energy_fn = lambda params, o, a: jnp.sum(params * a) + jnp.sum(o * a)
    params, key = jnp.array([1.0, -2.0]), jax.random.key(5)
    observations = jax.random.normal(jax.random.key(6), (4, 2))
    actions = jax.random.uniform(jax.random.key(7), (4, 2), minval=-1, maxval=1)
    kw = dict(energy_fn=energy_fn, num_negatives=5, action_low=LOW, action_high=HIGH)
    batch_loss = policy.info_nce_loss(params, key, (observations, actions), **kw)
    keys = jax.random.split(key, 4)
    each = [
        policy.info_nce_example_loss(params, k, o, a, **kw)
        for k, o, a in zip(keys, observations, actions, strict=True)
    ]
    assert float(batch_loss) == pytest.approx(float(np.mean(each)), rel=1e-6)
    # the loss is -log of a probability: positive
    assert all(float(v) > 0 for v in each)


def test_mse_loss_is_the_mean_squared_error():
    policy_fn = lambda params, o: params @ o
    params = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    observations = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    actions = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    loss = policy.mse_loss(params, jax.random.key(0), (observations, actions), policy_fn=policy_fn)
    residual = np.asarray(observations) @ np.asarray(params).T - np.asarray(actions)
    expected = np.mean(np.sum(residual**2, axis=1))
    assert float(loss) == pytest.approx(expected, rel=1e-6)


# --- acting -----------------------------------------------------------------------------------

TARGET = np.array([0.3, -0.6])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["derivative_free_action", "langevin_action"])
def test_optimisers_find_the_minimum_of_a_quadratic(name):
    """E(a) = |a - a*|^2 / (2 * 0.1^2): over 64 keys every answer is within 0.1 of a* and
    the mean error is under 0.05 (the uniform start alone has mean error ~0.6)."""
    act = getattr(policy, name)
    keys = jax.random.split(jax.random.key(8), 64)
    fn = jax.jit(jax.vmap(lambda k: act(k, jnp.zeros(2), _quadratic_energy)))
    answers = np.asarray(fn(keys))
    errors = np.linalg.norm(answers - TARGET, axis=1)
    assert errors.max() < 0.1 and errors.mean() < 0.05, (errors.max(), errors.mean())
    assert np.all((answers >= -1) & (answers <= 1))


def _two_modes(observation, action, scale=0.1):
    del observation
    modes = jnp.array([[0.5, 0.5], [0.5, -0.5]])
    squared = jnp.sum((action - modes) ** 2, axis=-1) / (2 * scale**2)
    return -jax.nn.logsumexp(-squared)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["derivative_free_action", "langevin_action"])
def test_optimisers_pick_a_mode_not_the_average(name):
    """Two equal modes at (0.5, +-0.5): every answer lies within 0.15 of one of them (their
    mean (0.5, 0) is 0.5 away), and both are chosen: each is picked with probability 1/2 by
    symmetry, so over 200 keys the count above is within 4.5 binomial SE of 100."""
    act = getattr(policy, name)
    n = 200
    keys = jax.random.split(jax.random.key(9), n)
    answers = np.asarray(jax.jit(jax.vmap(lambda k: act(k, jnp.zeros(2), _two_modes)))(keys))
    to_mode = np.minimum(
        np.linalg.norm(answers - [0.5, 0.5], axis=1), np.linalg.norm(answers - [0.5, -0.5], axis=1)
    )
    assert to_mode.max() < 0.15
    above = int(np.sum(answers[:, 1] > 0))
    assert abs(above - n / 2) < 4.5 * np.sqrt(n / 4)


def test_actions_are_a_policy_of_key_and_observation():
    policy_fn = partial(policy.derivative_free_action, energy_fn=_quadratic_energy, num_samples=64)
    key = jax.random.key(10)
    a = policy_fn(key, jnp.zeros(2))
    np.testing.assert_array_equal(a, policy_fn(key, jnp.zeros(2)))
    np.testing.assert_allclose(jax.jit(policy_fn)(key, jnp.zeros(2)), a, atol=1e-6)


# --- implicit against explicit ----------------------------------------------------------------

NUM_SEEDS = 3
# two-sided normal quantile for a 1e-3 false-alarm rate: the gap must exceed it in SEs
K_SIGMA = norm.isf(1e-3 / 2)


@pytest.mark.slow  # about 2.5 minutes on 2 busy CPU cores
def test_implicit_policy_beats_the_explicit_one_beyond_seed_spread(tmp_path):
    """Per seed: the same demonstrations, network widths, optimiser, steps and batches; the
    implicit policy (DFO) succeeds in more episodes than the MSE policy by more than
    K_SIGMA (3.3) standard errors of the difference of the means across seeds (the SE of
    each from the spread across seeds, the binomial SE of its episodes as a floor), and
    the MSE policy's first actions lie between the modes while the implicit one's do not."""
    from experiments import implicit_policy as experiment

    cfg = experiment.Config(
        num_seeds=NUM_SEEDS,
        num_train_steps=1000,
        learning_rate=3e-3,
        num_eval_episodes=40,
        langevin_chains=4,
        langevin_steps=5,
        energy_grid=5,
        out_dir=str(tmp_path),
    )
    summary = {r["policy"]: r for r in experiment.main(cfg)["summary"]}
    implicit, explicit = summary["implicit (DFO)"], summary["explicit (MSE)"]
    floor = lambda p: np.sqrt(max(p * (1 - p), 0.25 / cfg.num_eval_episodes) / (
        NUM_SEEDS * cfg.num_eval_episodes))  # fmt: skip
    se = lambda r: max(r["success_se"], floor(r["success"]))
    gap = implicit["success"] - explicit["success"]
    assert gap > K_SIGMA * np.hypot(se(implicit), se(explicit)), (implicit, explicit)
    assert explicit["between_modes_at_start"] > 0.9
    assert implicit["between_modes_at_start"] < 0.1


# --- errors -----------------------------------------------------------------------------------

ENERGY = lambda params, o, a: jnp.sum(a**2)
BATCH = (jnp.zeros((3, 2)), jnp.zeros((3, 2)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_negatives": 0}, "num_negatives"),
        ({"num_negatives": 2.5}, "num_negatives"),
        ({"action_low": 1.0, "action_high": -1.0}, "action_high"),
        ({"action_low": (0.0, 0.0), "action_high": (1.0,)}, "action_low"),
        ({"action_low": (0.0, 0.0, 0.0), "action_high": (1.0, 1.0, 1.0)}, "action_low"),
        ({"batch": (jnp.zeros((3, 2)), jnp.zeros((4, 2)))}, "batch"),
        ({"batch": (jnp.zeros(3), jnp.zeros((3, 2)))}, "batch"),
    ],
)
def test_info_nce_bad_input_names_the_argument(kwargs, name):
    args = dict(energy_fn=ENERGY, num_negatives=4, action_low=LOW, action_high=HIGH)
    batch = kwargs.pop("batch", BATCH)
    with pytest.raises(ValueError, match=name):
        policy.info_nce_loss(None, jax.random.key(0), batch, **(args | kwargs))


@pytest.mark.parametrize(
    ("fn", "kwargs", "name"),
    [
        (policy.derivative_free_action, {"num_samples": 0}, "num_samples"),
        (policy.derivative_free_action, {"num_iterations": -1}, "num_iterations"),
        (policy.derivative_free_action, {"noise_scale": 0.0}, "noise_scale"),
        (policy.derivative_free_action, {"noise_shrink": 1.5}, "noise_shrink"),
        (policy.derivative_free_action, {"action_high": (-2.0, 1.0)}, "action_high"),
        (policy.langevin_action, {"num_chains": 0}, "num_chains"),
        (policy.langevin_action, {"step_size": -1.0}, "step_size"),
        (policy.langevin_action, {"final_step_size": 1.0}, "final_step_size"),
    ],
)
def test_action_bad_input_names_the_argument(fn, kwargs, name):
    energy_fn = lambda o, a: jnp.sum(a**2)
    with pytest.raises(ValueError, match=name):
        fn(jax.random.key(0), jnp.zeros(2), energy_fn, **kwargs)


def test_task_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="num_steps"):
        policy.rollout(jax.random.key(0), policy.expert_action, 0)
    with pytest.raises(ValueError, match="num_episodes"):
        policy.demonstrations(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="states"):
        policy.success(jnp.zeros(2))
    with pytest.raises(TypeError, match="policy_fn"):
        policy.rollout(jax.random.key(0), "expert")
    with pytest.raises(ValueError, match="policy_fn"):
        policy.mse_loss(
            jnp.zeros(3), jax.random.key(0), BATCH, policy_fn=lambda p, o: jnp.sum(o) * p
        )


# --- the experiment ---------------------------------------------------------------------------


@pytest.mark.slow  # about a minute on 2 busy CPU cores (two seeds, two trainings each)
def test_implicit_policy_smoke(tmp_path):
    from experiments import implicit_policy as experiment
    from experiments.common import parse_config

    cfg = parse_config(experiment.Config, experiment.SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    results = experiment.main(cfg)
    assert not any(tmp_path.iterdir()), "main computes; report writes"
    experiment.report(results, cfg)
    for name in ("metrics.json", "table.md", "energy_landscapes.png", "rollouts.png"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "arrays" not in saved
    assert len(saved["per_seed"]) == cfg.num_seeds * (len(experiment.POLICIES) + 1)
    policies = [r["policy"] for r in saved["summary"]]
    assert policies == ["expert", *experiment.POLICIES]
    for row in saved["summary"]:
        assert 0 <= row["success"] <= 1 and row["success_se"] >= 0
    assert saved["summary"][0]["success"] == 1.0  # the expert
    grid = results["arrays"]["energies"]
    assert grid.shape == (len(experiment.PROBE_STATES), cfg.energy_grid, cfg.energy_grid)
    assert np.all(np.isfinite(grid))
