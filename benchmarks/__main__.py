"""``python -m benchmarks [--quick]``: scorejax against the alternatives, interleaved and repeated.

Writes ``results/benchmarks/<quick|full>.json`` and ``.md``: one row per problem, size and
implementation with throughput, compile time, memory and the ratio of scorejax's
throughput over each alternative measured in the same run, then the project's performance
targets with the measured ratio beside each.

On a CPU the process asks JAX for ``--cpu-devices`` host devices (default: the number of
cores) so that the ``scorejax[sharded]`` rows can split chains over them; the other rows
run on device 0 as they would by default. Each PyTorch reference runs in a worker process
of its own, as a user's script would (``harness.in_worker``), at one thread and at all
cores in the same rounds; ``torch_eager`` is the faster of the two (its ``threads`` column
says which) and the targets are taken against it. ``torch_eager[malloc]`` rows run it with
glibc's malloc told to keep freed memory, torch's best case.

Other work on the machine can skew the ratios by large factors (two-thread programs suffer
most when a core is taken). The run records the load average at its start and end and
measures the cores other processes used (``harness.CpuMonitor``) over the whole run and over
each case's timed rounds; when ``harness.reliability`` judges that above
``--max-foreign-cores`` (or, where it cannot be measured, the load at the start above all
cores but half of one), the run is marked UNRELIABLE at the top of both files, on stdout,
and in the targets' ``met`` column.
"""

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, minutes on 2 cores")
    parser.add_argument("--out-dir", default="results/benchmarks")
    parser.add_argument("--only", default="", help="comma-separated problems to run")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    parser.add_argument("--cpu-devices", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--max-foreign-cores",
        type=float,
        default=None,
        help="cores other processes may use on average before the run is marked unreliable "
        "(default: harness.FOREIGN_CORES_LIMIT)",
    )
    return parser.parse_args(argv)


# (problem, size prefix, alternative, target ratio, the target in words)
TARGETS = [
    ("ula_mlp", "10000 chains", "torch_eager", 2.0, "CPU: ULA, MLP score, 1e4 chains >= 2x torch"),
    ("ula_mixture", "10000 chains", "torch_eager", 1.5, "CPU: ULA, 2-D mixture >= 1.5x torch"),
    ("dsm_train", "batch 512", "torch_eager", 2.0, "CPU: DSM training, batch 512 >= 2x torch"),
    ("mala", "10000 chains", "blackjax", 1.0, "MALA >= blackjax"),
    ("hmc", "10000 chains", "blackjax", 1.0, "HMC >= blackjax"),
    ("sde_likelihood", "1000 points x 2 dims", "scipy_host_loop", 30.0,
     "ODE likelihood, 1,000 2-D points >= 30x scipy host loop"),
    ("sde_likelihood", "64 points x 784 dims", "scipy_host_loop", 3.0,
     "ODE likelihood, 784 dims, Hutchinson >= 3x scipy host loop"),
    ("pc_sampling", "10000 chains", "torch_eager", 2.0, "CPU: PC sampling, 1e4 chains >= 2x torch"),
    ("unet_train", "batch 128", "torch_eager", 1.0,
     "CPU: U-Net DSM training, batch 128 >= 1x torch"),
]  # fmt: skip


TARGET_COLUMNS = ["target", "impl", "against", "threads", "measured", "goal", "met"]


def _find(rows, problem, impl, size):
    """The first timed row of ``problem`` by ``impl`` whose size starts with ``size``, or None."""
    return next((r for r in rows if r["problem"] == problem and r["impl"] == impl
                 and r["size"].startswith(size) and "median_s" in r), None)  # fmt: skip


def target_rows(rows, reliable: bool = True):
    """Each target's measured ratio, scorejax (and its sharded row) against the alternative.

    The alternative is its best-of row (``torch_eager``: the faster thread count, named in
    ``threads``). Where it also ran with glibc's malloc tuned (``torch_eager[malloc]``, see
    ``harness.keep_freed_memory``), the ratio against that is reported too, in rows of their
    own: the targets are set against torch as a user's script runs it. ``met`` is yes or no,
    or "unreliable" for every target when the run was not ``reliable``.
    """
    out = []
    for problem, size, other, target, text in TARGETS:
        for against in (other, f"{other}[malloc]"):
            theirs = _find(rows, problem, against, size)
            for impl in ("scorejax", "scorejax[sharded]"):
                mine = _find(rows, problem, impl, size)
                if mine is None or theirs is None:
                    if impl == "scorejax" and against == other:
                        out.append({"target": text, "impl": impl, "against": against,
                                    "measured": "not run", "goal": target})  # fmt: skip
                    continue
                ratio = theirs["median_s"] / mine["median_s"]
                met = ("yes" if ratio >= target else "no") if reliable else "unreliable"
                out.append({"target": text, "impl": impl, "against": against,
                            "threads": theirs.get("threads", ""), "measured": round(ratio, 2),
                            "goal": target, "met": met})  # fmt: skip
    return out


def run_reliability(env, rows, limit):
    """(reliable, reason) of a run: the largest foreign load over its cases' timed rounds and
    over the whole run against ``limit`` (``harness.reliability``)."""
    from benchmarks import harness

    loads = [r["foreign_cores"] for r in rows if "foreign_cores" in r]
    loads.append(env["foreign_cores"])
    measured = [x for x in loads if not math.isnan(x)]
    worst = max(measured) if measured else float("nan")
    return harness.reliability(worst, env["load_average_at_start"][0], env["cpu_count"], limit)


def mlp_ceiling(rows, flops_per_chain_step, matmul_flops_per_chain_step):
    """The largest ula_mlp ratio over torch at 1e4 chains that XLA's matmul rate allows.

    ``xla_matmul_only`` runs, in the same interleaved rounds as the MLP ULA case, one step
    per chain of the 128 x 128 product alone (97% of the MLP's flops): no sampler step that
    contains that product can be faster, so its speed over torch's whole MLP ULA step bounds
    the ratio scorejax could reach. Also gives each row's flop rate. None when a row is
    missing.
    """
    impls = ("scorejax", "torch_eager", "xla_matmul_only", "torch_matmul_only")
    found = {impl: _find(rows, "ula_mlp", impl, "10000 chains") for impl in impls}
    if any(row is None for row in found.values()):
        return None
    flops = {impl: matmul_flops_per_chain_step if "matmul" in impl else flops_per_chain_step
             for impl in impls}  # fmt: skip
    gflops = {impl: row["throughput"] * flops[impl] / 1e9 for impl, row in found.items()}
    matmul_s = found["xla_matmul_only"]["median_s"]
    ceiling = {"gflops": gflops, "max_ratio_vs_torch": found["torch_eager"]["median_s"] / matmul_s}
    tuned = _find(rows, "ula_mlp", "torch_eager[malloc]", "10000 chains")
    if tuned is not None:
        ceiling["max_ratio_vs_torch_malloc"] = tuned["median_s"] / matmul_s
    return ceiling


def main(argv=None):
    args = _parse(argv)
    import jax

    jax.config.update("jax_num_cpu_devices", max(args.cpu_devices, 1))
    from benchmarks import harness, problems, sde_cases, torch_ref
    from experiments.common import markdown_table, write_json

    limit = (
        harness.FOREIGN_CORES_LIMIT if args.max_foreign_cores is None else args.max_foreign_cores
    )
    cfg = problems.sizes(args.quick)
    repeats = args.repeats or cfg["repeats"]
    only = {p for p in args.only.split(",") if p}
    mode = "quick" if args.quick else "full"
    start = time.perf_counter()
    monitor = harness.CpuMonitor()
    env = {
        "mode": mode,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "num_devices": len(jax.devices()),
        "cpu_count": len(monitor.cpus),
        "load_average_at_start": _load_average(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "repeats": repeats,
        "torch_threads_tried": problems.thread_counts(),
        "scorejax_xla_options": _scorejax_options(),
        **torch_ref.describe(),
    }
    load = env["load_average_at_start"]
    print(f"benchmarks ({mode}) on {env['device']} x{env['num_devices']}, "
          f"{env['cpu_count']} cores, load {load}")  # fmt: skip
    rows = []
    for case in problems.all_cases(args.quick, only):
        print(f"{case.problem} [{case.size}]", flush=True)
        case_rows = harness.measure(case, repeats)
        members = {m for names in case.best_of.values() for m in names}
        for row in case_rows:
            if "median_s" in row:
                ratios = " ".join(f"{k[5:]}={v:.2f}x" for k, v in row.items()
                                  if k.startswith("x_vs_") and k[5:] not in members)  # fmt: skip
                name = row["impl"] + (f" = {row['best_of']}" if "best_of" in row else "")
                print(f"  {name:<32} {row['throughput']:.3g} {row['unit']}  "
                      f"compile {row['compile_s']:.2f}s  {ratios}", flush=True)  # fmt: skip
        foreign = next((r["foreign_cores"] for r in case_rows if "foreign_cores" in r), math.nan)
        if foreign > limit:
            print(f"  WARNING: other processes used {foreign:.2f} cores during these rounds "
                  f"(limit {limit:g})", flush=True)  # fmt: skip
        rows += case_rows
    compile_sweeps = [
        ("annealed", "annealed compile time against levels", problems.annealed_compile_rows),
        ("pc_sampling", "PC sampler compile time against steps", sde_cases.pc_compile_rows),
    ]
    for problem, title, build in compile_sweeps:
        if not only or problem in only:
            print(title, flush=True)
            compile_rows = build(cfg)
            for row in compile_rows:
                print(f"  {row['size']}: {row['compile_s']:.2f}s, {row['hlo_ops']} HLO ops",
                      flush=True)  # fmt: skip
            rows += compile_rows
    cpu = monitor.read()
    env["seconds"] = round(time.perf_counter() - start, 1)
    env["load_average_at_end"] = _load_average()
    env["foreign_cores"] = round(cpu["foreign_cores"], 3)
    env["own_cores"] = round(cpu["own_cores"], 3)
    reliable, reason = run_reliability(env, rows, limit)
    targets = target_rows(rows, reliable)
    ceiling = mlp_ceiling(rows, problems.mlp_flops_per_chain_step(), 2 * 128 * 128)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    verdict = {"reliable": reliable, "unreliable_because": reason,
               "max_foreign_cores": limit}  # fmt: skip
    write_json(
        out / f"{mode}.json",
        {**verdict, "environment": env, "rows": rows, "targets": targets,
         "mlp_ceiling": ceiling},
    )  # fmt: skip
    (out / f"{mode}.md").write_text(
        report(mode, env, rows, targets, ceiling, reliable, reason, markdown_table)
    )
    print(markdown_table(targets, TARGET_COLUMNS))
    if ceiling is not None:
        print(f"ula_mlp ceiling vs torch from XLA's matmul rate: "
              f"{ceiling['max_ratio_vs_torch']:.2f}x")  # fmt: skip
    print(f"load average {env['load_average_at_start']} at start, "
          f"{env['load_average_at_end']} at end; other processes used "
          f"{env['foreign_cores']:.2f} cores on average over the run")  # fmt: skip
    if not reliable:
        print(f"WARNING: UNRELIABLE RUN: {reason}. The ratios may be off by large factors; "
              "rerun on an idle machine.")  # fmt: skip
    print(f"wrote {out / (mode + '.json')} and {out / (mode + '.md')} in {env['seconds']:.0f}s")
    return {**verdict, "environment": env, "rows": rows, "targets": targets}


def _load_average():
    """The 1, 5 and 15-minute load averages, to two decimals."""
    return tuple(round(x, 2) for x in os.getloadavg())


def _scorejax_options():
    """The XLA options scorejax's sampler and training loops compile with here (private)."""
    try:
        from scorejax import _compile

        return {"sampler": dict(_compile._options(False)),
                "training": dict(_compile._options(True))}  # fmt: skip
    except (ImportError, AttributeError, TypeError):
        return "unknown"


TABLE_COLUMNS = ["problem", "size", "impl", "unit", "throughput", "median_s", "spread",
                 "compile_s", "device_mb", "peak_rss_mb", "threads", "best_of",
                 "foreign_cores"]  # fmt: skip


def report(mode, env, rows, targets, ceiling, reliable, reason, markdown_table) -> str:
    """The markdown report: a warning first when the run is unreliable, then the rows, the
    targets, the MLP ceiling, annealed compile times and skips."""
    members = {r["impl"] for r in rows if "member_of" in r}
    ratio_cols = sorted({k for r in rows for k in r
                         if k.startswith("x_vs_") and k[5:] not in members})  # fmt: skip
    table = [r for r in rows if "median_s" in r]
    skipped = [r for r in rows if "skipped" in r]
    text = [f"# scorejax benchmarks ({mode})\n"]
    if not reliable:
        text += [f"**UNRELIABLE RUN**: {reason}. The ratios may be off by large factors; "
                 "rerun on an idle machine.\n"]  # fmt: skip
    text += [
        "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "\n",
        "Throughput = work / median time over interleaved rounds; spread = IQR / median; "
        "x_vs_<alt> = scorejax's throughput over <alt>'s (same run). Each torch row is the "
        "faster of its thread counts (threads; best_of names the row), whose own rows "
        "(<name>[<n>t]) are listed too; foreign_cores = cores other processes used during "
        "the case's timed rounds.\n",
        markdown_table(table, TABLE_COLUMNS + ratio_cols, fmt="{:.3g}"),
        "\n## Targets\n",
        markdown_table(targets, TARGET_COLUMNS),
    ]
    if ceiling is not None:
        g = ceiling["gflops"]
        text += [
            "\nCeiling on the ula_mlp target (1e4 chains, same interleaved rounds): the 128 x 128 "
            f"matmul alone runs at {g['xla_matmul_only']:.0f} GFLOP/s in XLA and "
            f"{g['torch_matmul_only']:.0f} in torch; the whole MLP ULA step at "
            f"{g['scorejax']:.0f} GFLOP/s in scorejax and {g['torch_eager']:.0f} in torch. A "
            f"step made of that matmul alone would be {ceiling['max_ratio_vs_torch']:.2f}x "
            "torch's whole step"
            + (f" ({ceiling['max_ratio_vs_torch_malloc']:.2f}x torch[malloc]'s)"
               if "max_ratio_vs_torch_malloc" in ceiling else "")
            + ": no sampler whose step contains that product can do better.\n"
        ]  # fmt: skip
    compile_rows = [r for r in rows if r["problem"] == "annealed_compile"]
    if compile_rows:
        text += [
            "\n## Annealed Langevin compile time\n",
            markdown_table(compile_rows, ["size", "compile_s", "hlo_ops"], fmt="{:.3g}"),
        ]
    if skipped:
        text += ["\n## Skipped\n", markdown_table(skipped, ["problem", "size", "impl", "skipped"])]
    return "\n".join(text)


if __name__ == "__main__":
    main(sys.argv[1:])
