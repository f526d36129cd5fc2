"""Timing harness: interleaved, repeated calls; compile time apart; peak memory; ratios.

Every implementation of a case is prepared (compiled, warmed up) first, then the timed
calls are interleaved round-robin, the order rotating each round, so slow drifts of a shared
machine (other processes, thermal state) fall on all implementations alike. The reported
time is the median over rounds; ratios are taken between medians of the same run.
"""

import ctypes
import multiprocessing
import os
import threading
import time
import traceback
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
    setup_s: seconds to build it, when the harness's own clock would count more (a worker
      process's start-up).
    peak_rss: measures the peak memory growth of one call (default: ``peak_rss_growth`` of
      this process); close: releases what the implementation holds (a worker process).
    """

    call: Callable[[], object]
    compile_s: float = float("nan")
    device_bytes: float = float("nan")
    first_call_s: float = float("nan")
    setup_s: float = float("nan")
    peak_rss: Callable[[], float] | None = None
    close: Callable[[], None] | None = None


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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory: no mmap'd blocks, no trimming of the heap.

    By default glibc serves a block above a dynamic threshold (128 KiB at start, rising to
    the largest block freed, at most 32 MiB) with fresh mmap'd pages and returns the heap's
    top to the system once twice that is free, so a loop that allocates and frees
    multi-megabyte tensors every step can page-fault them in every step. This is the effect
    of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>``. Returns False where it cannot be
    set (not glibc).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _worker(conn, builder, args, kwargs, malloc_tuned):
    """Child process: build the workload, then run it on each request until told to stop."""
    try:
        if malloc_tuned and not keep_freed_memory():
            raise Skip("glibc's mallopt is not available here")
        start = time.perf_counter()
        call = builder(*args, **kwargs)
        setup_s = time.perf_counter() - start
    except Skip as why:
        conn.send(("skip", str(why)))
        return
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", setup_s))
    while True:
        request = conn.recv()
        if request == "stop":
            return
        value = call() if request == "call" else peak_rss_growth(call)
        conn.send(("done", value if request == "rss" else None))


def in_worker(builder, *args, malloc_tuned=False, **kwargs) -> Prepared:
    """Run ``builder(*args, **kwargs)()`` in a fresh process of its own, driven from here.

    For the PyTorch references: in the benchmark's own process their speed depended on what
    ran before them. glibc's dynamic mmap threshold rises when a large block is freed, so
    after XLA had freed a 10 MB buffer torch's ULA on the MLP score ran twice as fast as in a
    fresh process (measured on the 2-core CPU: 165 against 320 ms for 1e4 chains x 50 steps).
    A worker process is what a user's torch script gets; ``malloc_tuned=True`` first applies
    ``keep_freed_memory`` there (torch's best case). Each timed call is one request over a
    pipe (about 0.1 ms, against calls of tens of milliseconds); the harness interleaves it
    with the other implementations as usual. ``builder`` and its arguments must pickle.
    """
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(target=_worker, args=(child_conn, builder, args, kwargs,
                                                    malloc_tuned), daemon=True)  # fmt: skip
    process.start()
    # the child holds its end now; closing ours lets recv() see EOF if the child dies
    child_conn.close()
    try:
        status, value = conn.recv()
    except EOFError:  # it died before reporting (e.g. the builder did not unpickle there)
        process.join()
        raise RuntimeError(
            f"{builder.__name__}'s worker exited with code {process.exitcode} before it was "
            "ready (its traceback is on stderr above)"
        ) from None
    if status != "ready":
        process.join()
        if status == "skip":
            raise Skip(value)
        raise RuntimeError(f"{builder.__name__} failed in its worker:\n{value}")

    def request(what):
        conn.send(what)
        return conn.recv()[1]

    def close():
        conn.send("stop")
        process.join(timeout=10)

    return Prepared(lambda: request("call"), setup_s=value, peak_rss=lambda: request("rss"),
                    close=close)  # fmt: skip


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
    try:
        return _measure_prepared(case, prepared, repeats, rows)
    finally:
        for impl, _ in prepared.values():
            if impl.close is not None:
                impl.close()


def _measure_prepared(case, prepared, repeats, rows):
    names = list(prepared)
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(prepared[name][0].call))
    medians = {name: float(np.median(times[name])) for name in names}
    for name in names:
        impl, setup_s = prepared[name]
        setup_s = setup_s if np.isnan(impl.setup_s) else impl.setup_s
        compile_s = impl.compile_s
        if np.isnan(compile_s):  # compiled on first use: the first call's excess
            compile_s = max(setup_s + impl.first_call_s - medians[name], 0.0)
        peak = impl.peak_rss() if impl.peak_rss is not None else peak_rss_growth(impl.call)
        rows.append(
            _row(
                case,
                name,
                median_s=medians[name],
                spread=float(np.subtract(*np.percentile(times[name], [75, 25]))) / medians[name],
                throughput=case.work / medians[name],
                compile_s=compile_s,
                device_mb=impl.device_bytes / 2**20,
                peak_rss_mb=peak / 2**20,
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
