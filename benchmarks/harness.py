"""Timing harness: interleaved, repeated calls; compile time apart; peak memory; ratios.

Every implementation of a case is prepared (compiled, warmed up) first, then the timed
calls are interleaved round-robin, the order rotating each round, so slow drifts of a shared
machine (other processes, thermal state) fall on all implementations alike. The reported
time is the median over rounds; ratios are taken between medians of the same run.

An implementation can come in variants of which the fastest is the one compared against
(``BestOf``): the PyTorch references run at one thread and at all cores, timed in the same
rounds, and the faster one is the ``torch_eager`` row. While the rounds run, ``CpuMonitor``
measures the CPU time that other processes take (the machine's busy time less this process's
and its descendants'), so a run disturbed by other work is recognised (``reliability``).
"""

import ctypes
import math
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
    notes: extra columns of its row (``threads`` for the PyTorch references).
    """

    call: Callable[[], object]
    compile_s: float = float("nan")
    device_bytes: float = float("nan")
    first_call_s: float = float("nan")
    setup_s: float = float("nan")
    peak_rss: Callable[[], float] | None = None
    close: Callable[[], None] | None = None
    notes: dict = field(default_factory=dict)


@dataclass
class BestOf:
    """Variants of one implementation, timed in the same rounds; the fastest is the one compared.

    ``variants`` maps a tag (``"1t"``) to a factory. In a Case, ``{"torch_eager": BestOf(...)}``
    becomes one implementation per variant, named by ``variant_name`` (``torch_eager[1t]``,
    ``torch_eager[malloc,2t]`` for ``torch_eager[malloc]``), and after the rounds a row named
    ``torch_eager`` repeats the fastest variant's numbers, naming it in ``best_of``.
    """

    variants: dict[str, Callable[[], Prepared]]


def variant_name(name: str, tag: str) -> str:
    """``name[tag]``, or ``name[a,tag]`` when name already ends in ``[a]``."""
    return f"{name[:-1]},{tag}]" if name.endswith("]") else f"{name}[{tag}]"


@dataclass
class Case:
    """One problem: ``work`` units (chain-steps, train steps) per call, several implementations.

    impls maps a name to a factory that returns a Prepared (or raises Skip), or to a BestOf,
    which is expanded into one implementation per variant (``best_of`` then maps the name to
    its variants' names). ``baseline`` names the implementation the ratios are taken for
    (scorejax); ratios are its throughput over each alternative's.
    """

    problem: str
    size: str
    unit: str
    work: float
    impls: dict[str, Callable[[], Prepared] | BestOf]
    baseline: str = "scorejax"
    notes: dict = field(default_factory=dict)
    best_of: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        impls = {}
        for name, impl in self.impls.items():
            if isinstance(impl, BestOf):
                members = {variant_name(name, tag): f for tag, f in impl.variants.items()}
                self.best_of[name] = list(members)
                impls.update(members)
            else:
                impls[name] = impl
        self.impls = impls


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

    For the PyTorch references: in the benchmark's own process their speed would depend on
    what ran before them (glibc's dynamic mmap threshold rises when a large block is freed).
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
            f"{_name(builder, args)}'s worker exited with code {process.exitcode} before it "
            "was ready (its traceback is on stderr above)"
        ) from None
    if status != "ready":
        process.join()
        if status == "skip":
            raise Skip(value)
        raise RuntimeError(f"{_name(builder, args)} failed in its worker:\n{value}")

    def request(what):
        conn.send(what)
        return conn.recv()[1]

    def close():
        conn.send("stop")
        process.join(timeout=10)

    return Prepared(lambda: request("call"), setup_s=value, peak_rss=lambda: request("rss"),
                    close=close)  # fmt: skip


def _name(builder, args) -> str:
    """``builder``'s name, with those of the functions among its arguments (``threaded(ula)``)."""
    inner = [a.__name__ for a in args if callable(a) and hasattr(a, "__name__")]
    name = getattr(builder, "__name__", repr(builder))
    return f"{name}({', '.join(inner)})" if inner else name


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(case: Case, repeats: int, log=print) -> list[dict]:
    """Prepare every implementation of ``case``, time them interleaved, return one row each.

    Each timed row also gets ``foreign_cores``: the cores other processes used on average
    during the case's timed rounds (``CpuMonitor``; NaN where it cannot be read).
    """
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
    monitor = CpuMonitor()
    for r in range(repeats):
        shift = r % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(prepared[name][0].call))
    foreign_cores = monitor.read()["foreign_cores"]
    medians = {name: float(np.median(times[name])) for name in names}
    timed = {}
    for name in names:
        impl, setup_s = prepared[name]
        setup_s = setup_s if np.isnan(impl.setup_s) else impl.setup_s
        compile_s = impl.compile_s
        if np.isnan(compile_s):  # compiled on first use: the first call's excess
            compile_s = max(setup_s + impl.first_call_s - medians[name], 0.0)
        peak = impl.peak_rss() if impl.peak_rss is not None else peak_rss_growth(impl.call)
        timed[name] = _row(
            case,
            name,
            **impl.notes,
            median_s=medians[name],
            spread=float(np.subtract(*np.percentile(times[name], [75, 25]))) / medians[name],
            throughput=case.work / medians[name],
            compile_s=compile_s,
            device_mb=impl.device_bytes / 2**20,
            peak_rss_mb=peak / 2**20,
            foreign_cores=foreign_cores,
        )
    rows += timed.values()
    rows += best_rows(case, timed)
    base = medians.get(case.baseline)
    if base is not None:
        mine = next(row for row in rows if row["impl"] == case.baseline)
        for row in rows:
            if row["impl"] != case.baseline and "median_s" in row:
                mine[f"x_vs_{row['impl']}"] = row["median_s"] / base
    return rows


def best_rows(case: Case, timed: dict[str, dict]) -> list[dict]:
    """For each BestOf of ``case``, a row named after it with its fastest timed variant's
    numbers (``best_of`` names that variant); each variant's row gets ``member_of``."""
    out = []
    for name, members in case.best_of.items():
        ran = [timed[m] for m in members if m in timed]
        for row in ran:
            row["member_of"] = name
        if ran:
            best = min(ran, key=lambda row: row["median_s"])
            copy = {k: v for k, v in best.items() if k != "member_of"}
            out.append({**copy, "impl": name, "best_of": best["impl"]})
    return out


def _row(case: Case, name: str, **values) -> dict:
    row = {"problem": case.problem, "size": case.size, "impl": name, "unit": case.unit}
    row.update(case.notes)
    row.update(values)
    return row


# Load from other processes

# A run whose timed rounds saw other processes use more than this many cores on average
# is unreliable. XLA's programs and torch at all cores keep every core busy, so a process
# that takes part of one core delays one of their threads and with it the whole step, and
# the implementations do not suffer that alike.
FOREIGN_CORES_LIMIT = 0.25


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), or range(cpu_count) where unknown."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def busy_seconds(cpus, path: str = "/proc/stat") -> float | None:
    """CPU time the given CPUs spent busy since boot, summed (seconds), or None off Linux.

    Busy is user + nice + system + irq + softirq + steal from ``/proc/stat``'s per-CPU lines
    (guest time is already inside user); idle and iowait are not. Steal is time a virtual
    machine's CPU was ready but the hypervisor ran something else: load from outside.
    """
    wanted = {f"cpu{c}" for c in cpus}
    try:
        with open(path) as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    ticks = 0
    for fields in lines:
        if fields[0] in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_stat(pid) -> tuple[int, int] | None:
    """(parent pid, utime + stime + cutime + cstime in clock ticks) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:  # gone, or not Linux
        return None
    # the command name is in parentheses and may hold spaces: fields start after the last ')'
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), sum(int(v) for v in fields[11:15])


def own_seconds() -> float | None:
    """CPU time of this process, of its children that have exited and been reaped, and of
    its descendants still running (the PyTorch workers), summed (seconds); None off Linux."""
    me = os.getpid()
    stats = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            stat = _proc_stat(entry)
            if stat is not None:
                stats[int(entry)] = stat
    if me not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    ticks, todo = 0, [me]
    while todo:
        pid = todo.pop()
        ticks += stats[pid][1]
        todo += children.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMonitor:
    """The CPU time other processes take on this process's CPUs, from construction to ``read``.

    Foreign time = the CPUs' busy time (``busy_seconds``) less this process tree's CPU time
    (``own_seconds``). Children that exit while it runs are counted through their parent's
    cutime/cstime once reaped, and through their own /proc entry until then.
    """

    def __init__(self):
        self.cpus = usable_cpus()
        self._start = self._sample()

    def _sample(self):
        return time.perf_counter(), busy_seconds(self.cpus), own_seconds()

    def read(self) -> dict:
        """Wall time, busy, own and foreign cores (CPU seconds per second) since construction;
        foreign_cores is NaN where /proc cannot be read."""
        (t0, busy0, own0), (t1, busy1, own1) = self._start, self._sample()
        wall = max(t1 - t0, 1e-9)
        if None in (busy0, busy1, own0, own1):
            nan = float("nan")
            return {"wall_s": wall, "busy_cores": nan, "own_cores": nan, "foreign_cores": nan}
        busy, own = busy1 - busy0, own1 - own0
        return {
            "wall_s": wall,
            "busy_cores": busy / wall,
            "own_cores": own / wall,
            # clock-tick accounting differs slightly between the two sources: never below 0
            "foreign_cores": max(busy - own, 0.0) / wall,
        }


def reliability(
    foreign_cores: float,
    load_at_start: float,
    num_cpus: int,
    limit: float = FOREIGN_CORES_LIMIT,
) -> tuple[bool, str]:
    """Whether a run's ratios can be trusted, and why not.

    The rule: unreliable when other processes used more than ``limit`` cores on average
    during the timed rounds (``foreign_cores``, the largest over the cases or over the
    whole run). Where that could not be measured (NaN), unreliable when the one-minute load
    average at the start exceeds ``num_cpus - 0.5``: more than all cores but half of one
    were already taken.
    """
    if not math.isnan(foreign_cores):
        if foreign_cores > limit:
            return False, (
                f"other processes used {foreign_cores:.2f} cores on average while it ran "
                f"(limit {limit:g} of {num_cpus} cores)"
            )
        return True, ""
    if load_at_start > num_cpus - 0.5:
        return False, (
            f"the load average at the start was {load_at_start:.2f} on {num_cpus} cores "
            "(foreign CPU time could not be measured here)"
        )
    return True, ""
