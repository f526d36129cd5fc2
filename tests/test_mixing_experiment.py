"""The mixing experiment runs end to end in smoke mode and writes finite results."""

import json

import numpy as np
import pytest

from experiments.common import parse_config
from experiments.mixing import SMOKE, Config, count_switches, main, report


def test_count_switches_with_hysteresis():
    x1 = np.array([[-1.0, -0.2, 0.3, 0.9, 0.4, -0.6, -1.0, 0.1, 0.7]])
    # -1 -> +1 at 0.9, +1 -> -1 at -0.6, -1 -> +1 at 0.7; jitter within (-0.5, 0.5) is ignored
    assert count_switches(x1).tolist() == [3]
    assert count_switches(np.array([[0.0, 0.2, 0.6, 0.7]])).tolist() == [0]


@pytest.mark.slow  # 33 s on 2 cores
def test_mixing_smoke(tmp_path):
    cfg = parse_config(Config, SMOKE, ["--smoke", "--out-dir", str(tmp_path)])
    metrics = main(cfg)
    report(metrics, cfg)
    for name in ("switching_rate.png", "trajectories.png", "mode_weights.png", "table.md",
                 "metrics.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for rates in saved["switching_rate_per_1000_gradients"].values():
        assert np.all(np.isfinite(rates)) and np.all(np.asarray(rates) >= 0)
    for weights in metrics["mixture_mode_weights"].values():
        total = weights["light_weight"] + weights["heavy_weight"]
        assert np.isfinite(total) and abs(total - 1) < 1e-6
