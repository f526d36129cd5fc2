"""``python -m benchmarks [--quick]``: scorejax against the alternatives, interleaved and repeated.

Writes ``results/benchmarks/<quick|full>.json`` and ``.md``: one row per problem, size and
implementation with throughput, compile time, memory and the ratio of scorejax's
throughput over each alternative measured in the same run, then the issue's targets with
the measured ratio beside each.

On a CPU the process asks JAX for ``--cpu-devices`` host devices (default: the number of
cores) so that the ``scorejax[sharded]`` rows can split chains over them; the other rows
run on device 0 as they would by default. Each PyTorch reference runs in a worker process
of its own, as a user's script would (``harness.in_worker``); ``torch_eager[malloc]`` rows
run it with glibc's malloc told to keep freed memory, torch's best case.
"""

import argparse
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
    return parser.parse_args(argv)


# (problem, size prefix, alternative, target ratio, what the issue asks)
TARGETS = [
    ("ula_mlp", "10000 chains", "torch_eager", 2.0, "CPU: ULA, MLP score, 1e4 chains >= 2x torch"),
    ("ula_mixture", "10000 chains", "torch_eager", 1.5, "CPU: ULA, 2-D mixture >= 1.5x torch"),
    ("dsm_train", "batch 512", "torch_eager", 2.0, "CPU: DSM training, batch 512 >= 2x torch"),
    ("mala", "10000 chains", "blackjax", 1.0, "MALA >= blackjax"),
    ("hmc", "10000 chains", "blackjax", 1.0, "HMC >= blackjax"),
]  # fmt: skip


TARGET_COLUMNS = ["target", "impl", "against", "measured", "goal", "met"]


def _find(rows, problem, impl, size):
    """The first timed row of ``problem`` by ``impl`` whose size starts with ``size``, or None."""
    return next((r for r in rows if r["problem"] == problem and r["impl"] == impl
                 and r["size"].startswith(size) and "median_s" in r), None)  # fmt: skip


def target_rows(rows):
    """Each target's measured ratio, scorejax (and its sharded row) against the alternative.

    Where the alternative also ran with glibc's malloc tuned (``torch_eager[malloc]``, see
    ``harness.keep_freed_memory``), the ratio against that is reported too, in rows of their
    own: the targets are set against torch as a user's script runs it.
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
                out.append({"target": text, "impl": impl, "against": against,
                            "measured": round(ratio, 2), "goal": target,
                            "met": "yes" if ratio >= target else "no"})  # fmt: skip
    return out


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
    from benchmarks import harness, problems, torch_ref
    from experiments.common import markdown_table, write_json

    cfg = problems.sizes(args.quick)
    repeats = args.repeats or cfg["repeats"]
    only = {p for p in args.only.split(",") if p}
    mode = "quick" if args.quick else "full"
    start = time.perf_counter()
    env = {
        "mode": mode,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "num_devices": len(jax.devices()),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "repeats": repeats,
        **torch_ref.describe(),
    }
    load = env["load_average_at_start"]
    print(f"benchmarks ({mode}) on {env['device']} x{env['num_devices']}, load {load}")
    rows = []
    for case in problems.all_cases(args.quick):
        if only and case.problem not in only:
            continue
        print(f"{case.problem} [{case.size}]", flush=True)
        case_rows = harness.measure(case, repeats)
        for row in case_rows:
            if "median_s" in row:
                ratios = " ".join(
                    f"{k[5:]}={v:.2f}x" for k, v in row.items() if k.startswith("x_vs_")
                )
                print(f"  {row['impl']:<22} {row['throughput']:.3g} {row['unit']}  "
                      f"compile {row['compile_s']:.2f}s  {ratios}", flush=True)  # fmt: skip
        rows += case_rows
    if not only or "annealed" in only:
        print("annealed compile time against levels", flush=True)
        compile_rows = problems.annealed_compile_rows(cfg)
        for row in compile_rows:
            print(f"  {row['size']}: {row['compile_s']:.2f}s, {row['hlo_ops']} HLO ops", flush=True)
        rows += compile_rows
    env["seconds"] = time.perf_counter() - start
    env["load_average_at_end"] = os.getloadavg()
    targets = target_rows(rows)
    ceiling = mlp_ceiling(rows, problems.mlp_flops_per_chain_step(), 2 * 128 * 128)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / f"{mode}.json",
        {"environment": env, "rows": rows, "targets": targets, "mlp_ceiling": ceiling},
    )
    columns = ["problem", "size", "impl", "unit", "throughput", "median_s", "spread",
               "compile_s", "device_mb", "peak_rss_mb"]  # fmt: skip
    ratio_cols = sorted({k for r in rows for k in r if k.startswith("x_vs_")})
    table = [r for r in rows if "median_s" in r]
    skipped = [r for r in rows if "skipped" in r]
    text = [f"# scorejax benchmarks ({mode})\n",
            "Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "\n",
            "Throughput = work / median time over interleaved rounds; spread = IQR / median; "
            "x_vs_<alt> = scorejax's throughput over <alt>'s (same run).\n",
            markdown_table(table, columns + ratio_cols, fmt="{:.3g}"), "\n## Targets\n",
            markdown_table(targets, TARGET_COLUMNS)]  # fmt: skip
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
    (out / f"{mode}.md").write_text("\n".join(text))
    print(markdown_table(targets, TARGET_COLUMNS))
    if ceiling is not None:
        print(f"ula_mlp ceiling vs torch from XLA's matmul rate: "
              f"{ceiling['max_ratio_vs_torch']:.2f}x")  # fmt: skip
    print(f"wrote {out / (mode + '.json')} and {out / (mode + '.md')} in {env['seconds']:.0f}s")
    return {"environment": env, "rows": rows, "targets": targets}


if __name__ == "__main__":
    main(sys.argv[1:])
