"""PyTorch eager references, written as a user would from the PyTorch tutorials.

Each function builds the same problem as its scorejax counterpart (same target, network
shape, step size, batch) and returns a closure that runs the whole workload once. Nothing
here is compiled (no torch.compile): the eager loop is what the comparison is against.
The benchmark builds and runs each one in a worker process of its own (``harness.in_worker``),
so arguments are plain numpy (a ``Mixture``) and this module does not import JAX.
"""

import math
from typing import NamedTuple

import numpy as np

from benchmarks.harness import Skip

try:
    import torch
    from torch import nn
except ImportError:  # the benchmark-only extra
    torch = None


def _require():
    if torch is None:
        raise Skip("torch is not installed (pip install 'scorejax[bench]' or torch==2.13.0)")


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Mixture(NamedTuple):
    """A diagonal Gaussian mixture as numpy arrays: means and scales (K, D), weights (K,)."""

    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray


def _mixture_energy(mixture):
    dev = _device()
    means = torch.tensor(mixture.means, device=dev)
    scales = torch.tensor(mixture.scales, device=dev)
    log_weights = torch.log(torch.tensor(mixture.weights, device=dev))
    log_norm = -0.5 * (math.log(2 * math.pi) + 2 * torch.log(scales)).sum(-1)

    def energy(x):  # (N, D) -> (N,)
        z = (x[:, None, :] - means) / scales
        return -torch.logsumexp(log_weights + log_norm - 0.5 * (z**2).sum(-1), dim=-1)

    return energy


def ula_mixture(mixture, num_chains, num_steps, step_size):
    """ULA on the mixture energy, score by autograd, one step per Python iteration."""
    _require()
    energy = _mixture_energy(mixture)
    noise_scale = math.sqrt(2 * step_size)

    def call():
        x = torch.zeros(num_chains, mixture.means.shape[-1], device=_device())
        for _ in range(num_steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            with torch.no_grad():
                x = x - step_size * grad + noise_scale * torch.randn_like(x)
        _sync()
        return x

    return call


def normals(num_rows, num_steps):
    """``num_steps`` draws of (num_rows, 2) standard normals, added up as ULA's noise is."""
    _require()

    @torch.no_grad()
    def call():
        x = torch.zeros(num_rows, 2, device=_device())
        for _ in range(num_steps):
            x = x + torch.randn_like(x)
        _sync()
        return x

    return call


def ula_double_well(num_chains, num_steps, dim, step_size):
    """ULA on E(x) = 2 sum (x^2 - 1)^2, score by autograd."""
    _require()
    noise_scale = math.sqrt(2 * step_size)

    def call():
        x = torch.zeros(num_chains, dim, device=_device())
        for _ in range(num_steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad((2.0 * ((x**2 - 1.0) ** 2)).sum(), x)
            with torch.no_grad():
                x = x - step_size * grad + noise_scale * torch.randn_like(x)
        _sync()
        return x

    return call


def mlp(dim_in, dim_out, hidden=(128, 128)):
    layers, width = [], dim_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.SiLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, dim_out))


def ula_mlp(num_chains, num_steps, step_size, dim=2, dtype=None):
    """ULA with an MLP score network (2-128-128-2, SiLU) under torch.no_grad."""
    _require()
    net = mlp(dim, dim).to(_device())
    noise_scale = math.sqrt(2 * step_size)
    autocast = dtype == "bfloat16"

    @torch.no_grad()
    def call():
        x = torch.zeros(num_chains, dim, device=_device())
        with torch.autocast(_device(), dtype=torch.bfloat16, enabled=autocast):
            for _ in range(num_steps):
                x = x + step_size * net(x).float() + noise_scale * torch.randn_like(x)
        _sync()
        return x

    return call


def matmul(rows, width, reps):
    """``reps`` chained products x <- x @ w, (rows, width) @ (width, width): the MLP's big layer.

    w is the identity, so values stay O(1) (no denormals), which neither library can know.
    """
    _require()
    a = torch.ones(rows, width, device=_device())
    w = torch.eye(width, device=_device())

    @torch.no_grad()
    def call():
        x = a
        for _ in range(reps):
            x = x @ w
        _sync()
        return x

    return call


def _fourier(sigma, num_frequencies=8):
    angles = torch.log(sigma)[:, None] * (2.0 ** torch.arange(num_frequencies, device=sigma.device))
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class NoiseConditional(nn.Module if torch is not None else object):
    """s(x, sigma) = MLP([x, fourier(log sigma)]) / sigma (NCSNv2's 1/sigma scaling)."""

    def __init__(self, dim):
        super().__init__()
        self.net = mlp(dim + 16, dim)

    def forward(self, x, sigma):
        return self.net(torch.cat([x, _fourier(sigma)], dim=-1)) / sigma[:, None]


def annealed(sigmas, num_chains, num_steps_per_level, step_size, dim=2):
    """Annealed Langevin (Song & Ermon 2019, Alg. 1) as nested Python loops."""
    _require()
    net = NoiseConditional(dim).to(_device())
    sigmas = [float(s) for s in sigmas]

    @torch.no_grad()
    def call():
        x = torch.zeros(num_chains, dim, device=_device())
        for sigma in sigmas:
            h = step_size * sigma**2 / sigmas[-1] ** 2
            s = torch.full((num_chains,), sigma, device=_device())
            for _ in range(num_steps_per_level):
                x = x + h * net(x, s) + math.sqrt(2 * h) * torch.randn_like(x)
        _sync()
        return x

    return call


def pc_vp(num_chains, num_steps, snr, hidden=(128, 128), num_features=16, scale=16.0):
    """Predictor-corrector sampling of the VP SDE (beta 0.1 to 20, eps 1e-3) with a
    time-conditional MLP as ``nets.TimeConditionalMLP`` builds it: Gaussian Fourier features
    of t, [x, sin, cos] -> MLP -> noise prediction, score = -output / std(t). Each step is
    a reverse-diffusion predictor from t to t - dt and one Langevin corrector step at
    t - dt with the signal-to-noise rule (per-chain norms), as ``samplers.pc_sampler``."""
    _require()
    dev = _device()
    beta_min, beta_max, eps = 0.1, 20.0, 1e-3
    dt = (1.0 - eps) / num_steps
    w = scale * torch.randn(num_features, device=dev)
    net = mlp(2 + 2 * num_features, 2, hidden).to(dev)

    def score(x, t):
        angles = 2 * math.pi * t * w
        emb = torch.cat([torch.sin(angles), torch.cos(angles)]).expand(x.shape[0], -1)
        log_mean = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
        std = math.sqrt(-math.expm1(2 * log_mean))
        return -net(torch.cat([x, emb], dim=1)) / std

    @torch.no_grad()
    def call():
        x = torch.randn(num_chains, 2, device=dev)
        for k in range(num_steps):
            t = 1.0 - k * dt
            b = (beta_min + t * (beta_max - beta_min)) * dt
            noise = torch.randn_like(x)
            x = x - (math.sqrt(1 - b) - 1) * x + b * score(x, t) + math.sqrt(b) * noise
            t = t - dt
            s, z = score(x, t), torch.randn_like(x)
            alpha = 1 - (beta_min + t * (beta_max - beta_min)) * dt
            ratio = z.norm(dim=1, keepdim=True) / s.norm(dim=1, keepdim=True)
            step = 2 * alpha * (snr * ratio) ** 2
            x = x + step * s + torch.sqrt(2 * step) * z
        _sync()
        return x

    return call


def _sample_mixture(mixture):
    dev = _device()
    means = torch.tensor(mixture.means, device=dev)
    scales = torch.tensor(mixture.scales, device=dev)
    weights = torch.tensor(mixture.weights, device=dev)

    def sample(n):
        k = torch.multinomial(weights, n, replacement=True)
        return means[k] + scales[k] * torch.randn(n, means.shape[-1], device=dev)

    return sample


def train(mixture, batch_size, num_steps, sigma=None, sigmas=None, ema_decay=0.999):
    """DSM (one ``sigma``) or NCSN (a ``sigmas`` ladder) training: Adam, EMA, fresh batches."""
    _require()
    dim = mixture.means.shape[-1]
    dev = _device()
    net = (mlp(dim, dim) if sigmas is None else NoiseConditional(dim)).to(dev)
    ema = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    sample = _sample_mixture(mixture)
    ladder = None if sigmas is None else torch.tensor(np.asarray(sigmas), device=dev)

    def loss_fn(x):
        z = torch.randn_like(x)
        if ladder is None:
            return 0.5 * ((net(x + sigma * z) + z / sigma) ** 2).sum(-1).mean()
        s = ladder[torch.randint(0, len(ladder), (x.shape[0],), device=dev)]
        return 0.5 * ((s[:, None] * net(x + s[:, None] * z, s) + z) ** 2).sum(-1).mean()

    def call():
        for _ in range(num_steps):
            loss = loss_fn(sample(batch_size))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                params = list(net.parameters())
                torch._foreach_mul_(ema, ema_decay)
                torch._foreach_add_(ema, params, alpha=1 - ema_decay)
        _sync()
        return loss.item()

    return call


def threaded(num_threads, builder, *args, **kwargs):
    """``builder(*args, **kwargs)`` with torch's intra-op thread pool set to ``num_threads``
    first (``torch.set_num_threads``), for a worker process of its own."""
    _require()
    torch.set_num_threads(num_threads)
    if torch.get_num_threads() != num_threads:
        raise Skip(f"torch runs {torch.get_num_threads()} threads, not {num_threads}")
    return builder(*args, **kwargs)


def describe() -> dict:
    """Version and default thread count, for the report."""
    if torch is None:
        return {"torch": None}
    return {"torch": torch.__version__, "torch_default_threads": torch.get_num_threads()}


def _groups(width, max_groups=32, min_group_size=4):
    """GroupNorm's group count, as ``nets.unet.num_groups``."""
    limit = max(1, min(max_groups, width // min_group_size))
    return max(g for g in range(1, limit + 1) if width % g == 0)


class _ResidualBlock(nn.Module if torch is not None else object):
    """(shortcut(x) + conv(silu(GN(conv(silu(GN(x))) + Dense(silu(emb)))))) / sqrt(2)."""

    def __init__(self, width_in, width, emb_dim):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(width_in), width_in)
        self.conv1 = nn.Conv2d(width_in, width, 3, padding=1)
        self.dense = nn.Linear(emb_dim, width)
        self.norm2 = nn.GroupNorm(_groups(width), width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.shortcut = nn.Conv2d(width_in, width, 1) if width_in != width else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.dense(nn.functional.silu(emb))[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return (self.shortcut(x) + h) / math.sqrt(2.0)


class _SelfAttention(nn.Module if torch is not None else object):
    """Single-head self-attention over the pixels, as ``nets.unet.SelfAttention``."""

    def __init__(self, width):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(width), width)
        self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, x):
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        logits = self.q(h) @ self.k(h).transpose(1, 2) / math.sqrt(x.shape[1])
        weights = torch.softmax(logits, dim=-1)
        h = self.out(weights @ self.v(h)).transpose(1, 2).reshape(x.shape)
        return (x + h) / math.sqrt(2.0)


class UNet(nn.Module if torch is not None else object):
    """``nets.UNet`` in PyTorch (NCHW): the same layers, widths and parameter count, with
    ``sde=None`` (Gaussian Fourier features of log sigma) and the output divided by sigma."""

    def __init__(self, widths=(32, 64, 64), blocks_per_level=1, attention=True, channels=1,
                 num_features=16, scale=16.0):  # fmt: skip
        super().__init__()
        emb_dim = 4 * widths[0]
        # the Fourier frequencies count as parameters in scorejax's tree: here too, untrained
        self.w = nn.Parameter(scale * torch.randn(num_features), requires_grad=False)
        self.embed = nn.Sequential(nn.Linear(2 * num_features, emb_dim), nn.SiLU(),
                                   nn.Linear(emb_dim, emb_dim))  # fmt: skip
        self.conv_in = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.down, width = nn.ModuleList(), widths[0]
        for w in widths:
            blocks = []
            for _ in range(blocks_per_level):
                blocks.append(_ResidualBlock(width, w, emb_dim))
                width = w
            self.down.append(nn.ModuleList(blocks))
        self.attention = _SelfAttention(width) if attention else None
        self.upsample, self.up = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(widths) - 1)):
            self.upsample.append(nn.Conv2d(width, width, 3, padding=1))
            blocks, width = [], width + widths[level]
            for _ in range(blocks_per_level):
                blocks.append(_ResidualBlock(width, widths[level], emb_dim))
                width = widths[level]
            self.up.append(nn.ModuleList(blocks))
        self.norm_out = nn.GroupNorm(_groups(width), width)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x, sigma):
        angles = 2 * math.pi * torch.log(sigma)[:, None] * self.w
        emb = self.embed(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))
        h, skips = self.conv_in(x), []
        for level, blocks in enumerate(self.down):
            if level > 0:
                h = nn.functional.avg_pool2d(h, 2)
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
        if self.attention is not None:
            h = self.attention(h)
        for upsample, blocks, skip in zip(self.upsample, self.up, reversed(skips[:-1]),
                                          strict=True):  # fmt: skip
            h = upsample(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        out = self.conv_out(nn.functional.silu(self.norm_out(h)))
        return out / sigma[:, None, None, None]


def unet_parameter_count(widths, blocks_per_level=1, attention=True, channels=1) -> int:
    """The number of scalars in ``UNet``'s parameters (for the equal-size check)."""
    _require()
    net = UNet(widths, blocks_per_level, attention, channels)
    return sum(p.numel() for p in net.parameters())


def unet_train(images, batch_size, num_steps, sigmas, widths=(32, 64, 64), blocks_per_level=1,
               attention=True, ema_decay=0.999):  # fmt: skip
    """NCSN training of ``UNet`` on images (N, C, H, W): per step a batch drawn with
    replacement, one level of the ``sigmas`` ladder per image, the loss
    1/2 ||sigma s(x + sigma z, sigma) + z||^2 summed over pixels and averaged over the batch
    (``losses.ncsn_loss``), one Adam step and the EMA update, as ``training.fit`` does."""
    _require()
    dev = _device()
    data = torch.tensor(np.asarray(images), device=dev)
    net = UNet(widths, blocks_per_level, attention, data.shape[1]).to(dev)
    params = [p for p in net.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    ladder = torch.tensor(np.asarray(sigmas), device=dev)

    def loss_fn(x):
        s = ladder[torch.randint(0, len(ladder), (x.shape[0],), device=dev)]
        z = torch.randn_like(x)
        scores = net(x + s[:, None, None, None] * z, s)
        residual = (s[:, None, None, None] * scores + z).flatten(1)
        return 0.5 * (residual**2).sum(-1).mean()

    def call():
        for _ in range(num_steps):
            batch = data[torch.randint(0, data.shape[0], (batch_size,), device=dev)]
            loss = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                torch._foreach_mul_(ema, ema_decay)
                torch._foreach_add_(ema, params, alpha=1 - ema_decay)
        _sync()
        return loss.item()

    return call
