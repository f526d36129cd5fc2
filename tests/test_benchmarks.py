"""The benchmark harness's logic: ratios, best thread count, targets, unreliable runs.

Only pure logic here (sleeps stand in for workloads), so it runs with the default tests;
what needs the operating system (worker processes, malloc, memory, /proc, the command
line) is in benchmarks/test_harness.py (``make bench-test``).
"""

import math
import time

import pytest

from benchmarks import harness
from benchmarks.__main__ import TARGET_COLUMNS, report, run_reliability, target_rows


def _sleeper(seconds, **notes):
    def factory():
        impl = harness.Prepared(lambda: time.sleep(seconds), compile_s=0.0, peak_rss=lambda: 0.0)
        impl.notes.update(notes)
        return impl

    return factory


def _missing():
    raise harness.Skip("package missing")


def _case(problem="ula_mlp"):
    impls = {
        "scorejax": _sleeper(0.01),
        # torch at two thread counts: the second is faster here, so it is the one compared
        "torch_eager": harness.BestOf({"1t": _sleeper(0.06, threads=1),
                                       "2t": _sleeper(0.03, threads=2)}),
        "torch_eager[malloc]": harness.BestOf({"1t": _sleeper(0.02, threads=1),
                                               "2t": _missing}),
        "blackjax": _missing,
    }  # fmt: skip
    return harness.Case(problem, "10000 chains x 1 steps", "chain-steps/s", 100.0, impls)


def _quiet(*args):
    pass


def test_best_of_expands_into_named_variants():
    case = _case()
    assert list(case.impls) == ["scorejax", "torch_eager[1t]", "torch_eager[2t]",
                                "torch_eager[malloc,1t]", "torch_eager[malloc,2t]",
                                "blackjax"]  # fmt: skip
    assert case.best_of == {"torch_eager": ["torch_eager[1t]", "torch_eager[2t]"],
                            "torch_eager[malloc]": ["torch_eager[malloc,1t]",
                                                    "torch_eager[malloc,2t]"]}  # fmt: skip
    assert harness.variant_name("torch_eager[bf16]", "4t") == "torch_eager[bf16,4t]"


def test_ratios_are_taken_against_the_fastest_thread_count_and_name_it():
    rows = harness.measure(_case(), repeats=3, log=_quiet)
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["blackjax"]["skipped"] == "package missing"
    assert by_impl["torch_eager[malloc,2t]"]["skipped"] == "package missing"
    one, two = by_impl["torch_eager[1t]"], by_impl["torch_eager[2t]"]
    assert (one["threads"], two["threads"]) == (1, 2)
    assert one["member_of"] == two["member_of"] == "torch_eager"
    best = by_impl["torch_eager"]
    # sleep is a lower bound on each time; a loaded machine only adds to all of them
    assert two["median_s"] < one["median_s"]
    assert best["best_of"] == "torch_eager[2t]" and best["threads"] == 2
    assert best["median_s"] == two["median_s"] and "member_of" not in best
    # a variant that could not run leaves the other as the best
    assert by_impl["torch_eager[malloc]"]["best_of"] == "torch_eager[malloc,1t]"
    mine = by_impl["scorejax"]
    assert 0.01 <= mine["median_s"] < best["median_s"]
    assert mine["x_vs_torch_eager"] == best["median_s"] / mine["median_s"]
    assert mine["x_vs_torch_eager[1t]"] == one["median_s"] / mine["median_s"]
    assert mine["throughput"] == 100.0 / mine["median_s"]
    assert all("foreign_cores" in r for r in rows if "median_s" in r)

    targets = target_rows(rows)
    mlp = [t for t in targets if t["target"].startswith("CPU: ULA, MLP")]
    # against torch as a user runs it (at its best thread count), then with malloc tuned
    assert [(t["against"], t["threads"]) for t in mlp] == [
        ("torch_eager", 2),
        ("torch_eager[malloc]", 1),
    ]
    assert mlp[0]["measured"] == round(mine["x_vs_torch_eager"], 2)
    assert mlp[0]["met"] == ("yes" if mine["x_vs_torch_eager"] >= 2.0 else "no")
    assert mlp[1]["measured"] == round(mine["x_vs_torch_eager[malloc]"], 2)
    others = [t for t in targets if not t["target"].startswith("CPU: ULA, MLP")]
    assert all(t["measured"] == "not run" for t in others)


def _timed_rows(foreign):
    row = lambda impl, t, **extra: {"problem": "dsm_train", "size": "batch 512 x 50 steps",
                                    "impl": impl, "unit": "steps/s", "median_s": t,
                                    "throughput": 50 / t, "foreign_cores": foreign,
                                    **extra}  # fmt: skip
    return [row("scorejax", 1.0), row("torch_eager", 3.0, threads=1, best_of="torch_eager[1t]")]


def test_reliability_rule():
    limit = harness.FOREIGN_CORES_LIMIT
    # measured foreign load decides, whatever the load average says
    assert harness.reliability(limit + 0.01, 0.0, 2)[0] is False
    assert harness.reliability(limit, 5.0, 2) == (True, "")
    ok, why = harness.reliability(0.9, 0.0, 2)
    assert not ok and "0.90 cores" in why
    # where it cannot be measured: the load average at the start against all cores but half
    assert harness.reliability(math.nan, 1.6, 2)[0] is False
    assert harness.reliability(math.nan, 1.4, 2)[0] is True
    assert harness.reliability(0.5, 0.0, 2, limit=1.0)[0] is True


def test_a_disturbed_run_is_marked_unreliable_everywhere():
    env = {"foreign_cores": 0.05, "load_average_at_start": (0.1, 0.1, 0.1), "cpu_count": 2}
    quiet = _timed_rows(foreign=0.1)
    assert run_reliability(env, quiet, 0.25) == (True, "")
    # one case's rounds disturbed is enough, though the run's average is low
    disturbed = _timed_rows(foreign=0.8)
    reliable, reason = run_reliability(env, disturbed, 0.25)
    assert not reliable and "0.80 cores" in reason
    assert not run_reliability({**env, "foreign_cores": 0.3}, quiet, 0.25)[0]

    targets = target_rows(disturbed, reliable)
    dsm = next(t for t in targets if t["target"].startswith("CPU: DSM"))
    assert dsm["measured"] == 3.0 and dsm["met"] == "unreliable" and dsm["threads"] == 1
    assert target_rows(disturbed, True)[2]["met"] == "yes"

    def table(rows, columns, fmt="{}"):
        return "|".join(columns) + "\n"

    text = report("quick", env, disturbed, targets, None, reliable, reason, table)
    assert text.splitlines()[2].startswith("**UNRELIABLE RUN**: other processes used 0.80")
    assert "|".join(TARGET_COLUMNS) in text
    clean = report("quick", env, quiet, target_rows(quiet), None, True, "", table)
    assert "UNRELIABLE" not in clean


def test_busy_seconds_reads_the_given_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 30 900 9 0 3 6 0 0\n"
        "cpu0 100 0 10 400 4 0 1 2 0 0\n"
        "cpu1 200 0 20 500 5 0 2 4 0 0\n"
        "intr 1 2 3\n"
    )
    ticks = harness.os.sysconf("SC_CLK_TCK")
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy
    assert harness.busy_seconds([1], str(stat)) == pytest.approx(226 / ticks)
    assert harness.busy_seconds([0, 1], str(stat)) == pytest.approx(339 / ticks)
    assert harness.busy_seconds([0], str(tmp_path / "missing")) is None


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


def test_cases_define_the_key_and_options_rows():
    from benchmarks import problems

    only = {"normals", "ula_mixture", "ula_mlp", "dsm_train", "ncsn_train"}
    cases = {(c.problem, c.size.split(" x ")[0]): c
             for c in problems.all_cases(quick=True, only=only)}  # fmt: skip
    keys = {"scorejax", "scorejax[unrolled]", "scorejax[rbg]", "scorejax[unsafe_rbg]"}
    threads = problems.thread_counts()
    assert threads == sorted({1, len(harness.usable_cpus())})
    torch_rows = {f"torch_eager[{n}t]" for n in threads}
    normals = cases[("normals", "10000")]
    assert keys | {"plain_jax"} | torch_rows <= set(normals.impls)
    assert normals.best_of["torch_eager"] == sorted(torch_rows)
    for problem in ("ula_mixture", "ula_mlp"):
        impls = set(cases[(problem, "10000 chains")].impls)
        assert keys | {"scorejax[plain_jit]", "scorejax[sharded]"} | torch_rows <= impls
    mlp = cases[("ula_mlp", "10000 chains")]
    assert set(mlp.best_of) == {"torch_eager", "torch_eager[malloc]", "torch_matmul_only"}
    for problem in ("dsm_train", "ncsn_train"):
        case = cases[(problem, "batch 512")]
        assert {"scorejax", "scorejax[plain_jit]"} | torch_rows <= set(case.impls)
        assert set(case.best_of) == {"torch_eager", "torch_eager[malloc]"}
    assert not any("ynn_dots" in name for c in cases.values() for name in c.impls)
    assert problems.KEY_IMPLS["scorejax[unrolled]"] is problems.sj.prng.THREEFRY_UNROLLED
    assert {c.problem for c in cases.values()} == only


def test_plain_jit_rows_turn_off_only_their_own_calls_options(monkeypatch):
    import jax.numpy as jnp

    from benchmarks.problems import without_xla_options
    from scorejax import _compile

    asked = []  # the options scorejax's jit looks up, at each call, through the module
    monkeypatch.setattr(_compile, "_options", lambda training: asked.append(training) or ())
    recorder = _compile._options
    loop = _compile.jit(lambda x: x + 1, training=False)
    loop(jnp.ones(3))
    assert asked == [False]
    with without_xla_options():
        assert _compile._options(True) == _compile._options(False) == ()
        loop(jnp.ones(3))
    assert asked == [False]  # inside, the replacement answered
    assert _compile._options is recorder  # put back on exit
    loop(jnp.ones(3))
    assert asked == [False, False]
