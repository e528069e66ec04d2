"""Building blocks shared by the learned generators: normalisation, DDPM, denoisers, tokens, training.

Fitting conventions shared by every learned generator (`seeded_modules`, `fit_normalizer`,
`fit_generators`, `minibatch`, `diffusion_loss`): modules are initialised under ``seeded_init(seed)``;
minibatch rows come from a CPU generator seeded ``seed`` and training noise from a generator on the
model's device seeded ``seed + 1``; sampling noise from a device generator seeded with the sample seed.

Everything here is plain PyTorch and runs unchanged on CPU or GPU: tensors are created on the
device of the module or input they belong to.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bias.core.progress import progress_bar
from memorization.generators.base import cpu_generator
from memorization.zoo.store import ParamSpec

NORMALIZE_MODES = ("coordinate", "global", "none")


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on `device` (noise for diffusion sampling is drawn where the model runs)."""
    return torch.Generator(device=device).manual_seed(int(seed))


class Standardizer(nn.Module):
    """Zero mean, unit variance per coordinate (``"coordinate"``), with one scalar (``"global"``) or not at all.

    The statistics are buffers, so they travel with ``state_dict()``. Coordinates that never vary
    get std ``min_std`` (their normalised value is then 0 for every training model).
    """

    def __init__(self, num_features: int, mode: str = "coordinate", min_std: float = 1e-8) -> None:
        super().__init__()
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {mode!r}")
        self.mode, self.min_std = mode, min_std
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    @torch.no_grad()
    def fit(self, x: Tensor) -> Standardizer:
        self.to(x.device)  # the statistics live where the data is (pdiff's latent scaler is never moved otherwise)
        if self.mode == "coordinate":
            mean, std = x.mean(0), x.std(0, correction=0) if len(x) > 1 else torch.ones_like(x[0])
        elif self.mode == "global":
            mean = x.mean().expand(x.shape[1])
            std = (x.std(correction=0) if x.numel() > 1 else torch.ones(())).expand(x.shape[1])
        else:
            mean, std = torch.zeros_like(x[0]), torch.ones_like(x[0])
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(self.min_std))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """``(B,)`` scalars (timesteps, losses) -> ``(B, dim)`` sin/cos features at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    args = values.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ScalarEmbedding(nn.Module):
    """A scalar per sample (timestep, loss) -> a ``dim`` vector: sinusoidal features + 2-layer MLP."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.dim, self.scale = dim, scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(values * self.scale, self.dim))


class GaussianDiffusion(nn.Module):
    """DDPM (Ho et al. 2020) with a linear beta schedule.

    ``prediction="eps"``: the network predicts the added noise (P-diff, HyperDiffusion);
    ``"x0"``: it predicts the clean sample (G.pt). Sampling is ancestral with the posterior
    variance beta_tilde; the network is called as ``model(x_t, t, cond)`` with ``t`` a long tensor.

    ``sample(..., clip=(lo, hi))`` clamps the x0 estimate of every step to ``[lo, hi]`` (tensors
    broadcastable to the sample, e.g. the per-coordinate range of the normalised training data)
    before forming the posterior mean, as Ho et al. clip to [-1, 1] for images. With "eps"
    prediction, x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) amplifies any error of the
    network by 1 / sqrt(abar_t) (~157 at t = T for the default schedule), and a denoiser that
    under-predicts the noise makes x grow by up to that factor over the chain; the clamp keeps
    the chain on the data's range.
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2,
                 prediction: str = "eps") -> None:
        super().__init__()
        if prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps' or 'x0', got {prediction!r}")
        if num_steps < 1:
            raise ValueError(f"diffusion needs at least one step, got {num_steps}")
        self.num_steps, self.prediction = int(num_steps), prediction
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        buffers = {
            "betas": betas, "sqrt_abar": abar.sqrt(), "sqrt_1m_abar": (1 - abar).sqrt(),
            "post_var": betas * (1 - abar_prev) / (1 - abar),
            "post_c0": betas * abar_prev.sqrt() / (1 - abar), "post_ct": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
        }
        for key, value in buffers.items():
            self.register_buffer(key, value.float(), persistent=False)

    @staticmethod
    def _at(values: Tensor, t: Tensor, ndim: int) -> Tensor:
        return values[t].reshape(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return self._at(self.sqrt_abar, t, x0.ndim) * x0 + self._at(self.sqrt_1m_abar, t, x0.ndim) * noise

    def training_loss(self, model: Callable[..., Tensor], x0: Tensor, cond=None,
                      generator: torch.Generator | None = None) -> Tensor:
        t = torch.randint(0, self.num_steps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        out = model(self.q_sample(x0, t, noise), t, cond)
        return F.mse_loss(out, noise if self.prediction == "eps" else x0)

    @torch.no_grad()
    def sample(self, model: Callable[..., Tensor], shape: tuple[int, ...], cond=None, *, device: torch.device,
               generator: torch.Generator | None = None, progress: bool = True, desc: str = "ddpm sampling",
               clip: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = torch.randn(shape, device=device, generator=generator)
        for step in progress_bar(range(self.num_steps - 1, -1, -1), desc=desc, leave=False, disable=not progress):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            out = model(x, t, cond)
            if self.prediction == "eps":
                x0 = (x - self._at(self.sqrt_1m_abar, t, x.ndim) * out) / self._at(self.sqrt_abar, t, x.ndim)
            else:
                x0 = out
            if clip is not None:
                x0 = torch.clamp(x0, clip[0], clip[1])
            mean = self._at(self.post_c0, t, x.ndim) * x0 + self._at(self.post_ct, t, x.ndim) * x
            if step > 0:
                noise = torch.randn(shape, device=device, generator=generator)
                x = mean + self._at(self.post_var, t, x.ndim).sqrt() * noise
            else:
                x = mean
        return x


class MLPDenoiser(nn.Module):
    """Residual MLP denoiser on flat vectors ``(B, D)``; the timestep embedding is added in every block."""

    def __init__(self, dim: int, hidden: int = 512, depth: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.time = ScalarEmbedding(hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.Dropout(dropout),
                          nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        h, emb = self.inp(x), self.time(t)
        for block in self.blocks:
            h = h + block(h + emb)
        return self.out(h)


class ConvDenoiser1d(nn.Module):
    """1-D convolutional denoiser on ``(B, C, L)`` latents with a timestep embedding per residual block."""

    def __init__(self, channels: int, hidden: int = 64, depth: int = 4, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        groups = math.gcd(8, hidden)
        self.inp = nn.Conv1d(channels, hidden, kernel_size, padding=pad)
        self.time = ScalarEmbedding(hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "a": nn.Sequential(nn.GroupNorm(groups, hidden), nn.SiLU(), nn.Conv1d(hidden, hidden, kernel_size, padding=pad)),
                "b": nn.Sequential(nn.GroupNorm(groups, hidden), nn.SiLU(), nn.Conv1d(hidden, hidden, kernel_size, padding=pad)),
            }) for _ in range(depth))
        self.out = nn.Sequential(nn.GroupNorm(groups, hidden), nn.SiLU(), nn.Conv1d(hidden, channels, kernel_size, padding=pad))

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        h, emb = self.inp(x), self.time(t)[:, :, None]
        for block in self.blocks:
            h = h + block["b"](block["a"](h) + emb)
        return self.out(h)


class ParamTokenizer:
    """Cut a flat parameter vector into tokens: each tensor of the spec into chunks of ``chunk_size``.

    Every parameter tensor (a layer's weight, its bias) starts a new token, so a token never mixes
    layers; the last chunk of a tensor is zero-padded. ``tokenize`` / ``detokenize`` are gathers.
    """

    def __init__(self, spec: ParamSpec, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        P = spec.numel()
        gather, start = [], 0
        for size in spec.sizes():
            for a in range(0, size, chunk_size):
                idx = list(range(start + a, start + min(a + chunk_size, size)))
                gather.append(idx + [P] * (chunk_size - len(idx)))  # index P is the zero pad
            start += size
        self.gather_index = torch.tensor(gather, dtype=torch.long)            # (T, c)
        flat_pos = torch.arange(self.gather_index.numel()).reshape(self.gather_index.shape)
        mask = self.gather_index < P
        self.scatter_index = torch.empty(P, dtype=torch.long)
        self.scatter_index[self.gather_index[mask]] = flat_pos[mask]           # (P,) position of each coordinate
        self.num_tokens, self.num_params = len(gather), P

    def tokenize(self, flat: Tensor) -> Tensor:
        padded = F.pad(flat, (0, 1))
        return padded[..., self.gather_index.to(flat.device)]

    def detokenize(self, tokens: Tensor) -> Tensor:
        return tokens.reshape(*tokens.shape[:-2], -1)[..., self.scatter_index.to(tokens.device)]


class PerTokenLinear(nn.Module):
    """A separate linear map for every token position: ``(B, T, i) -> (B, T, o)`` (one einsum)."""

    def __init__(self, num_tokens: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_tokens, d_in, d_out) / math.sqrt(d_in))
        self.bias = nn.Parameter(torch.zeros(num_tokens, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bti,tio->bto", x, self.weight) + self.bias


class TokenTransformer(nn.Module):
    """Transformer over parameter tokens with a prefix of conditioning tokens (pre-norm encoder).

    ``forward(tokens (B, T, c), prefix (B, k, d))`` -> ``(B, T, c)``: the prefix (timestep, losses,
    starting parameters...) is prepended, learned position embeddings added, and the outputs at
    the parameter positions are decoded per token.
    """

    def __init__(self, num_tokens: int, chunk_size: int, num_prefix: int, d_model: int = 256, depth: int = 4,
                 heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.embed = PerTokenLinear(num_tokens, chunk_size, d_model)
        self.pos = nn.Parameter(torch.randn(num_prefix + num_tokens, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.decode = PerTokenLinear(num_tokens, d_model, chunk_size)
        self.num_prefix = num_prefix

    def forward(self, tokens: Tensor, prefix: Tensor) -> Tensor:
        h = torch.cat([prefix, self.embed(tokens)], dim=1) + self.pos
        h = self.norm(self.encoder(h))
        return self.decode(h[:, self.num_prefix:])


def train_loop(module: nn.Module, loss_fn: Callable[[int], Tensor], steps: int, *, lr: float,
               weight_decay: float = 0.0, grad_clip: float | None = 1.0, desc: str = "training",
               progress: bool = True, cosine: bool = True) -> list[float]:
    """AdamW for `steps` steps on ``loss_fn(step)`` with a tqdm bar; returns the loss per step."""
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) if cosine else None
    history: list[float] = []
    bar = progress_bar(range(steps), desc=desc, leave=False, disable=not progress)
    for step in bar:
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        history.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{history[-1]:.4g}")
    module.eval()
    if history and not math.isfinite(history[-1]):
        raise FloatingPointError(f"{desc}: the loss became {history[-1]}; lower the learning rate")
    return history


def minibatch_indices(n: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """Random indices (without replacement when the batch fits) from a seeded CPU generator."""
    if batch_size >= n:
        return torch.randperm(n, generator=generator)
    return torch.randperm(n, generator=generator)[:batch_size]


class seeded_init:
    """Context manager: build modules under ``torch.manual_seed(seed)`` without touching the global RNG state."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._fork = torch.random.fork_rng(devices=[])

    def __enter__(self) -> None:
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc) -> None:
        self._fork.__exit__(*exc)


def seeded_modules(seed: int, device: torch.device, *builders: Callable[[], nn.Module]) -> list[nn.Module]:
    """``[build() for build in builders]`` under ``seeded_init(seed)`` (in that order), each moved to `device`."""
    with seeded_init(seed):
        modules = [build() for build in builders]
    return [m.to(device) for m in modules]


def fit_normalizer(data: Tensor, mode: str, device: torch.device) -> tuple[Standardizer, Tensor]:
    """A `Standardizer` fitted to `data` ``(n, P)`` (on its device) then moved to `device`, and `data` normalised there."""
    norm = Standardizer(data.shape[1], mode).fit(data).to(device)
    return norm, norm(data.to(device))


def fit_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The random streams of a fit: minibatch rows (CPU, seeded `seed`) and noise (on `device`, seeded ``seed + 1``)."""
    return cpu_generator(seed), device_generator(seed + 1, device)


def minibatch(data: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """Random rows of `data` (`minibatch_indices` from the seeded CPU `generator`), on `data`'s device."""
    return data[minibatch_indices(len(data), batch_size, generator).to(data.device)]


def diffusion_loss(diffusion: GaussianDiffusion, model: nn.Module, data: Tensor, batch_size: int,
                   index_generator: torch.Generator, noise_generator: torch.Generator) -> Callable[[int], Tensor]:
    """The `train_loop` loss of an unconditional DDPM on the rows of `data`: one `minibatch`, then
    `GaussianDiffusion.training_loss` (timesteps and noise from `noise_generator`)."""

    def loss(step: int) -> Tensor:
        return diffusion.training_loss(model, minibatch(data, batch_size, index_generator), generator=noise_generator)

    return loss
