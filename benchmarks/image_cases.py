"""Benchmark problems of the image score models (``nets.UNet``):

- unet_train: NCSN training of the U-Net on 28x28 single-channel images (``nets.CPU_WIDTHS``,
  attention at 7x7), batch 128: per step one sigma of a 10-level geometric ladder per image,
  ``losses.ncsn_loss``, one Adam step (learning rate 1e-3) and the EMA update.
  ``torch_eager`` is the same U-Net in PyTorch (``torch_ref.UNet``, the same layers and
  parameter count) in an eager training loop (``torch_ref.unet_train``). ``scorejax`` is
  ``jax.jit(train_step)`` called once per step (the loop a user writes around
  ``make_train_step``); ``sj.fit``'s compiled scan runs as ``scorejax[fit]`` in full mode
  only, to keep the quick suite short (with ``nets._conv`` the two take about the same time
  a step: docs/performance.md, "Image score models"). The images are uniform noise in [0, 1]
  with a fixed seed: throughput does not depend on the pixels, and no data set is loaded.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

import scorejax as sj
from benchmarks import torch_ref
from benchmarks.harness import Case, Prepared
from scorejax import nets

SIGMAS = (1.0, 0.01, 10)  # sigma_max, sigma_min, levels


def _images(num_images: int, size: int) -> np.ndarray:
    """(N, size, size, 1) uniform pixels in [0, 1]."""
    rng = np.random.default_rng(0)
    return rng.uniform(size=(num_images, size, size, 1)).astype(np.float32)


def _jitted_steps(loss_fn, params, batch_fn, num_steps):
    """``num_steps`` calls of ``jax.jit(make_train_step(loss_fn, adam(1e-3)))`` (EMA 0.999),
    each on a fresh batch ``batch_fn(key)``, continuing from the previous call's state."""

    def factory():
        optimizer = optax.adam(1e-3)
        train_step = jax.jit(sj.make_train_step(loss_fn, optimizer), donate_argnums=0)
        next_batch = jax.jit(batch_fn)
        holder = [sj.init_train_state(params, optimizer), 0]

        def call():
            state, step = holder
            for _ in range(num_steps):
                key = jax.random.fold_in(jax.random.key(1), step)
                state, _ = train_step(state, key, next_batch(key))
                step += 1
            holder[:] = [state, step]
            return jax.block_until_ready(state.params)

        return Prepared(call)

    return factory


def unet_cases(cfg, fit_factory, torch_factory, quick: bool = True) -> list[Case]:
    """``fit_factory(loss_fn, params, batch_fn, steps)`` and ``torch_factory(builder, *args)``
    are ``problems._fit_factory`` and ``problems._torch`` (passed in: problems imports this)."""
    batch, steps, size = cfg["unet_batch"], cfg["unet_steps"], 28
    images = _images(cfg["unet_images"], size)
    sigmas = sj.geometric_sigmas(*SIGMAS)
    model = nets.UNet(widths=nets.CPU_WIDTHS)
    params = model.init(jax.random.key(0), jnp.zeros((size, size, 1)), jnp.ones(()))
    loss_fn = partial(sj.ncsn_loss, score_fn=nets.apply_fn(model), sigmas=sigmas)
    batch_fn = sj.minibatches(images, batch)
    torch_args = (images.transpose(0, 3, 1, 2), batch, steps, np.asarray(sigmas))
    impls = {
        "scorejax": _jitted_steps(loss_fn, params, batch_fn, steps),
        "torch_eager": torch_factory(torch_ref.unet_train, *torch_args, nets.CPU_WIDTHS),
    }
    if not quick:
        impls["scorejax[fit]"] = fit_factory(loss_fn, params, batch_fn, steps)
    return [Case("unet_train", f"batch {batch}, {size}x{size} x {steps} steps", "images/s",
                 batch * steps, impls,
                 notes={"parameters": nets.parameter_count(params)})]  # fmt: skip
