"""The experiment template (experiments/common.py) and the first experiments' smoke runs."""

import importlib
import json
import math
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import experiments
from experiments import mode_weights, score_matching, two_gaussians
from experiments.common import load_image_data, mmd_noise_floor, parse_config, quality_classifier
from scorejax import quality

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted(
    m.name for m in pkgutil.iter_modules(experiments.__path__) if m.name != "common"
)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_follows_the_template(name):
    """Config, SMOKE, main(cfg) -> results, report(results, cfg), and the script runs both;
    its outputs go to results/<name> (results/smoke/<name> for a smoke run)."""
    module = importlib.import_module(f"experiments.{name}")
    assert callable(module.main) and callable(module.report)
    assert set(module.SMOKE) <= set(module.Config.__dataclass_fields__)
    assert module.Config().out_dir == f"results/{name}"
    source = Path(module.__file__).read_text()
    assert 'if __name__ == "__main__":\n    cfg = parse_config(Config, SMOKE)\n' in source
    assert "report(main(cfg), cfg)" in source
    assert parse_config(module.Config, module.SMOKE, ["--smoke"]).out_dir == (
        f"results/smoke/{name}"
    )


def test_help_shows_each_flag_with_its_type_and_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(two_gaussians.Config, two_gaussians.SMOKE, ["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--hidden HIDDEN comma-separated ints, default 128,128" in text
    assert "--num-train-steps NUM_TRAIN_STEPS int, default 6000" in text
    assert "--learning-rate LEARNING_RATE float, default 0.002" in text
    assert "--out-dir OUT_DIR str, default results/two_gaussians" in text
    assert "--hidden 128,128" in text  # how to write a tuple
    assert "--smoke" in text and "results/smoke/<name>" in text


def test_help_names_tuples_of_floats_strings_and_booleans(capsys):
    with pytest.raises(SystemExit):
        parse_config(score_matching.Config, score_matching.SMOKE, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--objectives OBJECTIVES comma-separated strings, default exact_sm,ssm,ssm_vr,dsm" in (
        text
    )
    assert "--energy-targets ENERGY_TARGETS comma-separated strings, default two_gaussians" in (
        text
    )


def test_config_overrides_from_the_command_line():
    cfg = parse_config(
        two_gaussians.Config,
        two_gaussians.SMOKE,
        ["--smoke", "--num-train-steps", "7", "--hidden", "8,8"],
    )
    assert cfg.num_train_steps == 7 and cfg.hidden == (8, 8)
    assert cfg.num_samples == two_gaussians.SMOKE["num_samples"]  # smoke, where not overridden
    full = parse_config(two_gaussians.Config, two_gaussians.SMOKE, ["--dsm-sigma", "0.2"])
    assert full.dsm_sigma == 0.2 and full.num_samples == two_gaussians.Config().num_samples
    empty = parse_config(score_matching.Config, score_matching.SMOKE, ["--energy-targets", ""])
    assert empty.energy_targets == ()


def test_smoke_runs_write_to_their_own_folder_unless_told_otherwise(tmp_path):
    config, smoke = two_gaussians.Config, two_gaussians.SMOKE
    assert parse_config(config, smoke, []).out_dir == "results/two_gaussians"
    assert parse_config(config, smoke, ["--smoke"]).out_dir == "results/smoke/two_gaussians"
    given = ["--smoke", "--out-dir", str(tmp_path)]
    assert parse_config(config, smoke, given).out_dir == str(tmp_path)
    assert parse_config(config, smoke, ["--out-dir", "x"]).out_dir == "x"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--hidden", "8,x", "expected int, got 'x'"), ("--learning-rate", "fast", "expected float")],
)
def test_bad_flag_values_name_the_expected_type(flag, value, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(two_gaussians.Config, two_gaussians.SMOKE, [flag, value])
    assert message in capsys.readouterr().err


def test_the_script_runs_from_the_command_line(tmp_path):
    """``python -m experiments.<name> --help`` works from the repository's root."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.mode_weights", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--num-chains NUM_CHAINS" in result.stdout


def test_a_saved_quality_classifier_is_reused_only_on_its_own_split(tmp_path):
    """The image experiments' ``--classifier``: a run saves its quality classifier; a later
    run loads it (the same predictions, so comparable FDs) and saves it beside its own
    outputs; loading it for another split is refused, since its training digits would be
    held out there."""
    images = load_image_data("digits", 0)
    key = jax.random.key(0)
    first = SimpleNamespace(dataset="digits", seed=0, classifier="", out_dir=str(tmp_path / "a"))
    params, info = quality_classifier(first, key, images, 5)
    saved = tmp_path / "a" / "classifier.msgpack"
    assert saved.is_file() and info["loaded_from"] is None
    second = SimpleNamespace(**vars(first))
    second.classifier, second.out_dir = str(saved), str(tmp_path / "b")
    loaded, loaded_info = quality_classifier(second, jax.random.key(1), images, 5)
    assert loaded_info["held_out_accuracy"] == info["held_out_accuracy"]
    assert loaded_info["loaded_from"] == str(saved)
    np.testing.assert_array_equal(quality.classify(loaded, images.test_images[:20])[0],
                                  quality.classify(params, images.test_images[:20])[0])  # fmt: skip
    assert (tmp_path / "b" / "classifier.msgpack").is_file()
    other_split = SimpleNamespace(**{**vars(second), "seed": 1})
    with pytest.raises(ValueError, match=r"classifier: .* was trained on the split"):
        quality_classifier(other_split, key, load_image_data("digits", 1), 5)


def test_mmd_noise_floor_reports_a_standard_error():
    import jax

    from scorejax import data, metrics

    target = data.two_gaussians()
    key = jax.random.key(0)
    mean, standard_error = mmd_noise_floor(key, target.sample, 100, 3)
    # the same repeats (keys, kernel) as the library's mean
    assert math.isclose(
        mean, float(metrics.mmd_noise_floor(key, target.sample, 100, 3)), rel_tol=1e-4
    )
    assert 0 < standard_error < mean


def test_two_gaussians_smoke(tmp_path):
    cfg = parse_config(
        two_gaussians.Config, two_gaussians.SMOKE, ["--smoke", "--out-dir", str(tmp_path)]
    )
    results = two_gaussians.main(cfg)
    assert not any(tmp_path.iterdir()), "main computes; report writes"
    two_gaussians.report(results, cfg)
    for name in ("metrics.json", "samples.png", "score_field.png", "loss.png"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "arrays" not in saved and saved["config"]["out_dir"] == str(tmp_path)
    for sampler in ("langevin", "annealed_langevin"):
        assert math.isfinite(saved[sampler]["mmd"]) and saved[sampler]["mmd_noise_floor"] > 0
        assert saved[sampler]["mmd_noise_floor_standard_error"] >= 0
        assert abs(sum(saved[sampler]["mode_weights"]) - 1) < 1e-5
    assert all(math.isfinite(v) for v in results["fisher_divergence"].values())
    assert results["arrays"]["langevin_samples"].shape == (cfg.num_samples, 2)


def test_mode_weights_smoke(tmp_path):
    cfg = parse_config(
        mode_weights.Config, mode_weights.SMOKE, ["--smoke", "--out-dir", str(tmp_path)]
    )
    results = mode_weights.main(cfg)
    mode_weights.report(results, cfg)
    for name in ("table.md", "mode_weights.png", "metrics.json"):
        assert (tmp_path / name).exists(), name
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert [r["sampler"] for r in rows] == ["true", "Langevin", "annealed Langevin"]
    assert all(abs(r["weight (-5,-5)"] + r["weight (5,5)"] - 1) < 1e-6 for r in rows)


@pytest.mark.slow  # 48 s; the SDE library has its own fast tests
def test_score_sde_2d_smoke(tmp_path):
    from experiments import score_sde_2d

    cfg = parse_config(
        score_sde_2d.Config, score_sde_2d.SMOKE, ["--smoke", "--out-dir", str(tmp_path)]
    )
    results = score_sde_2d.main(cfg)
    score_sde_2d.report(results, cfg)
    names = ["metrics.json", "table.md"]
    for dataset in cfg.datasets:
        names += [f"samples_{dataset}.png", f"trajectories_{dataset}.png", f"density_{dataset}.png"]
    for name in names:
        assert (tmp_path / name).exists(), name
    rows = results["samplers"]
    assert len(rows) == len(cfg.datasets) * len(cfg.sdes) * len(score_sde_2d.METHODS)
    assert all(r["score_evals"] > 0 for r in rows)
    sde_rows = [r for r in rows if r["method"] != "ODE"]
    assert {r["score_evals"] for r in sde_rows} == {cfg.num_score_evals + 1}  # matched
    for row in results["likelihood"]:
        assert math.isfinite(row["test_nll"]) and row["data_entropy"] > 0
