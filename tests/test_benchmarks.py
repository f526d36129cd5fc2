"""The benchmark harness: interleaved medians, ratios from the same run, clean skips."""

import time

from benchmarks import harness
from benchmarks.__main__ import target_rows


def _sleeper(seconds):
    return lambda: harness.Prepared(lambda: time.sleep(seconds), compile_s=0.0)


def _missing():
    raise harness.Skip("package missing")


def test_ratios_come_from_medians_of_the_same_run_and_skips_are_reported():
    case = harness.Case(
        "ula_mlp",
        "10000 chains x 1 steps",
        "chain-steps/s",
        100.0,
        {"scorejax": _sleeper(0.01), "torch_eager": _sleeper(0.03), "blackjax": _missing},
    )
    rows = harness.measure(case, repeats=3, log=lambda *a: None)
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["blackjax"]["skipped"] == "package missing"
    mine, theirs = by_impl["scorejax"], by_impl["torch_eager"]
    # sleep is a lower bound on each time; a loaded machine only adds to both
    assert 0.01 <= mine["median_s"] < theirs["median_s"] and theirs["median_s"] >= 0.03
    assert mine["x_vs_torch_eager"] == theirs["median_s"] / mine["median_s"]
    assert mine["throughput"] == 100.0 / mine["median_s"]
    targets = target_rows(rows)
    mlp = next(t for t in targets if t["target"].startswith("CPU: ULA, MLP"))
    assert mlp["measured"] == round(mine["x_vs_torch_eager"], 2)
    assert mlp["met"] == ("yes" if mine["x_vs_torch_eager"] >= 2.0 else "no")


def test_peak_rss_growth_sees_an_allocation():
    import numpy as np

    def allocate():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.05)
        return block.sum()

    assert harness.peak_rss_growth(allocate) > 32 * 2**20


def test_mlp_flops_and_ceiling_follow_from_the_rows():
    from benchmarks.__main__ import mlp_ceiling
    from benchmarks.problems import mlp_flops_per_chain_step

    # 2-128-128-2: 2 * (2*128 + 128*128 + 128*2) multiply-add flops
    assert mlp_flops_per_chain_step() == 2 * (256 + 16384 + 256)
    # the ceiling compares peak rounds (best_throughput), not the medians
    rows = [
        {"problem": "ula_mlp", "impl": impl, "size": "10000 chains x 5 steps", "median_s": t,
         "throughput": 5e4 / t}
        for impl, t in [("scorejax", 1.0), ("torch_eager", 2.0), ("xla_matmul_only", 0.5),
                        ("torch_matmul_only", 1.5)]
    ]  # fmt: skip
    ceiling = mlp_ceiling(rows, 40_000, 30_000)
    assert ceiling["gflops"]["scorejax"] == 5e4 * 40_000 / 1e9
    assert ceiling["gflops"]["xla_matmul_only"] == 1e5 * 30_000 / 1e9
    # the matmul alone takes 0.5 s where torch's whole step takes 2 s: at most 4x torch
    assert ceiling["max_ratio_vs_torch"] == 4.0
    assert mlp_ceiling(rows[1:], 40_000, 30_000) is None
