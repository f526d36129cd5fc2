"""ESS, integrated autocorrelation time and split R-hat against AR(1) closed forms.

An AR(1) chain x_t = phi x_{t-1} + sqrt(1 - phi^2) e_t started from N(0, 1) is stationary
with unit variance and rho_t = phi^t, so tau = (1 + phi) / (1 - phi) and ESS = M N / tau.
Tolerances: Sokal (1997, Eq. 3.19) gives var(tau_hat) ~ 2 (2 W + 1) / (M N) tau^2 for a
window W (here the lag where Geyer's sequence was cut); k = 4 standard deviations
(two-sided false-alarm rate 6e-5 under normality).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import lfilter

from scorejax import diagnostics
from scorejax.samplers import MetropolisInfo


def ar1(seed, phi, num_chains, num_draws):
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((num_chains, num_draws)) * np.sqrt(1 - phi**2)
    noise[:, 0] = rng.standard_normal(num_chains)  # stationary start
    return lfilter([1.0], [1.0, -phi], noise, axis=1).astype(np.float32)


def _window(x):
    rho = np.asarray(diagnostics.autocorrelation(x[None] if x.ndim == 1 else x))
    pairs = rho[0::2][: len(rho) // 2] + rho[1::2][: len(rho) // 2]
    cut = np.argmax(pairs <= 0) if np.any(pairs <= 0) else len(pairs)
    return 2 * cut


@pytest.mark.parametrize("phi", [0.9, 0.5, 0.0, -0.5])
def test_tau_and_ess_match_ar1_closed_form(phi):
    num_chains, num_draws = 4, 50_000
    x = ar1(0, phi, num_chains, num_draws)
    tau = (1 + phi) / (1 - phi)
    tau_hat = float(diagnostics.integrated_autocorrelation_time(x))
    sd = tau * np.sqrt(2 * (2 * _window(x) + 1) / (num_chains * num_draws))
    assert abs(tau_hat - tau) < 4 * sd, (phi, tau_hat, tau, sd)
    ess = float(diagnostics.effective_sample_size(x))
    np.testing.assert_allclose(ess, num_chains * num_draws / tau_hat, rtol=1e-5)


def test_autocorrelation_of_ar1_is_geometric():
    x = ar1(1, 0.8, 4, 50_000)
    rho = np.asarray(diagnostics.autocorrelation(x))[:5]
    # each rho_t has standard error about sqrt((1 + phi^2)/(1 - phi^2) / (M N)) (Bartlett)
    se = np.sqrt((1 + 0.64) / (1 - 0.64) / 200_000)
    np.testing.assert_allclose(rho, 0.8 ** np.arange(5), atol=4 * se * np.sqrt(5))


def test_event_dimensions_are_independent():
    a, b = ar1(2, 0.9, 4, 20_000), ar1(3, 0.0, 4, 20_000)
    both = np.stack([a, b], axis=-1)  # (chains, draws, 2)
    tau = np.asarray(diagnostics.integrated_autocorrelation_time(both))
    np.testing.assert_allclose(tau[0], diagnostics.integrated_autocorrelation_time(a), 1e-5)
    np.testing.assert_allclose(tau[1], diagnostics.integrated_autocorrelation_time(b), 1e-5)


def test_mcse_of_ar1_mean():
    # MCSE = sqrt(tau / (M N)) for unit variance
    x = ar1(4, 0.9, 4, 50_000)
    expected = np.sqrt(19.0 / 200_000)
    assert abs(float(diagnostics.mcse(x)) / expected - 1) < 0.25  # sd(tau)/tau ~ 0.05, /2


def test_split_rhat_ar1_closed_form():
    """For stationary AR(1) splits of n draws: E[W] ~ 1 - tau/n, E[B/n] ~ tau/n, so
    R^2 ~ (n - 1)/n + (tau/n) / (1 - tau/n). B/n is a variance of M' = 2M split means, with
    relative sd sqrt(2 / (M' - 1)); R-hat's sd is half that of R^2 times tau/n."""
    phi, num_chains, num_draws = 0.9, 64, 2000
    tau, n = 19.0, num_draws // 2
    x = ar1(5, phi, num_chains, num_draws)
    expected = np.sqrt((n - 1) / n + (tau / n) / (1 - tau / n))
    sd = 0.5 * (tau / n) * np.sqrt(2 / (2 * num_chains - 1))
    rhat = float(diagnostics.split_rhat(x))
    assert abs(rhat - expected) < 4 * sd, (rhat, expected, sd)
    assert rhat > 1.0 + 4 * sd  # the autocorrelation is visible, not just 1


def test_split_rhat_detects_shifted_chains():
    """Half the chains shifted by +delta, half by -delta, iid N(0, 1) draws: the between-
    chain variance gains delta^2 M'/(M' - 1), so R^2 = 1 + delta^2 M'/(M' - 1)."""
    num_chains, num_draws, delta = 8, 4000, 0.5
    rng = np.random.default_rng(6)
    shifts = np.where(np.arange(num_chains) % 2 == 0, delta, -delta)[:, None]
    x = rng.standard_normal((num_chains, num_draws)) + shifts
    m = 2 * num_chains
    expected = np.sqrt(1 + delta**2 * m / (m - 1))
    # noise: the cross term 2 delta (mean of split-mean noise) has sd 2 delta / sqrt(n M')
    sd = 0.5 * 2 * delta / np.sqrt(num_draws / 2 * m) + 1 / num_draws
    assert abs(float(diagnostics.split_rhat(x)) - expected) < 4 * sd


def test_acceptance_summary():
    info = MetropolisInfo(jnp.array([0.5, 0.7, 0.6]), jnp.ones(3), jnp.zeros(3), jnp.zeros(3))
    summary = diagnostics.acceptance_summary(info)
    np.testing.assert_allclose([summary.mean, summary.min, summary.max], [0.6, 0.5, 0.7], 1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_chains"):
        diagnostics.effective_sample_size(np.zeros(100))
    with pytest.raises(ValueError, match="draws"):
        diagnostics.split_rhat(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="acceptance_rate"):
        diagnostics.acceptance_summary(object())
