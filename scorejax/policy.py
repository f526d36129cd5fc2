"""Energy-based imitation learning: implicit behavioural cloning (Florence et al. 2021).

An implicit policy is an energy over observation and action, E_theta(o, a), acting by
minimisation, a = argmin_a E_theta(o, a): the policy pi(a | o) ∝ exp(-E_theta(o, a)) keeps
the expert's modes where an explicit policy a = f(o) fitted by mean squared error averages
them (Florence et al. 2021, "Implicit Behavioral Cloning", CoRL, Sections 2-3).

The module holds:

- a small multimodal control task in pure JAX (``reset``, ``step``, ``expert_action``,
  ``success``, ``rollout``, ``demonstrations``): a velocity-controlled point must reach a
  goal behind a round obstacle, and the expert passes it above or below with equal
  probability, so the demonstrated action at the start is bimodal and its mean points into
  the obstacle;
- the InfoNCE loss with counter-examples drawn uniformly from the action box (their Eq. 1),
  ``info_nce_loss``, and its per-example form;
- two ways to act: ``derivative_free_action`` (their Algorithm 1, iterative resampling with
  shrinking noise) and ``langevin_action`` (gradient-based, with the library's
  ``langevin_update``);
- the explicit baseline's loss ``mse_loss``, and ``between_modes``, which says whether an
  action lies between the expert's two actions.

Conventions: one example in (an observation (2,), an action (2,)), ``jax.vmap`` for
batches; ``energy_fn(params, observation, action) -> ()`` in losses, the parameters bound
(``partial(energy_fn, params)``) where actions are chosen; a policy is
``policy_fn(key, observation) -> action``.
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scorejax._checks import check_callable, check_positive, check_positive_int, concrete
from scorejax.samplers.langevin import langevin_update
from scorejax.types import Array, Key, Params

# --- the task -------------------------------------------------------------------------------

TIME_STEP = 0.1  # seconds per step: position <- position + TIME_STEP * action
SPEED = 1.0  # the expert's speed; actions are velocities in the box [-1, 1]^2
ACTION_LOW = (-1.0, -1.0)
ACTION_HIGH = (1.0, 1.0)
START = (-1.5, 0.0)
START_NOISE = 0.02  # the start is START + U(-0.02, 0.02)^2
GOAL = (1.5, 0.0)
GOAL_RADIUS = 0.1
OBSTACLE_CENTER = (0.0, 0.0)
OBSTACLE_RADIUS = 0.5
WAYPOINT_HEIGHT = 0.8  # the expert passes through (0, +-0.8): 0.2 clear of the obstacle
DECISION_BAND = 0.025  # |y| below it, the expert has not chosen a side yet
NUM_STEPS = 40  # the episode's length (the expert needs about 35 steps)


def reset(key: Key) -> Array:
    """The initial state: the position (2,), START plus U(-START_NOISE, START_NOISE)^2.

    The state is the point's position, which is also the observation.
    """
    noise = jax.random.uniform(key, (2,), minval=-START_NOISE, maxval=START_NOISE)
    return jnp.asarray(START) + noise


def step(state: Array, action: Array) -> Array:
    """One step of the velocity-controlled point: x' = x + dt * clip(a, low, high), dt =
    TIME_STEP (a single integrator, the simplest dynamics in which the action is the
    decision)."""
    action = jnp.clip(action, jnp.asarray(ACTION_LOW), jnp.asarray(ACTION_HIGH))
    return state + TIME_STEP * action


def _expert_for_side(state: Array, side: Array) -> Array:
    """The expert's velocity when passing on ``side`` (+1 above, -1 below): at full speed
    toward the waypoint (0, side * WAYPOINT_HEIGHT) while x < 0 (it passes x = 0 within
    a step of the waypoint), then toward the goal, arriving exactly (the last step is
    shortened) and staying there."""
    waypoint = jnp.array([0.0, WAYPOINT_HEIGHT]) * side
    before = state[0] < 0.0
    target = jnp.where(before, waypoint, jnp.asarray(GOAL))
    offset = target - state
    distance = jnp.linalg.norm(offset)
    # full speed through the waypoint; at the goal, the exact remaining distance in one step
    speed = jnp.where(before, SPEED, jnp.minimum(SPEED, distance / TIME_STEP))
    return offset / jnp.maximum(distance, 1e-12) * speed


def expert_modes(state: Array) -> Array:
    """(2, 2): the expert's action passing above (row 0) and below (row 1) from ``state``."""
    return jax.vmap(_expert_for_side, (None, 0))(state, jnp.array([1.0, -1.0]))


def expert_action(key: Key, state: Array) -> Array:
    """The expert: it passes the obstacle on the side it is on, and where it has not chosen
    (|y| < DECISION_BAND, which holds at every start) it picks above or below with
    probability 1/2 each.

    A Markov policy: one step at full speed leaves the band (|y| grows by about 0.047), so
    the choice made at the start is kept. Its actions at the start are two modes
    (+-0.88, 0.47)-ish, the mean of which, (0.88, 0), heads straight into the obstacle.
    """
    side = jnp.where(jax.random.bernoulli(key), 1.0, -1.0)
    side = jnp.where(jnp.abs(state[1]) < DECISION_BAND, side, jnp.sign(state[1]))
    return _expert_for_side(state, side)


def in_obstacle(state: Array) -> Array:
    """Whether the position lies inside the obstacle (a collision)."""
    return jnp.linalg.norm(state - jnp.asarray(OBSTACLE_CENTER)) < OBSTACLE_RADIUS


def at_goal(state: Array) -> Array:
    """Whether the position lies within GOAL_RADIUS of the goal."""
    return jnp.linalg.norm(state - jnp.asarray(GOAL)) < GOAL_RADIUS


def success(states: Array) -> Array:
    """A trajectory's success: it reaches the goal and never enters the obstacle.

    Args:
      states: (T + 1, 2) the positions of one episode.
    """
    states = jnp.asarray(states)
    if states.ndim != 2 or states.shape[-1] != 2:
        raise ValueError(f"states must have shape (T + 1, 2), got {states.shape}")
    return jnp.any(jax.vmap(at_goal)(states)) & ~jnp.any(jax.vmap(in_obstacle)(states))


class Rollout(NamedTuple):
    """One episode: ``states`` (T + 1, 2), ``actions`` (T, 2), ``success`` ()."""

    states: Array
    actions: Array
    success: Array


def rollout(key: Key, policy_fn: Callable, num_steps: int = NUM_STEPS) -> Rollout:
    """Run ``policy_fn(key, observation) -> action`` for one episode (a ``lax.scan``).

    The start is drawn from the first key of ``split(key)`` and step t's action from
    ``fold_in`` of the second with t. Batch episodes with ``jax.vmap`` over keys.

    Args:
      key: the episode's key.
      policy_fn: ``policy_fn(key, observation) -> action (2,)``; e.g. ``expert_action``,
        ``partial(derivative_free_action, energy_fn=...)`` with the energy's
        parameters bound.
      num_steps: the episode's length T.
    """
    check_callable("policy_fn", policy_fn, "policy_fn(key, observation) -> action (2,)")
    num_steps = check_positive_int("num_steps", num_steps)
    key_reset, key_steps = jax.random.split(key)

    def body(state, t):
        action = policy_fn(jax.random.fold_in(key_steps, t), state)
        return step(state, action), (state, action)

    state0 = reset(key_reset)
    last, (states, actions) = jax.lax.scan(body, state0, jnp.arange(num_steps))
    states = jnp.concatenate([states, last[None]])
    return Rollout(states, actions, success(states))


def demonstrations(key: Key, num_episodes: int, num_steps: int = NUM_STEPS):
    """The expert's (observation, action) pairs from ``num_episodes`` episodes.

    Returns:
      (observations, actions), each (num_episodes * num_steps, 2); the steps after an
      episode reached the goal are kept (the expert stays, with action 0).
    """
    num_episodes = check_positive_int("num_episodes", num_episodes)
    num_steps = check_positive_int("num_steps", num_steps)
    keys = jax.random.split(key, num_episodes)
    episodes = jax.vmap(lambda k: rollout(k, expert_action, num_steps))(keys)
    return episodes.states[:, :-1].reshape(-1, 2), episodes.actions.reshape(-1, 2)


def between_modes(state: Array, action: Array) -> Array:
    """Whether ``action`` lies between the expert's two actions at ``state``: farther than a
    quarter of their separation from both (an action within a quarter of the separation of
    a mode counts as that mode; the modes' mean is half the separation from each). Meant
    for states where the two differ, such as the starts."""
    modes = expert_modes(state)
    separation = jnp.linalg.norm(modes[0] - modes[1])
    distances = jnp.linalg.norm(modes - action, axis=-1)
    return jnp.all(distances > 0.25 * separation)


# --- the energy and its loss ------------------------------------------------------------------


def state_action_energy(energy_fn: Callable) -> Partial:
    """E(params, observation, action) = energy_fn(params, concat([observation, action])): a
    network of one flat input (``nets.apply_fn(nets.MLPEnergy(...))``) as an energy over
    observation and action. A ``Partial``, so it passes through ``jit`` as data."""
    check_callable("energy_fn", energy_fn, "energy_fn(params, x) -> ()")
    return Partial(_concatenated, energy_fn)


def _concatenated(energy_fn, params, observation, action):
    return energy_fn(params, jnp.concatenate([observation, action], axis=-1))


def _check_bounds(action_low, action_high) -> None:
    low, high = concrete(action_low), concrete(action_high)
    if low is None or high is None:
        return
    if low.shape != high.shape or low.ndim > 1:
        raise ValueError(
            f"action_low and action_high must be scalars or vectors (A,) of the same shape, "
            f"got {low.shape} and {high.shape}"
        )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise ValueError(
            f"action_high must exceed action_low in every coordinate (finite bounds), got "
            f"action_low={low} and action_high={high}"
        )


def _uniform_actions(key, shape, action_low, action_high):
    low, high = jnp.asarray(action_low), jnp.asarray(action_high)
    return jax.random.uniform(key, (*shape, *low.shape), minval=low, maxval=high)


def info_nce_example_loss(
    params: Params,
    key: Key,
    observation: Array,
    action: Array,
    *,
    energy_fn: Callable,
    num_negatives: int,
    action_low,
    action_high,
) -> Array:
    """The InfoNCE loss of one demonstration (o, a) (Florence et al. 2021, Eq. 1):

        L = -log [ exp(-E(o, a)) / (exp(-E(o, a)) + sum_j exp(-E(o, a~_j))) ]
          = E(o, a) + log sum_{b in {a, a~_1..a~_N}} exp(-E(o, b)),

    with N counter-examples a~_j drawn uniformly from the action box [action_low,
    action_high] (their choice of counter-example distribution for this loss).
    """
    negatives = _uniform_actions(key, (num_negatives,), action_low, action_high)
    candidates = jnp.concatenate([action[None], negatives])
    energies = jax.vmap(energy_fn, (None, None, 0))(params, observation, candidates)
    return energies[0] + jax.nn.logsumexp(-energies)


def info_nce_loss(
    params: Params,
    key: Key,
    batch,
    *,
    energy_fn: Callable,
    num_negatives: int,
    action_low,
    action_high,
) -> Array:
    """The InfoNCE loss (Florence et al. 2021, Eq. 1) averaged over a batch, each example
    with its own counter-examples (``info_nce_example_loss``).

    Bind the keywords with ``functools.partial`` for ``make_train_step``.

    Args:
      params: the energy's parameters.
      key: the counter-examples' key.
      batch: (observations (B, O), actions (B, A)).
      energy_fn: ``energy_fn(params, observation, action) -> ()``, e.g.
        ``state_action_energy(nets.apply_fn(nets.MLPEnergy(hidden)))``.
      num_negatives: N >= 1 counter-examples per demonstration.
      action_low, action_high: the action box, scalars or (A,).
    """
    check_callable("energy_fn", energy_fn, "energy_fn(params, observation, action) -> ()")
    num_negatives = check_positive_int("num_negatives", num_negatives)
    _check_bounds(action_low, action_high)
    observations, actions = batch
    if np.ndim(observations) != 2 or np.ndim(actions) != 2:
        raise ValueError(
            f"batch must be (observations (B, O), actions (B, A)), got shapes "
            f"{np.shape(observations)} and {np.shape(actions)}"
        )
    if np.shape(observations)[0] != np.shape(actions)[0]:
        raise ValueError(
            f"batch's observations and actions must have the same number of rows, got "
            f"{np.shape(observations)[0]} and {np.shape(actions)[0]}"
        )
    if np.ndim(action_low) == 1 and np.shape(action_low)[0] != np.shape(actions)[1]:
        raise ValueError(
            f"action_low and action_high must have one entry per action coordinate "
            f"({np.shape(actions)[1]}), got {np.shape(action_low)}"
        )
    keys = jax.random.split(key, np.shape(actions)[0])
    single = partial(
        info_nce_example_loss,
        energy_fn=energy_fn,
        num_negatives=num_negatives,
        action_low=action_low,
        action_high=action_high,
    )
    return jnp.mean(jax.vmap(single, (None, 0, 0, 0))(params, keys, observations, actions))


def mse_loss(params: Params, key: Key, batch, *, policy_fn: Callable) -> Array:
    """The explicit policy's behavioural-cloning loss, mean over the batch of
    ||f(o) - a||^2 (``key`` unused, kept for ``make_train_step``).

    Args:
      batch: (observations (B, O), actions (B, A)).
      policy_fn: ``policy_fn(params, observation) -> action``, e.g.
        ``nets.apply_fn(nets.MLP(hidden, out_dim=2))``.
    """
    del key
    check_callable("policy_fn", policy_fn, "policy_fn(params, observation) -> action")
    observations, actions = batch
    predicted = jax.vmap(policy_fn, (None, 0))(params, observations)
    if np.shape(predicted) != np.shape(actions):
        raise ValueError(
            f"policy_fn must return an action shaped like batch's actions {np.shape(actions)[1:]}"
            f" per observation, got {np.shape(predicted)[1:]}"
        )
    return jnp.mean(jnp.sum((predicted - actions) ** 2, axis=-1))


# --- acting: argmin_a E(o, a) --------------------------------------------------------------------


def _resample(key: Key, logits: Array, num_samples: int) -> Array:
    """Indices of ``num_samples`` draws with replacement from Categorical(softmax(logits)),
    by inverse-CDF lookup of uniforms (O(M log M); ``jax.random.categorical`` with a sample
    shape draws M x M Gumbel variates)."""
    cdf = jnp.cumsum(jax.nn.softmax(logits))
    uniforms = jax.random.uniform(key, (num_samples,), cdf.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, uniforms, side="right"), logits.shape[0] - 1)


def derivative_free_action(
    key: Key,
    observation: Array,
    energy_fn: Callable,
    *,
    action_low=ACTION_LOW,
    action_high=ACTION_HIGH,
    num_samples: int = 1024,
    num_iterations: int = 3,
    noise_scale: float = 0.33,
    noise_shrink: float = 0.5,
) -> Array:
    """argmin_a E(o, a) by derivative-free optimisation (Florence et al. 2021, Algorithm 1):

        a_1..a_M ~ U(low, high)
        repeat num_iterations times:
            p_i = softmax(-E(o, a_i));  resample a_i ~ Categorical(p) with replacement
            a_i <- clip(a_i + sigma z_i, low, high);  sigma <- noise_shrink * sigma
        return the a_i of the lowest energy.

    Each iteration moves the population toward low energy (resampling is one step of a
    sampling-importance-resampling scheme for exp(-E)) and the shrinking noise refines it,
    so one mode wins where an average would sit between two.

    Args:
      key: the optimiser's key.
      observation: one observation.
      energy_fn: ``energy_fn(observation, action) -> ()``, parameters bound;
        ``partial(derivative_free_action, energy_fn=partial(energy, params))`` is a
        ``policy_fn(key, observation)``.
      action_low, action_high: the action box, scalars or (A,).
      num_samples: M samples.
      num_iterations: resampling rounds.
      noise_scale: sigma of the first round, in action units.
      noise_shrink: K in (0, 1], sigma's factor per round.
    """
    check_callable("energy_fn", energy_fn, "energy_fn(observation, action) -> ()")
    _check_bounds(action_low, action_high)
    num_samples = check_positive_int("num_samples", num_samples)
    num_iterations = check_positive_int("num_iterations", num_iterations)
    check_positive("noise_scale", noise_scale)
    if not 0.0 < noise_shrink <= 1.0:
        raise ValueError(f"noise_shrink must lie in (0, 1], got {noise_shrink!r}")
    low, high = jnp.asarray(action_low), jnp.asarray(action_high)
    energies_of = jax.vmap(energy_fn, (None, 0))
    key_init, key_loop = jax.random.split(key)
    actions = _uniform_actions(key_init, (num_samples,), low, high)

    def body(actions, i):
        key_resample, key_noise = jax.random.split(jax.random.fold_in(key_loop, i))
        index = _resample(key_resample, -energies_of(observation, actions), num_samples)
        sigma = noise_scale * noise_shrink ** i.astype(jnp.float32)
        noise = sigma * jax.random.normal(key_noise, actions.shape, actions.dtype)
        return jnp.clip(actions[index] + noise, low, high), None

    actions, _ = jax.lax.scan(body, actions, jnp.arange(num_iterations))
    return actions[jnp.argmin(energies_of(observation, actions))]


def langevin_action(
    key: Key,
    observation: Array,
    energy_fn: Callable,
    *,
    action_low=ACTION_LOW,
    action_high=ACTION_HIGH,
    num_chains: int = 64,
    num_steps: int = 50,
    step_size: float = 1e-2,
    final_step_size: float = 1e-4,
) -> Array:
    """argmin_a E(o, a) by Langevin dynamics over actions (Florence et al. 2021, Section 3
    and Appendix B.3, gradient-based inference), with the library's convention:

        a <- clip(a - h_t grad_a E(o, a) + sqrt(2 h_t) z, low, high),   z ~ N(0, I),

    ``num_chains`` chains started uniformly in the box, h_t decaying geometrically from
    ``step_size`` to ``final_step_size`` over ``num_steps`` steps (an annealed schedule:
    large steps to find the modes, small ones to settle in one), and the end point of the
    lowest energy returned.

    Args:
      key: the sampler's key.
      observation: one observation.
      energy_fn: ``energy_fn(observation, action) -> ()``, parameters bound (bind it with
        ``partial`` to get a ``policy_fn(key, observation)``).
      action_low, action_high: the action box, scalars or (A,).
      num_chains: chains run in parallel.
      num_steps: Langevin steps per chain.
      step_size: h of the first step.
      final_step_size: h of the last step (<= step_size).
    """
    check_callable("energy_fn", energy_fn, "energy_fn(observation, action) -> ()")
    _check_bounds(action_low, action_high)
    num_chains = check_positive_int("num_chains", num_chains)
    num_steps = check_positive_int("num_steps", num_steps)
    check_positive("step_size", step_size)
    check_positive("final_step_size", final_step_size)
    if final_step_size > step_size:
        raise ValueError(
            f"final_step_size must not exceed step_size, got {final_step_size} > {step_size}"
        )
    low, high = jnp.asarray(action_low), jnp.asarray(action_high)
    energy_of = partial(energy_fn, observation)
    score = jax.vmap(jax.grad(lambda a: -energy_of(a)))
    fraction = jnp.arange(num_steps) / max(num_steps - 1, 1)
    step_sizes = step_size * (final_step_size / step_size) ** fraction
    key_init, key_loop = jax.random.split(key)
    actions = _uniform_actions(key_init, (num_chains,), low, high)

    def body(actions, inputs):
        i, h = inputs
        moved = langevin_update(jax.random.fold_in(key_loop, i), actions, score(actions), h)
        return jnp.clip(moved, low, high), None

    actions, _ = jax.lax.scan(body, actions, (jnp.arange(num_steps), step_sizes))
    return actions[jnp.argmin(jax.vmap(energy_of)(actions))]
