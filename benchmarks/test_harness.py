"""The harness against the operating system: worker processes, malloc, memory, /proc, the CLI.

Not part of the default test run (``testpaths`` is tests/): ``make bench-test`` runs these,
with the benchmark's extra installed. The pure logic is tested in tests/test_benchmarks.py.
"""

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc, glibc")


def test_peak_rss_growth_sees_an_allocation():
    import numpy as np

    def allocate():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.05)
        return block.sum()

    assert harness.peak_rss_growth(allocate) > 32 * 2**20


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


def _expect_threads(num_threads):
    """A builder that fails in its worker unless torch runs ``num_threads`` threads there."""
    import torch

    if torch.get_num_threads() != num_threads:
        raise RuntimeError(f"torch runs {torch.get_num_threads()} threads, not {num_threads}")
    return lambda: None


def test_torch_references_run_at_the_thread_count_asked_for():
    pytest.importorskip("torch")
    from benchmarks import problems, torch_ref

    for n in problems.thread_counts():
        impl = problems._torch(torch_ref.normals, 100, 2).variants[f"{n}t"]()
        try:
            assert impl.notes == {"threads": n}
            impl.call()
        finally:
            impl.close()
        # the worker's torch runs n threads: threaded sets them before building
        harness.in_worker(torch_ref.threaded, n, _expect_threads, n).close()
    with pytest.raises(RuntimeError, match="threads"):
        harness.in_worker(_expect_threads, 10_000)  # not set: torch's default


# spins until it has used half a second of CPU, then writes the file named in argv[1]
_SPIN = """
import sys, time
while time.process_time() < 0.5:
    pass
open(sys.argv[1], "w").close()
"""


@linux_only
def test_cpu_monitor_counts_other_processes_but_not_ours(tmp_path):
    # our own child's CPU time is ours; an orphaned spinner (reparented away from us) is not
    monitor = harness.CpuMonitor()
    subprocess.run([sys.executable, "-c", _SPIN, str(tmp_path / "child")], check=True)
    mine = monitor.read()
    assert mine["own_cores"] * mine["wall_s"] > 0.45
    done = tmp_path / "orphan"
    monitor = harness.CpuMonitor()
    subprocess.run(["sh", "-c", '"$0" -c "$1" "$2" &', sys.executable, _SPIN, str(done)],
                   check=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.05)  # let it exit
    theirs = monitor.read()
    assert done.exists()
    assert theirs["foreign_cores"] * theirs["wall_s"] > 0.45
    assert theirs["own_cores"] * theirs["wall_s"] < 0.2


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


@linux_only
def test_keep_freed_memory_reuses_freed_blocks_without_page_faults():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "benchmarks", "--quick", "--only", "normals",
               "--repeats", "2", "--out-dir", str(tmp_path)]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT, timeout=600)
    report = json.loads((tmp_path / "quick.json").read_text())
    assert list(report)[:3] == ["reliable", "unreliable_because", "max_foreign_cores"]
    assert report["environment"]["foreign_cores"] >= 0
    rows = {r["impl"]: r for r in report["rows"] if r["problem"] == "normals"}
    keys = {"scorejax", "scorejax[unrolled]", "scorejax[rbg]", "scorejax[unsafe_rbg]"}
    assert keys | {"plain_jax"} <= set(rows)
    mine = rows["scorejax"]
    assert mine["x_vs_plain_jax"] == rows["plain_jax"]["median_s"] / mine["median_s"]
    assert mine["throughput"] == pytest.approx(2 * 10_000 * 100 / mine["median_s"])
    if "torch_eager" in rows:  # torch installed: the best of its thread counts
        best = rows["torch_eager"]
        assert best["best_of"] == f"torch_eager[{best['threads']}t]"
        assert best["median_s"] == min(
            r["median_s"] for r in rows.values() if r.get("member_of") == "torch_eager"
        )
    text = (tmp_path / "quick.md").read_text()
    assert "| normals |" in text
    assert ("**UNRELIABLE RUN**" in text) == (not report["reliable"])
