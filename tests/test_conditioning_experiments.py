"""Smoke runs of the conditioning experiments on the image models (guidance, inpainting):
their outputs exist and hold what their tables claim. Slow: each trains tiny U-Nets."""

import json

import numpy as np
import pytest

from experiments import guidance, inpainting
from experiments.common import parse_config


@pytest.mark.slow
def test_guidance_smoke(tmp_path):
    cfg = parse_config(guidance.Config, guidance.SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    results = guidance.main(cfg)
    guidance.report(results, cfg)
    for name in ("metrics.json", "table.md", "tradeoff.png", "samples_classifier.png",
                 "samples_classifier_free.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert {(r["guidance"], r["w"]) for r in rows} == {
        (m, w) for m in ("classifier", "classifier_free") for w in cfg.scales
    }
    for row in rows:
        assert 0.0 <= row["agreement"] <= 1.0 and np.isfinite(row["fd"])
    samples = results["arrays"]["classifier_free_1.0"]
    assert samples.shape == (10 * cfg.samples_per_class, 8, 8)
    assert samples.min() >= 0.0 and samples.max() <= 1.0


@pytest.mark.slow
def test_inpainting_smoke_keeps_the_known_pixels(tmp_path):
    cfg = parse_config(inpainting.Config, inpainting.SMOKE,
                       ["--smoke", "--out-dir", str(tmp_path)])  # fmt: skip
    results = inpainting.main(cfg)
    inpainting.report(results, cfg)
    for task in cfg.tasks:
        assert (tmp_path / f"{task}.png").stat().st_size > 0
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert {r["task"] for r in rows} == set(cfg.tasks)
    # "half": the known top half of every sample equals the observation (project_exact)
    arrays = results["arrays"]["half"]
    truth = np.asarray(arrays["truth"])
    for name in ("ncsn", "sde"):
        samples = np.asarray(arrays[name])  # (observations, samples, H, W)
        np.testing.assert_allclose(samples[:, :, :4], np.broadcast_to(truth[:, None, :4],
                                   samples[:, :, :4].shape), atol=1e-6)  # fmt: skip


@pytest.mark.slow
def test_inpainting_with_a_ve_model_keeps_the_known_pixels(tmp_path):
    """A VE model works in pixels (VP in [-1, 1]): the observation is carried to the model's
    units by mnist_score.pixel_map, so the known half still equals the truth."""
    argv = ["--smoke", "--out-dir", str(tmp_path), "--models", "sde", "--sde", "ve"]
    cfg = parse_config(inpainting.Config, inpainting.SMOKE, argv)
    results = inpainting.main(cfg)
    assert {r["method"] for r in results["rows"]} >= {"ve_reverse_sde"}
    arrays = results["arrays"]["half"]
    truth, samples = np.asarray(arrays["truth"]), np.asarray(arrays["sde"])
    np.testing.assert_allclose(samples[:, :, :4], np.broadcast_to(truth[:, None, :4],
                               samples[:, :, :4].shape), atol=1e-6)  # fmt: skip
    denoise = [r for r in results["rows"] if r["task"] == "denoise"]
    assert all(np.isfinite(r["mse_unknown"]) for r in denoise)


@pytest.mark.slow
def test_inpainting_with_one_model_and_a_saved_classifier(tmp_path):
    """``--models ncsn`` restores and runs only the NCSN; ``--classifier`` reuses the first
    run's quality classifier, so the agreements of the two runs are measured alike."""
    cfg = parse_config(inpainting.Config, inpainting.SMOKE,
                       ["--smoke", "--out-dir", str(tmp_path / "both")])  # fmt: skip
    first = inpainting.main(cfg)
    argv = ["--smoke", "--out-dir", str(tmp_path / "ncsn"), "--models", "ncsn",
            "--models-dir", str(tmp_path / "both" / "models"),
            "--classifier", str(tmp_path / "both" / "classifier.msgpack")]  # fmt: skip
    cfg_ncsn = parse_config(inpainting.Config, inpainting.SMOKE, argv)
    second = inpainting.main(cfg_ncsn)
    inpainting.report(second, cfg_ncsn)
    methods = {r["method"] for r in second["rows"]}
    assert "annealed_langevin" in methods and "vp_reverse_sde" not in methods
    # the same seed would retrain the same classifier: loaded_from tells the two apart
    assert second["classifier"]["loaded_from"] == str(tmp_path / "both" / "classifier.msgpack")
    assert second["classifier"]["held_out_accuracy"] == first["classifier"]["held_out_accuracy"]
    ncsn_rows = [r for r in second["rows"] if r["method"] == "annealed_langevin"]
    first_rows = [r for r in first["rows"] if r["method"] == "annealed_langevin"]
    for a, b in zip(ncsn_rows, first_rows, strict=True):  # same models, keys and classifier
        assert a["mse_unknown"] == pytest.approx(b["mse_unknown"], rel=1e-5)
        assert a["agreement"] == b["agreement"]
