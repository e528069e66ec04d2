"""P-diff (Wang et al. 2024, "Neural Network Diffusion"): a parameter autoencoder plus a latent DDPM.

1. Parameters are standardised per coordinate (statistics kept in ``self.norm_``).
2. A 1-D convolutional autoencoder reads the flat vector as a 1-channel signal (zero-padded to a
   multiple of 2**len(channels)); each encoder layer halves the length. As published, training adds
   noise to the input (``input_noise``, 0.001) and to the latent (``latent_noise``, 0.1) and
   reconstructs the clean input.
3. A DDPM (linear betas 1e-4..2e-2, 1000 steps, noise prediction) with a 1-D conv denoiser is
   trained on the clean latents (scaled to unit variance by one global factor, ``latent_norm_``).
4. Sampling: DDPM in latent space, decode, undo the normalisations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memorization.generators.base import WeightGenerator, register_generator
from memorization.generators.nets import (
    ConvDenoiser1d,
    GaussianDiffusion,
    Standardizer,
    device_generator,
    diffusion_loss,
    fit_generators,
    fit_normalizer,
    minibatch,
    seeded_modules,
    train_loop,
)
from memorization.zoo.store import Zoo


class ConvAutoencoder1d(nn.Module):
    """Flat vector ``(B, P)`` <-> latent ``(B, latent_channels, L)`` with ``L = ceil(P / 2**depth)``."""

    def __init__(self, num_params: int, channels: list[int], latent_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        if not channels:
            raise ValueError("pdiff: channels must list at least one encoder layer")
        factor = 2 ** len(channels)
        self.num_params = num_params
        self.padded = -(-num_params // factor) * factor
        self.latent_shape = (latent_channels, self.padded // factor)
        pad = kernel_size // 2
        enc, c_in = [], 1
        for c in channels:
            enc += [nn.Conv1d(c_in, c, kernel_size, stride=2, padding=pad), nn.InstanceNorm1d(c, affine=True),
                    nn.LeakyReLU(0.2)]
            c_in = c
        enc.append(nn.Conv1d(c_in, latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv1d(latent_channels, c_in, 1)]
        for c in list(reversed(channels))[1:] + [channels[0]]:
            dec += [nn.LeakyReLU(0.2), nn.ConvTranspose1d(c_in, c, 4, stride=2, padding=1), nn.InstanceNorm1d(c, affine=True)]
            c_in = c
        dec += [nn.LeakyReLU(0.2), nn.Conv1d(c_in, 1, kernel_size, padding=pad)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(F.pad(x, (0, self.padded - self.num_params))[:, None])

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)[:, 0, : self.num_params]


@register_generator("pdiff")
class PDiff(WeightGenerator):
    default_num_samples = 200

    def __init__(self, channels: list[int] = (64, 128, 256, 256), latent_channels: int = 4, kernel_size: int = 5,
                 input_noise: float = 0.001, latent_noise: float = 0.1, ae_steps: int = 30000, ae_lr: float = 1e-3,
                 ae_weight_decay: float = 2e-6, ddpm_steps: int = 30000, ddpm_lr: float = 1e-3,
                 batch_size: int = 50, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2,
                 denoiser_channels: int = 128, denoiser_depth: int = 4, normalize: str = "coordinate",
                 progress: bool = True, device: str = "auto") -> None:
        super().__init__(device)
        self.channels, self.latent_channels, self.kernel_size = [int(c) for c in channels], int(latent_channels), kernel_size
        self.input_noise, self.latent_noise = float(input_noise), float(latent_noise)
        self.ae_steps, self.ae_lr, self.ae_weight_decay = int(ae_steps), float(ae_lr), float(ae_weight_decay)
        self.ddpm_steps, self.ddpm_lr, self.batch_size = int(ddpm_steps), float(ddpm_lr), int(batch_size)
        self.num_timesteps, self.beta_start, self.beta_end = int(num_timesteps), float(beta_start), float(beta_end)
        self.denoiser_channels, self.denoiser_depth = int(denoiser_channels), int(denoiser_depth)
        self.normalize, self.progress = normalize, progress

    def _fit(self, zoo: Zoo, seed: int) -> None:
        dev = self.torch_device
        P = zoo.spec.numel()
        self.norm_, x = fit_normalizer(zoo.params.float(), self.normalize, dev)
        self.ae_, self.denoiser_, self.diffusion_ = seeded_modules(
            seed, dev, lambda: ConvAutoencoder1d(P, self.channels, self.latent_channels, self.kernel_size),
            lambda: ConvDenoiser1d(self.latent_channels, self.denoiser_channels, self.denoiser_depth),
            lambda: GaussianDiffusion(self.num_timesteps, self.beta_start, self.beta_end, "eps"))
        self.latent_norm_ = Standardizer(1, "global")  # no random init; fit() puts it on the latents' device
        idx_gen, noise_gen = fit_generators(seed, dev)

        def ae_loss(step: int) -> Tensor:
            batch = minibatch(x, self.batch_size, idx_gen)
            noisy = batch + self.input_noise * torch.randn(batch.shape, device=dev, generator=noise_gen)
            z = self.ae_.encode(noisy)
            z = z + self.latent_noise * torch.randn(z.shape, device=dev, generator=noise_gen)
            return F.mse_loss(self.ae_.decode(z), batch)

        self.ae_history_ = train_loop(self.ae_, ae_loss, self.ae_steps, lr=self.ae_lr, weight_decay=self.ae_weight_decay,
                                      desc="pdiff autoencoder", progress=self.progress)
        with torch.no_grad():
            z = self.ae_.encode(x)
            self.latent_norm_.fit(z.reshape(-1, 1))
            z = self.latent_norm_(z[..., None])[..., 0]

        ddpm_loss = diffusion_loss(self.diffusion_, self.denoiser_, z, self.batch_size, idx_gen, noise_gen)
        self.ddpm_history_ = train_loop(self.denoiser_, ddpm_loss, self.ddpm_steps, lr=self.ddpm_lr,
                                        desc="pdiff latent ddpm", progress=self.progress)

    def _sample(self, n: int, seed: int) -> Tensor:
        dev = self.torch_device
        z = self.diffusion_.sample(self.denoiser_, (n, *self.ae_.latent_shape), device=dev,
                                   generator=device_generator(seed, dev), progress=self.progress, desc="pdiff sampling")
        z = self.latent_norm_.inverse(z[..., None])[..., 0]
        return self.norm_.inverse(self.ae_.decode(z))
