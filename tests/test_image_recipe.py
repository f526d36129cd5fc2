"""NCSNv2's recipe (Song & Ermon 2020, Techniques 1, 2 and 4) and the score-SDE optimiser."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scorejax import losses, samplers, training


def test_largest_pairwise_distance_equals_brute_force():
    x = np.random.default_rng(0).normal(size=(37, 3, 2))
    flat = x.reshape(37, -1)
    brute = max(np.linalg.norm(a - b) for a in flat for b in flat)
    assert losses.largest_pairwise_distance(x, chunk_size=5) == pytest.approx(brute, rel=1e-12)


def test_largest_pairwise_distance_needs_two_examples():
    with pytest.raises(ValueError, match="data"):
        losses.largest_pairwise_distance(np.zeros((1, 4)))


def _mass(gamma, dim):
    phi = lambda u: 0.5 * (1 + math.erf(u / math.sqrt(2)))
    root = math.sqrt(2 * dim)
    return phi(root * (gamma - 1) + 3 * gamma) - phi(root * (gamma - 1) - 3 * gamma)


@pytest.mark.parametrize("dim", [64, 784, 3072])
def test_ncsnv2_sigmas_meet_technique_2(dim):
    """The ladder's ratio keeps at least half the mass within 3 std of the next level's radius,
    and one level fewer would not."""
    sigmas = np.asarray(losses.ncsnv2_sigmas(50.0, 0.01, dim), np.float64)
    gamma = sigmas[0] / sigmas[1]
    assert np.allclose(sigmas[:-1] / sigmas[1:], gamma, rtol=1e-4)
    assert _mass(gamma, dim) >= 0.5 - 1e-6
    coarser = (50.0 / 0.01) ** (1.0 / (len(sigmas) - 2))
    assert _mass(coarser, dim) < 0.5


@pytest.mark.parametrize(
    "sigma_max, num_levels, published",
    [(50.0, 232, 6.2e-6), (90.0, 500, 3.3e-6)],  # NCSNv2 Table: CIFAR-10, CelebA 64x64 (T = 5)
)
def test_ncsnv2_step_size_matches_published_settings(sigma_max, num_levels, published):
    """Technique 4 on the paper's ladders gives the paper's eps to its two significant digits."""
    sigmas = losses.geometric_sigmas(sigma_max, 0.01, num_levels)
    eps = samplers.ncsnv2_step_size(sigmas, 5)
    assert float(f"{eps:.2g}") == published


def test_ncsnv2_step_size_minimises_the_variance_ratio():
    sigmas = np.asarray(losses.geometric_sigmas(1.0, 0.01, 20), np.float64)
    gamma, var, steps = sigmas[0] / sigmas[1], sigmas[-1] ** 2, 3

    def ratio(eps):
        x = 1 - eps / var
        stationary = 2 * eps / (var - var * x**2)
        return x ** (2 * steps) * (gamma**2 - stationary) + stationary

    eps = samplers.ncsnv2_step_size(sigmas, steps)
    grid = np.geomspace(var * 1e-8, var * 0.999, 20001)
    assert ratio(eps) <= np.min(ratio(grid)) + 1e-9
    assert ratio(eps) > 1.0


def test_ncsnv2_step_size_bad_input():
    with pytest.raises(ValueError, match="sigmas"):
        samplers.ncsnv2_step_size(jnp.array([0.1, 1.0]), 5)
    with pytest.raises(ValueError, match="num_steps_per_level"):
        samplers.ncsnv2_step_size(jnp.array([1.0, 0.1]), 0)


def test_adam_with_warmup_ramps_and_clips():
    optimizer = training.adam_with_warmup(1e-2, warmup_steps=10, grad_clip=1.0)
    params = {"w": jnp.zeros(3)}
    state = optimizer.init(params)
    grads = {"w": jnp.array([300.0, -400.0, 0.0])}  # norm 500, clipped to 1
    sizes = []
    for _ in range(12):
        updates, state = optimizer.update(grads, state, params)
        sizes.append(float(optax.tree.norm(updates)))
    # Adam's first steps move each coordinate by ~lr(t); lr(t) = 1e-2 * t / 10 during warm-up
    assert sizes[0] == pytest.approx(0.0, abs=1e-12)
    assert sizes[5] == pytest.approx(math.sqrt(2) * 1e-2 * 5 / 10, rel=1e-3)
    assert sizes[11] == pytest.approx(math.sqrt(2) * 1e-2, rel=1e-3)
    # clipping keeps the direction: the update is parallel to the gradient
    direction = np.asarray(updates["w"]) / sizes[11]
    assert np.allclose(direction, -np.array([1, -1, 0]) / math.sqrt(2), atol=1e-6)


def test_adam_with_warmup_bad_input():
    with pytest.raises(ValueError, match="learning_rate"):
        training.adam_with_warmup(0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        training.adam_with_warmup(1e-3, warmup_steps=-1)
    with pytest.raises(ValueError, match="grad_clip"):
        training.adam_with_warmup(1e-3, grad_clip=0.0)
