"""The image experiment's training path: an interrupted and resumed run equals the
uninterrupted one bit for bit, data-parallel training over 8 host devices equals one device,
and the smoke run writes its files. These are slow (U-Net compiles; ``make test-slow``): the
same properties of ``fit`` with small networks are in the fast suite (tests/test_checkpoint.py,
tests/test_sharding.py). The settings' errors and the map from pixels to the models' units
are checked here, fast."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import mnist_score
from scorejax import sde as sdes

ROOT = Path(__file__).resolve().parents[1]


def _setup(cfg):
    data, _ = mnist_score.load(cfg)
    images = data.train_images[:64, ..., None]
    widths, _ = mnist_score.settings(cfg)
    model, _, loss_fn, _, _ = mnist_score.make_model(cfg, "sde", widths, 2.0, images[0].size)
    return model, loss_fn, images


def _train(cfg, num_steps):
    model, loss_fn, images = _setup(cfg)
    no_grid = lambda params: None
    return mnist_score.train(cfg, "sde", model, loss_fn, images, jax.random.key(5), num_steps,
                             no_grid)  # fmt: skip


def _config(tmp_path, **overrides):
    smoke = dict(mnist_score.SMOKE, out_dir=str(tmp_path), checkpoint_every=10, steps_per_call=5)
    return dataclasses.replace(mnist_score.Config(), **{**smoke, **overrides})


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    whole, history, _ = _train(_config(tmp_path / "whole"), 20)
    # the interrupted run stops at step 10 (a checkpoint), then a new process resumes it
    _train(_config(tmp_path / "parts"), 10)
    resumed, rest, timings = _train(_config(tmp_path / "parts", resume=True), 20)
    assert timings["steps"] == 10 and int(resumed.step) == 20
    np.testing.assert_array_equal(rest["loss"], history["loss"][10:])
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(resumed),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a resume with nothing left to do trains no more steps
    _, _, again = _train(_config(tmp_path / "parts", resume=True), 20)
    assert again["steps"] == 0


SHARDED = r"""
import dataclasses, sys
import jax, numpy as np
sys.path.insert(0, "tests")
from test_mnist_score import _config, _train
from pathlib import Path
assert len(jax.devices()) == 8
tmp = Path(sys.argv[1])
one, h1, _ = _train(_config(tmp / "one"), 10)
eight, h8, _ = _train(_config(tmp / "eight", num_devices=8), 10)
np.testing.assert_allclose(h8["loss"], h1["loss"], rtol=1e-4)
for a, b in zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(eight.params)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5, rtol=0)
assert len(jax.tree_util.tree_leaves(eight.params)[0].sharding.device_set) == 8
print("SHARDED-OK")
"""


@pytest.mark.slow
def test_data_parallel_training_equals_one_device(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    result = subprocess.run([sys.executable, "-c", SHARDED, str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "SHARDED-OK" in result.stdout, result.stderr[-4000:]


@pytest.mark.slow
def test_smoke_run_writes_metrics_figures_and_logs(tmp_path):
    cfg = _config(tmp_path / "run", logdir=str(tmp_path / "tb"))
    results = mnist_score.main(cfg)
    mnist_score.report(results, cfg)
    out = Path(cfg.out_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    samplers = {row["sampler"] for row in metrics["samplers"]}
    assert samplers == {"annealed_langevin", "em", "pc", "ode"}
    for row in metrics["samplers"]:
        assert np.isfinite(row["fd"]) and row["score_evals"] > 0
    assert np.isfinite(metrics["bpd"]["bpd"])
    for name in ("samples.png", "nearest_neighbours.png", "denoising_ncsn.png",
                 "denoising_sde.png", "reverse_pc.gif", "table.md"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert list((tmp_path / "tb" / "sde").iterdir())


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(tier="tpu"), "tier"),
        (dict(models=("sde", "gan")), "models"),
        (dict(models=()), "models"),
    ],
)
def test_settings_name_a_bad_tier_or_model_set(overrides, match):
    with pytest.raises(ValueError, match=match):
        mnist_score.settings(dataclasses.replace(mnist_score.Config(), **overrides))


@pytest.mark.parametrize(
    "sde, lo, hi",
    [(None, 0.0, 1.0), (sdes.VESDE(), 0.0, 1.0), (sdes.VPSDE(), -1.0, 1.0)],
)
def test_pixels_map_to_the_model_units_and_back(sde, lo, hi):
    """Black and white pixels land on the model's range (VP centred in [-1, 1], as DDPM;
    NCSN and VE in pixels), and to_pixels inverts to_model_range."""
    pixels = jnp.linspace(0.0, 1.0, 11)
    x = mnist_score.to_model_range(sde, pixels)
    np.testing.assert_allclose([x[0], x[-1]], [lo, hi])
    np.testing.assert_allclose(mnist_score.to_pixels(sde, x), pixels, atol=1e-7)


def test_bits_per_dim_below_zero_is_reported_as_a_failed_solve():
    """Expected bits/dim of dequantised data is >= 0 under any normalised density, so a
    negative mean (an inaccurate ODE solve) warns; a valid one passes silently."""
    with pytest.warns(UserWarning, match="below 0"):
        summary = mnist_score.bpd_summary(np.array([-1.5, -0.5]), np.array([70, 76]))
    assert summary["bpd"] == -1.0 and summary["bpd_se"] == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mnist_score.bpd_summary(np.array([1.9]), np.array([70]))["bpd_se"] is None


@pytest.mark.slow
def test_a_subset_of_the_models_trains_and_samples_only_those(tmp_path):
    cfg = _config(tmp_path / "run", models=("sde",))
    results = mnist_score.main(cfg)
    mnist_score.report(results, cfg)
    assert set(results["models"]) == {"sde"}
    assert {row["sampler"] for row in results["samplers"]} == {"em", "pc", "ode"}
    assert not (Path(cfg.out_dir) / "checkpoints" / "ncsn").exists()
    assert (Path(cfg.out_dir) / "samples.png").stat().st_size > 0


@pytest.mark.slow
def test_a_ve_model_runs_all_four_samplers(tmp_path):
    """With --sde ve the one SDE model also runs annealed Langevin (ve_noise_conditional)."""
    cfg = _config(tmp_path / "run", models=("sde",), sde="ve")
    results = mnist_score.main(cfg)
    mnist_score.report(results, cfg)
    rows = {row["sampler"]: row for row in results["samplers"]}
    assert set(rows) == {"annealed_langevin_ve", "em", "pc", "ode"}
    for row in rows.values():
        assert np.isfinite(row["fd"]) and row["score_evals"] > 0
    assert (Path(cfg.out_dir) / "reverse_annealed_langevin_ve.gif").stat().st_size > 0
