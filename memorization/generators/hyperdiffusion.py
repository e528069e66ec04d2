"""HyperDiffusion (Erkoc et al. 2023): unconditional diffusion over the flattened weights of fitted fields.

Works on any zoo (``memorization.fields.build_field_zoo`` builds the occupancy-field zoos of the
study). The denoiser is a transformer over per-tensor weight tokens with one timestep token
(``denoiser="transformer"``, as published) or a residual MLP on the flat vector (``"mlp"``,
cheap). ``permutation_augment=k`` adds k randomly permuted copies of every MLP to the training
set (the published ablation used 1, 3, 7 and found samples became meaningless); default 0.
``clip_x0=True`` (default; ours, not in the paper's description) clamps the sampler's x0 estimate
at every step to the per-coordinate range of the normalised training weights. Without it an
under-trained eps-denoiser lets the chain grow by up to 1/sqrt(abar_T) (~157): at CPU scale the
samples had norms 250-2,500 against ~12 for the training fields.
Shapes are recovered from samples with `memorization.fields.field_surface_points`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memorization.generators.base import WeightGenerator, cpu_generator, register_generator
from memorization.generators.nets import (
    GaussianDiffusion,
    MLPDenoiser,
    ParamTokenizer,
    ScalarEmbedding,
    TokenTransformer,
    device_generator,
    diffusion_loss,
    fit_generators,
    fit_normalizer,
    seeded_modules,
    train_loop,
)
from memorization.generators.permutation import random_permute_mlp
from memorization.zoo.store import ParamSpec, Zoo


class TokenDenoiser(nn.Module):
    """``model(x_t, t)`` on flat ``(B, P)``: weight tokens plus one timestep token through a transformer."""

    def __init__(self, spec: ParamSpec, chunk_size: int, d_model: int, depth: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.tokens = ParamTokenizer(spec, chunk_size)
        self.net = TokenTransformer(self.tokens.num_tokens, chunk_size, 1, d_model, depth, heads, dropout)
        self.time = ScalarEmbedding(d_model)

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.tokens.detokenize(self.net(self.tokens.tokenize(x), self.time(t)[:, None]))


@register_generator("hyperdiffusion")
class HyperDiffusion(WeightGenerator):
    default_num_samples = 200

    def __init__(self, denoiser: str = "transformer", chunk_size: int = 512, d_model: int = 256, depth: int = 4,
                 heads: int = 8, dropout: float = 0.0, mlp_hidden: int = 1024, mlp_depth: int = 4,
                 num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2, prediction: str = "eps",
                 steps: int = 20000, lr: float = 2e-4, weight_decay: float = 0.0, batch_size: int = 32,
                 permutation_augment: int = 0, normalize: str = "global", clip_x0: bool = True, progress: bool = True,
                 device: str = "auto") -> None:
        super().__init__(device)
        if denoiser not in ("transformer", "mlp"):
            raise ValueError(f"hyperdiffusion: denoiser must be 'transformer' or 'mlp', got {denoiser!r}")
        if permutation_augment < 0:
            raise ValueError(f"hyperdiffusion: permutation_augment is a count of extra copies (>= 0), got {permutation_augment}")
        self.denoiser, self.chunk_size, self.d_model, self.depth, self.heads = denoiser, int(chunk_size), int(d_model), int(depth), int(heads)
        self.dropout, self.mlp_hidden, self.mlp_depth = float(dropout), int(mlp_hidden), int(mlp_depth)
        self.num_timesteps, self.beta_start, self.beta_end, self.prediction = int(num_timesteps), beta_start, beta_end, prediction
        self.steps, self.lr, self.weight_decay, self.batch_size = int(steps), float(lr), float(weight_decay), int(batch_size)
        self.permutation_augment, self.normalize, self.progress = int(permutation_augment), normalize, progress
        self.clip_x0 = bool(clip_x0)

    def _fit(self, zoo: Zoo, seed: int) -> None:
        dev = self.torch_device
        data = zoo.params.float()
        if self.permutation_augment:
            g = cpu_generator(seed + 2)
            copies = [random_permute_mlp(data, zoo.spec, g)[0] for _ in range(self.permutation_augment)]
            data = torch.cat([data, *copies])
        P = zoo.spec.numel()

        def denoiser() -> nn.Module:
            if self.denoiser == "transformer":
                return TokenDenoiser(zoo.spec, self.chunk_size, self.d_model, self.depth, self.heads, self.dropout)
            return MLPDenoiser(P, self.mlp_hidden, self.mlp_depth, self.dropout)

        self.norm_, x = fit_normalizer(data, self.normalize, dev)
        self.model_, self.diffusion_ = seeded_modules(
            seed, dev, denoiser,
            lambda: GaussianDiffusion(self.num_timesteps, self.beta_start, self.beta_end, self.prediction))
        self.clip_range_ = (x.min(0).values, x.max(0).values)  # normalised training range, per coordinate
        idx_gen, noise_gen = fit_generators(seed, dev)
        loss = diffusion_loss(self.diffusion_, self.model_, x, self.batch_size, idx_gen, noise_gen)
        self.history_ = train_loop(self.model_, loss, self.steps, lr=self.lr, weight_decay=self.weight_decay,
                                   desc="hyperdiffusion", progress=self.progress)

    def _sample(self, n: int, seed: int) -> Tensor:
        dev = self.torch_device
        x = self.diffusion_.sample(self.model_, (n, self._num_params), device=dev,
                                   generator=device_generator(seed, dev), progress=self.progress,
                                   desc="hyperdiffusion sampling", clip=self.clip_range_ if self.clip_x0 else None)
        return self.norm_.inverse(x)
