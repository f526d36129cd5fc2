"""Timing harness: interleaved, repeated calls; compile time apart; peak memory; ratios.

Every implementation of a case is prepared (compiled, warmed up) first, then the timed
calls are interleaved round-robin, the order rotating each round, so slow drifts of a shared
machine (other processes, thermal state) fall on all implementations alike. The reported
time is the median over rounds; ratios are taken between medians of the same run.
"""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class Skip(Exception):
    """Raised by an implementation that cannot run here (a package missing), saying why."""


@dataclass
class Prepared:
    """A ready implementation: ``call()`` runs the workload once and blocks until it is done.

    compile_s: seconds to compile (JAX: ``lower().compile()``; or the first call's excess over
      a steady call, for code compiled on first use and for PyTorch's warm-up).
    device_bytes: memory the compiled program needs (XLA's memory analysis: arguments,
      outputs and temporaries), when known.
    """

    call: Callable[[], object]
    compile_s: float = float("nan")
    device_bytes: float = float("nan")
    first_call_s: float = float("nan")


@dataclass
class Case:
    """One problem: ``work`` units (chain-steps, train steps) per call, several implementations.

    impls maps a name to a factory that returns a Prepared (or raises Skip). ``baseline``
    names the implementation the ratios are taken for (scorejax); ratios are its throughput
    over each alternative's.
    """

    problem: str
    size: str
    unit: str
    work: float
    impls: dict[str, Callable[[], Prepared]]
    baseline: str = "scorejax"
    notes: dict = field(default_factory=dict)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        return 0


def peak_rss_growth(call: Callable[[], object], interval: float = 0.002) -> float:
    """Largest growth of the process's resident memory during one ``call()`` (bytes).

    Host memory, sampled every ``interval`` seconds by a thread: on a CPU it captures what
    both JAX and PyTorch allocate; memory an allocator had already reserved and reuses is
    not counted, so it is a lower bound on the workload's peak.
    """
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        call()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return float(peak[0] - base)


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(case: Case, repeats: int, log=print) -> list[dict]:
    """Prepare every implementation of ``case``, time them interleaved, return one row each."""
    prepared, rows = {}, []
    for name, factory in case.impls.items():
        try:
            start = time.perf_counter()
            impl = factory()
            setup_s = time.perf_counter() - start
            impl.first_call_s = _timed(impl.call)
        except Skip as why:
            log(f"  skip {case.problem} [{case.size}] {name}: {why}")
            rows.append(_row(case, name, skipped=str(why)))
            continue
        prepared[name] = (impl, setup_s)
    names = list(prepared)
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(prepared[name][0].call))
    medians = {name: float(np.median(times[name])) for name in names}
    for name in names:
        impl, setup_s = prepared[name]
        compile_s = impl.compile_s
        if np.isnan(compile_s):  # compiled on first use: the first call's excess
            compile_s = max(setup_s + impl.first_call_s - medians[name], 0.0)
        rows.append(
            _row(
                case,
                name,
                median_s=medians[name],
                spread=float(np.subtract(*np.percentile(times[name], [75, 25]))) / medians[name],
                throughput=case.work / medians[name],
                compile_s=compile_s,
                device_mb=impl.device_bytes / 2**20,
                peak_rss_mb=peak_rss_growth(impl.call) / 2**20,
            )
        )
    base = medians.get(case.baseline)
    for row in rows:
        for other in names:
            if other != row["impl"] and row["impl"] == case.baseline and base is not None:
                row[f"x_vs_{other}"] = medians[other] / base
    return rows


def _row(case: Case, name: str, **values) -> dict:
    row = {"problem": case.problem, "size": case.size, "impl": name, "unit": case.unit}
    row.update(case.notes)
    row.update(values)
    return row
