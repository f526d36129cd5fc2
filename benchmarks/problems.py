"""The benchmark problems, each with scorejax and the alternatives a user would pick.

The scorejax rows call the public API as a user does (``sj.run_chains(key, sampler, x0,
n).state.x``, ``sj.fit(...)``) and block on the result, so they get what a user gets:
scorejax's own XLA options, its argument checks and its divergence warning (``warn=True``,
one small device-to-host copy a call); under a user's ``jax.jit`` (annealed) the user's
options rule, as in scorejax. Their compile time is the first call's excess over a steady
call (device_mb is not known for them). The alternatives written in JAX (``plain_jax``,
blackjax, ``xla_matmul_only``) are jitted and compiled ahead of time with XLA's defaults,
as their users would get them.

Rows beside ``scorejax`` (which uses JAX's default threefry keys, what a user gets without
choosing):

- ``scorejax[unrolled]``, ``scorejax[rbg]``, ``scorejax[unsafe_rbg]``: the same call with
  keys of ``scorejax.prng.THREEFRY_UNROLLED`` (the same numbers), JAX's ``"rbg"`` and
  ``"unsafe_rbg"`` (``KEY_IMPLS``); for normals and for ULA on the mixture and on the MLP at
  1e4 chains.
- ``scorejax[plain_jit]``: the same call with scorejax's private XLA options off during its
  calls only (``without_xla_options``), so the run measures whether they still pay; for ULA
  on the mixture and on the MLP at 1e4 chains and for DSM and NCSN training at batch 512.
- ``scorejax[sharded]``: ``run_chains_sharded`` with the chains split over the host devices.
- ``torch_eager``: the PyTorch reference, each in a worker process of its own, timed at one
  thread (``torch_eager[1t]``) and at all the cores this process may use
  (``torch_eager[<n>t]``) in the same interleaved rounds (``harness.BestOf``). The
  ``torch_eager`` row repeats the faster of the two; its ``threads`` column and ``best_of``
  name which, and the ratios and the targets are taken against it. ``torch_eager[malloc]``
  (where torch's tensors are megabytes: ula_mlp, dsm_train, ncsn_train) is the same with
  glibc's malloc keeping freed memory (``harness.keep_freed_memory``), also at its best
  thread count.

Problems (sizes in ``sizes(quick)``):
- normals: ULA's noise alone, ``run_chains`` of ULA with a zero score on 1e4 chains x 2 dims
  (one (2,) normal per chain a step, from the chain's own key), with each key
  implementation; ``plain_jax`` draws the same count as one (1e4, 2) array a step from
  ``fold_in(key, t)``, and torch.randn_like.
- ula_mixture: ULA on the 2-D eight-Gaussian mixture energy, score by autodiff, h = 0.01.
- ula_mlp: ULA on an MLP score 2-128-128-2 (SiLU), h = 0.01.
  At 1e4 chains it also times the MLP's dominant matmul alone (``*_matmul_only``): one
  (chains, 128) @ (128, 128) product per step, in XLA and in torch, the most either could do.
- double_well: ULA on E(x) = 2 sum (x^2 - 1)^2, 4,096 chains x 32 dims, h = 0.01 (a step
  that is one elementwise kernel); also the runner's unroll factors.
- annealed: annealed Langevin, NoiseConditionalMLP, 10 levels, ``jax.vmap`` over chains,
  jitted by the user, and unjitted as the experiments call it (``scorejax[vmap]``); compile
  time at 10 and 200 levels.
- mala / hmc: on the mixture, against blackjax (5 leapfrog steps for HMC).
- dsm_train / ncsn_train: ``fit`` (Adam, EMA) on fresh mixture batches.
- sm_cost: exact SM against SSM against DSM, MLP score in D dimensions.
- unet_train: NCSN training of the image U-Net, batch 128 of 28x28 (``image_cases``).
"""

import contextlib
import itertools
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scorejax as sj
from benchmarks import image_cases, sde_cases, torch_ref
from benchmarks.harness import BestOf, Case, Prepared, Skip, in_worker, usable_cpus

STEP_SIZE = 0.01

# The key implementations measured against JAX's default threefry (the plain scorejax row)
KEY_IMPLS = {
    "scorejax[unrolled]": sj.prng.THREEFRY_UNROLLED,
    "scorejax[rbg]": "rbg",
    "scorejax[unsafe_rbg]": "unsafe_rbg",
}


def sizes(quick: bool) -> dict:
    """Problem sizes: quick fits in minutes on 2 CPU cores; full is the whole grid.

    Full mode keeps each timed call near a few seconds on a 2-core CPU (fewer steps at many
    chains, fewer training steps for exact SM at large D).
    """
    if quick:
        return dict(
            chains=[10_000], mixture_steps=100, mlp_steps=50, dw_steps=100, annealed_chains=2_000,
            annealed_steps=5, mcmc_steps=100, batches=[512], train_steps=50, sm_dims=[2, 64],
            sm_steps=20, repeats=5, annealed_levels=[10, 200], chain_budget=2e6,
            likelihood_sizes=[(200, 2, False)], pc_steps=20, pc_compile_steps=[100, 1000],
            unet_batch=128, unet_steps=1, unet_images=512,
        )  # fmt: skip
    return dict(
        chains=[100, 1_000, 10_000, 100_000, 1_000_000], mixture_steps=1000, mlp_steps=1000,
        dw_steps=1000, annealed_chains=10_000, annealed_steps=20, mcmc_steps=300,
        batches=[512, 65_536], train_steps=200, sm_dims=[2, 16, 64, 256, 1024], sm_steps=100,
        repeats=5, annealed_levels=[10, 50, 200], chain_budget=5e6,
        likelihood_sizes=[(1000, 2, False), (64, 784, True)], pc_steps=200,
        pc_compile_steps=[100, 1000, 4000], unet_batch=128, unet_steps=5, unet_images=5000,
    )  # fmt: skip


def _scaled_steps(num_steps: int, num_chains: int, budget: float) -> int:
    """Fewer steps at many chains so one call stays near ``budget`` chain-steps (>= 20 steps)."""
    return int(max(20, min(num_steps, budget // num_chains)))


def thread_counts() -> list[int]:
    """The torch thread counts each reference runs at: one, and all usable cores."""
    return sorted({1, len(usable_cpus())})


def jax_prepared(fn, *args) -> Prepared:
    """Jit ``fn`` with XLA's default options, compile it ahead of time (timed) and read XLA's
    memory analysis: the alternatives written in JAX."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    device_bytes = float("nan")
    try:
        mem = compiled.memory_analysis()
        device_bytes = float(
            mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
        )
    except Exception:  # not every backend reports it
        pass
    return Prepared(lambda: jax.block_until_ready(compiled(*args)), compile_s, device_bytes)


@contextlib.contextmanager
def without_xla_options():
    """Inside, scorejax's runners and ``fit`` compile with plain ``jax.jit``.

    ``scorejax._compile.jit`` looks its options up at each call through the module's
    ``_options`` (a ``functools.cache``); this swaps that attribute for one returning () and
    puts the cached original back on exit, so only the calls made inside are affected.
    """
    compile_module = _compile_module()
    saved = compile_module._options
    compile_module._options = lambda training: ()
    try:
        yield
    finally:
        compile_module._options = saved


def _compile_module():
    """``scorejax._compile``, checked to still have the ``_options`` its ``jit`` looks up."""
    from scorejax import _compile

    if not callable(getattr(_compile, "_options", None)):
        raise Skip("scorejax._compile._options is gone: no XLA options to turn off")
    return _compile


def user_call(run, plain_jit: bool = False) -> Prepared:
    """``jax.block_until_ready(run())`` as the call, compiled on first use; with
    ``plain_jit``, each call runs ``without_xla_options``."""
    if not plain_jit:
        return Prepared(lambda: jax.block_until_ready(run()))
    _compile_module()  # skip the row now if there is nothing to patch

    def call():
        with without_xla_options():
            return jax.block_until_ready(run())

    return Prepared(call)


def _key(impl=None):
    return jax.random.key(0) if impl is None else jax.random.key(0, impl=impl)


def _mixture():
    return sj.data.eight_gaussians()


def _mixture_score():
    return partial(sj.score_from_energy(sj.GaussianMixture.energy), _mixture())


def _scorejax_chains(score_fn, num_chains, num_steps, dim=2, key_impl=None, unroll=None,
                     plain_jit=False):  # fmt: skip
    """``sj.run_chains`` of ULA as a user calls it, with keys of ``key_impl``."""

    def factory():
        sampler = sj.ula(score_fn, STEP_SIZE)
        key, x0 = _key(key_impl), jnp.zeros((num_chains, dim))
        run = lambda: sj.run_chains(key, sampler, x0, num_steps, unroll=unroll).state.x
        return user_call(run, plain_jit)

    return factory


def _scorejax_variants(score_fn, num_chains, num_steps, dim=2) -> dict:
    """The key implementations' rows and the plain_jit row of a ULA case."""
    impls = {name: _scorejax_chains(score_fn, num_chains, num_steps, dim, key_impl=impl)
             for name, impl in KEY_IMPLS.items()}  # fmt: skip
    impls["scorejax[plain_jit]"] = _scorejax_chains(score_fn, num_chains, num_steps, dim,
                                                    plain_jit=True)  # fmt: skip
    return impls


def _scorejax_sharded(score_fn, num_chains, num_steps, dim=2):
    def factory():
        from scorejax import sharding

        if len(jax.devices()) < 2:
            raise Skip("one device (set jax_num_cpu_devices or use several GPUs)")
        mesh = sharding.make_mesh()
        if num_chains % mesh.size:
            raise Skip(f"{num_chains} chains do not divide over {mesh.size} devices")
        sampler = sj.ula(score_fn, STEP_SIZE)
        key = _key()
        x0 = sharding.shard_leading(jnp.zeros((num_chains, dim)), mesh)
        run = lambda: sharding.run_chains_sharded(key, sampler, x0, num_steps, mesh=mesh).state.x
        return user_call(run)

    return factory


def _plain_jax(score_fn, num_chains, num_steps, dim=2):
    """A hand-written jitted lax.scan over all chains at once, as in JAX's tutorials."""

    def factory():
        def fn(key, x):
            def body(x, key_t):
                noise = jax.random.normal(key_t, x.shape)
                x = x + STEP_SIZE * jax.vmap(score_fn)(x) + jnp.sqrt(2 * STEP_SIZE) * noise
                return x, None

            return jax.lax.scan(body, x, jax.random.split(key, num_steps))[0]

        return jax_prepared(fn, _key(), jnp.zeros((num_chains, dim)))

    return factory


def _torch_at(num_threads, builder, args, kwargs, malloc_tuned):
    def factory():
        impl = in_worker(torch_ref.threaded, num_threads, builder, *args,
                         malloc_tuned=malloc_tuned, **kwargs)  # fmt: skip
        impl.notes["threads"] = num_threads
        return impl

    return factory


def _torch(builder, *args, malloc_tuned=False, **kwargs) -> BestOf:
    """A torch reference in a worker process of its own (``in_worker``), at each of
    ``thread_counts()`` (variants ``1t``, ``2t``, ...); with ``malloc_tuned``, glibc's malloc
    keeps freed memory there (``keep_freed_memory``)."""
    return BestOf({f"{n}t": _torch_at(n, builder, args, kwargs, malloc_tuned)
                   for n in thread_counts()})  # fmt: skip


def _torch_both(name, builder, *args, **kwargs) -> dict:
    """``name`` as a user's script runs it, and ``name[malloc]`` with glibc's malloc told to
    keep freed memory: torch's best case where its activations are megabytes. The targets
    are taken against the first."""
    return {name: _torch(builder, *args, **kwargs),
            f"{name}[malloc]": _torch(builder, *args, malloc_tuned=True, **kwargs)}  # fmt: skip


def _zero_score(x):
    return jnp.zeros_like(x)


def _normals(num_rows, num_steps):
    """A scan drawing ``jax.random.normal(fold_in(key, t), (num_rows, 2))`` at each step t."""

    def factory():
        def fn(key, x):
            def body(x, t):
                return x + jax.random.normal(jax.random.fold_in(key, t), x.shape), None

            return jax.lax.scan(body, x, jnp.arange(num_steps, dtype=jnp.uint32))[0]

        return jax_prepared(fn, _key(), jnp.zeros((num_rows, 2)))

    return factory


def normals_cases(cfg) -> list[Case]:
    n, steps = 10_000, cfg["mixture_steps"]
    impls = {
        "scorejax": _scorejax_chains(_zero_score, n, steps),
        **{name: _scorejax_chains(_zero_score, n, steps, key_impl=impl)
           for name, impl in KEY_IMPLS.items()},
        "plain_jax": _normals(n, steps),
        "torch_eager": _torch(torch_ref.normals, n, steps),
    }  # fmt: skip
    return [Case("normals", f"{n} x 2 normals x {steps} steps", "normals/s", 2 * n * steps,
                 impls)]  # fmt: skip


def _torch_mixture():
    mixture = _mixture()
    scales = np.asarray(mixture._scales())
    return torch_ref.Mixture(np.asarray(mixture.means), scales, np.asarray(mixture.weights))


def ula_mixture_cases(cfg) -> list[Case]:
    cases = []
    for n in cfg["chains"]:
        steps = _scaled_steps(cfg["mixture_steps"], n, 2 * cfg["chain_budget"])
        score = _mixture_score()
        impls = {
            "scorejax": _scorejax_chains(score, n, steps),
            "scorejax[sharded]": _scorejax_sharded(score, n, steps),
            **(_scorejax_variants(score, n, steps) if n == 10_000 else {}),
            "plain_jax": _plain_jax(score, n, steps),
            "torch_eager": _torch(torch_ref.ula_mixture, _torch_mixture(), n, steps, STEP_SIZE),
        }
        cases.append(Case("ula_mixture", f"{n} chains x {steps} steps", "chain-steps/s",
                          n * steps, impls))  # fmt: skip
    return cases


def _mlp_score(dtype=None):
    model = sj.nets.MLPScore(hidden=(128, 128), dtype=dtype)
    params = model.init(jax.random.key(0), jnp.zeros(2))
    return partial(sj.nets.apply_fn(model), params)


def _xla_matmul_only(num_chains, num_steps, width=128):
    """``num_steps`` chained products x <- x @ I, (chains, width) @ (width, width), jitted.

    The 128 x 128 layer holds 97% of the MLP score's flops, so a step made of this product
    alone is faster than any MLP ULA step: its rate over torch's MLP ULA rate, timed in the
    same interleaved rounds, bounds the ratio any JAX sampler could reach. The products are
    chained (no loop-invariant for XLA to hoist); w is the identity, so values stay O(1).
    """

    def factory():
        def fn(a, w):
            return jax.lax.fori_loop(0, num_steps, lambda _, acc: acc @ w, a)

        return jax_prepared(fn, jnp.ones((num_chains, width)), jnp.eye(width))

    return factory


def ula_mlp_cases(cfg, quick: bool) -> list[Case]:
    cases = []
    for n in cfg["chains"]:
        steps = _scaled_steps(cfg["mlp_steps"], n, cfg["chain_budget"])
        score = _mlp_score()
        impls = {
            "scorejax": _scorejax_chains(score, n, steps),
            "scorejax[sharded]": _scorejax_sharded(score, n, steps),
            **(_scorejax_variants(score, n, steps) if n == 10_000 else {}),
            "plain_jax": _plain_jax(score, n, steps),
            **_torch_both("torch_eager", torch_ref.ula_mlp, n, steps, STEP_SIZE),
        }
        if n == 10_000:  # the target's size: the ceiling that the big matmul puts on it
            impls["xla_matmul_only"] = _xla_matmul_only(n, steps)
            impls["torch_matmul_only"] = _torch(torch_ref.matmul, n, 128, steps)
        # bf16 compute pays on accelerators; most CPUs emulate it (slowly), so there it is
        # measured up to 1e4 chains only
        if not quick and (jax.default_backend() != "cpu" or n <= 10_000):
            impls["scorejax[bf16]"] = _scorejax_chains(_mlp_score(jnp.bfloat16), n, steps)
            impls["torch_eager[bf16]"] = _torch(torch_ref.ula_mlp, n, steps, STEP_SIZE,
                                                dtype="bfloat16")  # fmt: skip
        cases.append(Case("ula_mlp", f"{n} chains x {steps} steps", "chain-steps/s", n * steps,
                          impls))  # fmt: skip
    return cases


def mlp_flops_per_chain_step(hidden=(128, 128), dim=2) -> int:
    """Multiply-add flops of one MLP-score evaluation (2 per weight; biases, SiLU not counted)."""
    widths = (dim, *hidden, dim)
    return sum(2 * a * b for a, b in itertools.pairwise(widths))


def _double_well_energy(x):
    return 2.0 * jnp.sum((x**2 - 1.0) ** 2)


def double_well_cases(cfg) -> list[Case]:
    n, dim, steps = 4096, 32, cfg["dw_steps"]
    score = sj.score_from_energy(lambda params, x: _double_well_energy(x))
    score = partial(score, None)
    impls = {
        "scorejax": _scorejax_chains(score, n, steps, dim=dim),
        "scorejax[unroll=1]": _scorejax_chains(score, n, steps, dim=dim, unroll=1),
        "scorejax[unroll=4]": _scorejax_chains(score, n, steps, dim=dim, unroll=4),
        "scorejax[unroll=10]": _scorejax_chains(score, n, steps, dim=dim, unroll=10),
        "scorejax[sharded]": _scorejax_sharded(score, n, steps, dim=dim),
        "torch_eager": _torch(torch_ref.ula_double_well, n, steps, dim, STEP_SIZE),
    }
    return [Case("double_well", f"{n} chains x {dim} dims x {steps} steps", "chain-steps/s",
                 n * steps, impls)]  # fmt: skip


def _noise_conditional():
    model = sj.nets.NoiseConditionalMLP(hidden=(128, 128))
    params = model.init(jax.random.key(0), jnp.zeros(2), 1.0)
    return partial(sj.nets.apply_fn(model), params)


def annealed_cases(cfg) -> list[Case]:
    """``jax.vmap`` of ``sj.annealed_langevin`` over the chains (its docstring's advice for
    many chains), jitted by the user (``scorejax``) or called unjitted as the experiments do
    (``scorejax[vmap]``, which traces it again at each call)."""
    n, per_level = cfg["annealed_chains"], cfg["annealed_steps"]
    sigmas = sj.geometric_sigmas(3.0, 0.05, 10)

    def scorejax_factory(user_jit):
        def factory():
            score_fn = _noise_conditional()
            one = lambda key, x0: (
                sj.annealed_langevin(
                    key, score_fn, x0, sigmas, step_size=1e-4, num_steps_per_level=per_level
                ).state.x
            )
            many = lambda key, x0: jax.vmap(one)(jax.random.split(key, n), x0)
            many = jax.jit(many) if user_jit else many
            key, x0 = _key(), jnp.zeros((n, 2))
            return user_call(lambda: many(key, x0))

        return factory

    impls = {
        "scorejax": scorejax_factory(user_jit=True),
        "scorejax[vmap]": scorejax_factory(user_jit=False),
        "torch_eager": _torch(torch_ref.annealed, np.asarray(sigmas), n, per_level, 1e-4),
    }
    return [Case("annealed", f"{n} chains x 10 levels x {per_level} steps", "chain-steps/s",
                 n * 10 * per_level, impls)]  # fmt: skip


def annealed_compile_rows(cfg) -> list[dict]:
    """Compile time and program size of annealed Langevin against the number of levels."""
    rows = []
    for levels in cfg["annealed_levels"]:
        score_fn = _noise_conditional()
        sigmas = sj.geometric_sigmas(3.0, 0.05, levels)
        fn = lambda key, x0, sigmas: jax.vmap(
            lambda k, x: (
                sj.annealed_langevin(
                    k, score_fn, x, sigmas, step_size=1e-4, num_steps_per_level=10
                ).state.x
            )
        )(jax.random.split(key, 64), x0)
        times, ops = [], 0
        for _ in range(3):
            jax.clear_caches()
            start = time.perf_counter()
            lowered = jax.jit(fn).lower(jax.random.key(0), jnp.zeros((64, 2)), sigmas)
            lowered.compile()
            times.append(time.perf_counter() - start)
            ops = sum(1 for line in lowered.as_text().splitlines() if "stablehlo." in line)
        rows.append(
            {
                "problem": "annealed_compile",
                "size": f"{levels} levels",
                "impl": "scorejax",
                "unit": "s",
                "compile_s": float(np.median(times)),
                "hlo_ops": ops,
            }
        )
    return rows


def _mcmc_cases(cfg, which: str) -> list[Case]:
    n, steps = 10_000, cfg["mcmc_steps"]
    mixture = _mixture()
    energy_fn = partial(sj.GaussianMixture.energy, mixture)
    step_size, leapfrog = (0.05, 1) if which == "mala" else (0.1, 5)

    def scorejax_factory():
        if which == "mala":
            sampler = sj.mala(energy_fn, step_size)
        else:
            sampler = sj.hmc(energy_fn, step_size, leapfrog)
        key, x0 = _key(), jnp.zeros((n, 2))
        return user_call(lambda: sj.run_chains(key, sampler, x0, steps).state.x)

    def blackjax_factory():
        try:
            import blackjax
        except ImportError as err:
            raise Skip("blackjax is not installed (pip install 'scorejax[bench]')") from err
        logdensity = lambda x: -energy_fn(x)
        if which == "mala":
            algorithm = blackjax.mala(logdensity, step_size)
        else:
            algorithm = blackjax.hmc(logdensity, step_size, jnp.ones(2), leapfrog)

        def one_chain(key, x0):
            def body(state, key_t):
                return algorithm.step(key_t, state)[0], None

            state = algorithm.init(x0)
            return jax.lax.scan(body, state, jax.random.split(key, steps))[0].position

        fn = lambda key, x0: jax.vmap(one_chain)(jax.random.split(key, n), x0)
        return jax_prepared(fn, _key(), jnp.zeros((n, 2)))

    impls = {"scorejax": scorejax_factory, "blackjax": blackjax_factory}
    return [Case(which, f"{n} chains x {steps} steps", "chain-steps/s", n * steps, impls,
                 notes={"leapfrog": leapfrog})]  # fmt: skip


def _fit_factory(loss_fn, params, batch_fn, num_steps, plain_jit=False):
    """``sj.fit`` as a user calls it, all ``num_steps`` in one compiled call, continuing from
    the previous call's state (fit donates it)."""

    def factory():
        optimizer = optax.adam(1e-3)
        train_step = sj.make_train_step(loss_fn, optimizer)
        holder = [sj.init_train_state(params, optimizer)]
        key = jax.random.key(1)

        def run():
            holder[0], _ = sj.fit(train_step, holder[0], key, batch_fn, num_steps=num_steps,
                                  steps_per_call=num_steps, progress=False)  # fmt: skip
            return holder[0].params

        return user_call(run, plain_jit)

    return factory


def _train_impls(loss_fn, params, batch_fn, batch, steps, mixture_np, **torch_kwargs):
    """fit, fit with plain jit (at batch 512), and torch's training loop."""
    impls = {"scorejax": _fit_factory(loss_fn, params, batch_fn, steps)}
    if batch == 512:
        impls["scorejax[plain_jit]"] = _fit_factory(loss_fn, params, batch_fn, steps,
                                                    plain_jit=True)  # fmt: skip
    impls.update(_torch_both("torch_eager", torch_ref.train, mixture_np, batch, steps,
                             **torch_kwargs))  # fmt: skip
    return impls


def train_cases(cfg) -> list[Case]:
    mixture, mixture_np = _mixture(), _torch_mixture()
    cases = []
    for batch in cfg["batches"]:
        steps = cfg["train_steps"] if batch <= 4096 else max(20, cfg["train_steps"] // 10)
        batch_fn = lambda key, b=batch: mixture.sample(key, b)
        model = sj.nets.MLPScore(hidden=(128, 128))
        params = model.init(jax.random.key(0), jnp.zeros(2))
        loss = partial(sj.dsm_loss, score_fn=sj.nets.apply_fn(model), sigma=0.1)
        impls = _train_impls(loss, params, batch_fn, batch, steps, mixture_np, sigma=0.1)
        cases.append(Case("dsm_train", f"batch {batch} x {steps} steps", "steps/s", steps,
                          impls))  # fmt: skip
        sigmas = sj.geometric_sigmas(3.0, 0.05, 10)
        ncsn = sj.nets.NoiseConditionalMLP(hidden=(128, 128))
        ncsn_params = ncsn.init(jax.random.key(0), jnp.zeros(2), 1.0)
        ncsn_loss = partial(sj.ncsn_loss, score_fn=sj.nets.apply_fn(ncsn), sigmas=sigmas)
        impls = _train_impls(ncsn_loss, ncsn_params, batch_fn, batch, steps, mixture_np,
                             sigmas=np.asarray(sigmas))  # fmt: skip
        cases.append(Case("ncsn_train", f"batch {batch} x {steps} steps", "steps/s", steps,
                          impls))  # fmt: skip
    return cases


def exact_sm_loss(params, key, batch, *, score_fn):
    """Hyvärinen 2005, Eq. 4: E[tr(grad_x s(x)) + 1/2 ||s(x)||^2], trace by forward mode."""

    def one(x):
        s = score_fn(params, x)
        return jnp.trace(jax.jacfwd(lambda y: score_fn(params, y))(x)) + 0.5 * jnp.sum(s**2)

    return jnp.mean(jax.vmap(one)(batch))


def sliced_sm_loss(params, key, batch, *, score_fn):
    """Song et al. 2019, Eq. 7, one Gaussian projection: v^T grad(v^T s) v + 1/2 (v^T s)^2."""
    v = jax.random.normal(key, batch.shape)

    def one(x, v):
        s, jv = jax.jvp(lambda y: score_fn(params, y), (x,), (v,))
        return jnp.dot(v, jv) + 0.5 * jnp.dot(v, s) ** 2

    return jnp.mean(jax.vmap(one)(batch, v))


def sm_cost_cases(cfg) -> list[Case]:
    cases = []
    for dim in cfg["sm_dims"]:
        # exact SM costs D backward passes a step: fewer steps at large D keep a call short
        steps = max(5, min(cfg["sm_steps"], cfg["sm_steps"] * 64 // dim))
        model = sj.nets.MLPScore(hidden=(128, 128))
        params = model.init(jax.random.key(0), jnp.zeros(dim))
        score_fn = sj.nets.apply_fn(model)
        batch_fn = lambda key, d=dim: jax.random.normal(key, (128, d))
        losses = {
            "dsm": partial(sj.dsm_loss, score_fn=score_fn, sigma=0.1),
            "ssm": partial(sliced_sm_loss, score_fn=score_fn),
            "exact_sm": partial(exact_sm_loss, score_fn=score_fn),
        }
        impls = {name: _fit_factory(fn, params, batch_fn, steps)
                 for name, fn in losses.items()}  # fmt: skip
        cases.append(Case("sm_cost", f"D={dim}, batch 128 x {steps} steps", "steps/s", steps,
                          impls, baseline="dsm"))  # fmt: skip
    return cases


# problem name -> its cases, built only when the problem is run
CASES = {
    "normals": lambda cfg, quick: normals_cases(cfg),
    "ula_mixture": lambda cfg, quick: ula_mixture_cases(cfg),
    "ula_mlp": ula_mlp_cases,
    "double_well": lambda cfg, quick: double_well_cases(cfg),
    "annealed": lambda cfg, quick: annealed_cases(cfg),
    "mala": lambda cfg, quick: _mcmc_cases(cfg, "mala"),
    "hmc": lambda cfg, quick: _mcmc_cases(cfg, "hmc"),
    "train": lambda cfg, quick: train_cases(cfg),
    "sm_cost": lambda cfg, quick: sm_cost_cases(cfg),
    "sde_likelihood": lambda cfg, quick: sde_cases.likelihood_cases(cfg),
    "pc_sampling": lambda cfg, quick: sde_cases.pc_cases(cfg, _torch),
    "unet_train": lambda cfg, quick: image_cases.unet_cases(cfg, _fit_factory, _torch, quick),
}


def all_cases(quick: bool, only=()) -> list[Case]:
    """Every case, or those of the problems named in ``only`` (built lazily, in order)."""
    cfg = sizes(quick)
    cases = []
    for group, build in CASES.items():
        wanted = {"dsm_train", "ncsn_train"} if group == "train" else {group}
        if not only or wanted & set(only):
            cases += [c for c in build(cfg, quick) if not only or c.problem in only]
    return cases
