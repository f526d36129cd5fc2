"""The benchmark harness: interleaved medians, ratios from the same run, clean skips."""

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
        {"scorejax": _sleeper(0.01), "torch_eager": _sleeper(0.03),
         "torch_eager[malloc]": _sleeper(0.02), "blackjax": _missing},
    )  # fmt: skip
    rows = harness.measure(case, repeats=3, log=lambda *a: None)
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["blackjax"]["skipped"] == "package missing"
    mine, theirs = by_impl["scorejax"], by_impl["torch_eager"]
    # sleep is a lower bound on each time; a loaded machine only adds to both
    assert 0.01 <= mine["median_s"] < theirs["median_s"] and theirs["median_s"] >= 0.03
    assert mine["x_vs_torch_eager"] == theirs["median_s"] / mine["median_s"]
    assert mine["throughput"] == 100.0 / mine["median_s"]
    targets = target_rows(rows)
    mlp = [t for t in targets if t["target"].startswith("CPU: ULA, MLP")]
    # the target against torch as a user runs it, then against torch with malloc tuned
    assert [t["against"] for t in mlp] == ["torch_eager", "torch_eager[malloc]"]
    assert mlp[0]["measured"] == round(mine["x_vs_torch_eager"], 2)
    assert mlp[0]["met"] == ("yes" if mine["x_vs_torch_eager"] >= 2.0 else "no")
    assert mlp[1]["measured"] == round(mine["x_vs_torch_eager[malloc]"], 2)
    others = [t for t in targets if not t["target"].startswith("CPU: ULA, MLP")]
    assert all(t["measured"] == "not run" for t in others)


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
    # the ceiling is torch's median step time over the matmul-only median
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
    assert "max_ratio_vs_torch_malloc" not in ceiling
    tuned = {**rows[1], "impl": "torch_eager[malloc]", "median_s": 1.0}
    assert mlp_ceiling([*rows, tuned], 40_000, 30_000)["max_ratio_vs_torch_malloc"] == 2.0
    assert mlp_ceiling(rows[1:], 40_000, 30_000) is None


def _raises_skip():
    raise harness.Skip("no torch here")


def _explode():
    raise RuntimeError("cannot be rebuilt here")


class _Unpicklable:
    """Pickles in the parent; rebuilding it in the worker raises."""

    def __reduce__(self):
        return (_explode, ())


def test_in_worker_runs_the_workload_in_its_own_process():
    # builder(*args) -> call: functools.partial(time.sleep, 0.05), built in the worker
    impl = harness.in_worker(functools.partial, time.sleep, 0.05)
    try:
        assert impl.setup_s < 1.0
        start = time.perf_counter()
        impl.call()
        assert time.perf_counter() - start >= 0.05  # the request waits for the call
        assert impl.peak_rss() < 2**20  # sleeping allocates nothing in the worker
    finally:
        impl.close()
    with pytest.raises(harness.Skip, match="no torch here"):
        harness.in_worker(_raises_skip)
    with pytest.raises(RuntimeError, match="ValueError"):
        harness.in_worker(int, "not a number")
    # a worker that dies before it reports is an error naming its exit code, not a hang
    with pytest.raises(RuntimeError, match="exited with code 1"):
        harness.in_worker(functools.partial, _Unpicklable())


_FAULTS = """
import resource, sys
import numpy as np
from benchmarks.harness import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(64 * 2**20 // 8)  # 64 MiB: above glibc's largest dynamic mmap threshold
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_reuses_freed_blocks_without_page_faults():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        return [int(f) for f in out.split()]

    default, tuned = faults("default"), faults("tuned")
    # by default each 64 MiB block is fresh mmap'd memory, faulted in again every time;
    # with keep_freed_memory the second and third reuse the first's pages
    assert min(default) > 0.5 * default[0] and tuned[0] > 0
    assert max(tuned[1:]) < 0.01 * tuned[0]


def test_command_line_writes_the_tables(tmp_path):
    # python -m benchmarks end to end on its cheapest problem: rows, ratios and both files
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "benchmarks", "--quick", "--only", "normals",
               "--repeats", "2", "--out-dir", str(tmp_path)]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=root, timeout=300)
    report = json.loads((tmp_path / "quick.json").read_text())
    rows = {r["impl"]: r for r in report["rows"] if r["problem"] == "normals"}
    assert {"scorejax", "jax_threefry", "torch_eager"} <= set(rows)
    mine = rows["scorejax"]
    assert mine["x_vs_jax_threefry"] == rows["jax_threefry"]["median_s"] / mine["median_s"]
    assert mine["throughput"] == pytest.approx(2 * 10_000 * 100 / mine["median_s"])
    assert "| normals |" in (tmp_path / "quick.md").read_text()
