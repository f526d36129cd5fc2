"""Guidance with exact scores and classifiers of a labelled Gaussian mixture (its classes are
its components): identities between the guided scores, the selected component sampled within
Monte Carlo error, and the training losses against direct computations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scorejax as sj
from scorejax import guidance, samplers
from scorejax import sde as sdes

MIXTURE = sj.GaussianMixture(
    means=jnp.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]]),
    scales=jnp.array([0.5, 0.8, 0.6]),
    weights=jnp.array([0.5, 0.3, 0.2]),
)
SDE = sdes.VPSDE()


def _component(k):
    return sj.GaussianMixture(MIXTURE.means[k : k + 1], MIXTURE.scales[k : k + 1], jnp.ones(1))


def _unconditional(x, t):
    return MIXTURE.marginal(SDE, t).score(x)


def _conditional(x, t, c):
    """Exact s(x, t, c): component c's noised score, the mixture's for the null class 3."""
    scores = [_component(k).marginal(SDE, t).score(x) for k in range(3)] + [_unconditional(x, t)]
    return jnp.stack(scores)[c]


POINTS = jax.random.normal(jax.random.key(0), (16, 2)) * 3.0


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_guidance_at_scale_one_is_the_exact_conditional_score(t):
    classifier = guidance.mixture_classifier(MIXTURE, SDE)
    for k in range(3):
        guided = guidance.classifier_guided_score(_unconditional, classifier, k, scale=1.0,
                                                  num_classes=3)  # fmt: skip
        exact = jax.vmap(lambda x, k=k: _component(k).marginal(SDE, t).score(x))(POINTS)
        np.testing.assert_allclose(jax.vmap(lambda x: guided(x, t))(POINTS), exact, rtol=1e-4,
                                   atol=1e-4)  # fmt: skip
    unguided = guidance.classifier_guided_score(_unconditional, classifier, 0, scale=0.0,
                                                num_classes=3)  # fmt: skip
    np.testing.assert_allclose(jax.vmap(lambda x: unguided(x, t))(POINTS),
                               jax.vmap(lambda x: _unconditional(x, t))(POINTS))  # fmt: skip


def test_classifier_free_equals_classifier_guidance_at_one_more_scale():
    """With exact scores, (1 + w) s(x|y) - w s(x) = s(x) + (1 + w) grad log p(y|x)."""
    classifier = guidance.mixture_classifier(MIXTURE, SDE)
    for w in (0.0, 0.5, 3.0):
        free = guidance.classifier_free_score(_conditional, 2, scale=w, num_classes=3)
        guided = guidance.classifier_guided_score(_unconditional, classifier, 2, scale=1.0 + w,
                                                  num_classes=3)  # fmt: skip
        np.testing.assert_allclose(jax.vmap(lambda x: free(x, 0.3))(POINTS),
                                   jax.vmap(lambda x: guided(x, 0.3))(POINTS),
                                   rtol=1e-4, atol=1e-4)  # fmt: skip


def test_guided_sampler_samples_the_selected_component():
    classifier = guidance.mixture_classifier(MIXTURE, SDE)
    k, n = 1, 4000
    guided = guidance.classifier_guided_score(_unconditional, classifier, k, scale=1.0,
                                              num_classes=3)  # fmt: skip
    sampler = samplers.pc_sampler(SDE, guided, samplers.reverse_diffusion,
                                  samplers.langevin_corrector)  # fmt: skip
    x_init = SDE.prior_sample(jax.random.key(1), (n, 2))
    x = sj.run_chains(jax.random.key(2), sampler, x_init, 300,
                      schedule=samplers.reverse_time_grid(SDE, 300)).state.x  # fmt: skip
    x = np.asarray(x, np.float64)
    nearest = np.argmin(((x[:, None] - np.asarray(MIXTURE.means)) ** 2).sum(-1), axis=1)
    # the components are 4 to 5 standard deviations from their midpoints: nearly every
    # sample of component 1 is nearest its mean (the other classes' share is 2e-4 at most)
    assert np.mean(nearest == k) > 0.99
    se = x.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(x.mean(axis=0) - np.asarray(MIXTURE.means[k])) < 4 * se)
    scale = float(MIXTURE.scales[k])
    assert np.all(np.abs(x.std(axis=0, ddof=1) - scale) < 4 * scale / np.sqrt(2 * n))


@pytest.mark.slow
def test_noisy_classifier_loss_of_the_exact_classifier_is_its_expected_cross_entropy():
    """The loss draws t, x(t) from the kernel; the same expectation drawn another way (x(t)
    straight from the component's marginal) agrees within Monte Carlo error."""
    classifier = guidance.mixture_classifier(MIXTURE, SDE)
    logits_fn = lambda params, x, t: classifier(x, t)
    loss = functools.partial(guidance.noisy_classifier_loss, logits_fn=logits_fn, sde=SDE)
    labels = jax.random.choice(jax.random.key(3), 3, (20_000,), p=MIXTURE.weights)
    x0 = MIXTURE.means[labels] + MIXTURE.scales[labels, None] * jax.random.normal(
        jax.random.key(4), (20_000, 2))  # fmt: skip
    values = np.asarray(jax.vmap(lambda k: loss(None, k, (x0[:2000], labels[:2000])))(
        jax.random.split(jax.random.key(5), 100)))  # fmt: skip

    def direct(key):
        key_t, key_x = jax.random.split(key)
        t = jax.random.uniform(key_t, (), minval=SDE.eps, maxval=1.0)
        k = labels[jax.random.randint(key_x, (), 0, 20_000)]
        comp = jax.tree_util.tree_map(lambda a: a[k][None], (MIXTURE.means, MIXTURE.scales))
        marginal = sj.GaussianMixture(*comp, jnp.ones(1)).marginal(SDE, t)
        x = marginal.sample(jax.random.fold_in(key, 1), 1)[0]
        return -classifier(x, t)[k]

    direct_values = np.asarray(jax.vmap(direct)(jax.random.split(jax.random.key(6), 200_000)))
    se = np.hypot(values.std(ddof=1) / np.sqrt(values.size),
                  direct_values.std(ddof=1) / np.sqrt(direct_values.size))  # fmt: skip
    assert abs(values.mean() - direct_values.mean()) < 4 * se
    assert values.mean() < np.log(3)


@pytest.mark.slow
def test_conditional_dsm_loss_is_the_dsm_loss_of_the_labelled_score():
    x = MIXTURE.sample(jax.random.key(7), 64)
    labels = jnp.full((64,), 1, jnp.int32)
    key = jax.random.key(8)
    score_fn = lambda params, v, t, c: _conditional(v, t, c)
    for drop_rate, label in ((0.0, 1), (1.0, 3)):
        value = guidance.conditional_sde_dsm_loss(
            None, key, (x, labels), score_fn=score_fn, sde=SDE, drop_rate=drop_rate, null_label=3
        )
        bound = lambda params, v, t, c=label: score_fn(params, v, t, c)
        plain = sj.sde_dsm_loss(None, jax.random.split(key)[1], x, sde=SDE, score_fn=bound)
        np.testing.assert_allclose(value, plain, rtol=1e-6)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: guidance.classifier_guided_score(_unconditional, _unconditional, 0, scale=-1.0,
                                                  num_classes=3), "scale"),
        (lambda: guidance.classifier_guided_score(_unconditional, _unconditional, 3, scale=1.0,
                                                  num_classes=3), "label"),
        (lambda: guidance.classifier_free_score(_conditional, -1, scale=1.0, num_classes=3),
         "label"),
        (lambda: guidance.classifier_free_score(_conditional, 0, scale=1.0, num_classes=3,
                                                null_label=2), "null_label"),
        (lambda: guidance.conditional_sde_dsm_loss(None, jax.random.key(0),
                                                   (jnp.zeros((2, 2)), jnp.zeros(2, int)),
                                                   score_fn=_conditional, sde=SDE,
                                                   drop_rate=1.5, null_label=3), "drop_rate"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_time_conditional_classifier_reads_t_and_checks_shapes():
    model = sj.nets.TimeConditionalClassifier(widths=(4, 8), feature_dim=16)
    x = jax.random.uniform(jax.random.key(0), (3, 8, 8))
    params = jax.jit(model.init)(jax.random.key(1), x, jnp.full(3, 0.5))
    apply = jax.jit(model.apply)
    logits = apply(params, x, jnp.full(3, 0.5))
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(apply(params, x[0], jnp.float32(0.5)), logits[0], rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    assert float(jnp.max(jnp.abs(apply(params, x, jnp.full(3, 0.9)) - logits))) > 1e-5
    with pytest.raises(ValueError, match="t must be a scalar"):
        model.apply(params, x, jnp.float32(0.5))
