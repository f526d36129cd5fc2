"""The foundation's experiments run end to end in smoke mode and write their outputs."""

import json
import math

from experiments import mode_weights, two_gaussians
from experiments.common import parse_config


def test_two_gaussians_smoke(tmp_path):
    cfg = parse_config(
        two_gaussians.Config, two_gaussians.SMOKE, ["--smoke", "--out-dir", str(tmp_path)]
    )
    results = two_gaussians.main(cfg)
    for name in ("metrics.json", "samples.png", "score_field.png", "loss.png"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for sampler in ("langevin", "annealed_langevin"):
        assert math.isfinite(saved[sampler]["mmd"]) and saved[sampler]["mmd_noise_floor"] > 0
        assert abs(sum(saved[sampler]["mode_weights"]) - 1) < 1e-5
    assert all(math.isfinite(v) for v in results["fisher_divergence"].values())


def test_mode_weights_smoke(tmp_path):
    cfg = parse_config(
        mode_weights.Config, mode_weights.SMOKE, ["--smoke", "--out-dir", str(tmp_path)]
    )
    mode_weights.main(cfg)
    assert (tmp_path / "table.md").exists() and (tmp_path / "mode_weights.png").exists()


def test_config_overrides_from_the_command_line():
    cfg = parse_config(
        two_gaussians.Config,
        two_gaussians.SMOKE,
        ["--smoke", "--num-train-steps", "7", "--hidden", "8,8"],
    )
    assert cfg.num_train_steps == 7 and cfg.hidden == (8, 8) and cfg.num_samples == 300
