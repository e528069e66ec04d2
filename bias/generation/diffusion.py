"""Latent diffusion as DiT trains and samples it: the DDPM schedule, the hybrid loss, the DiT model, DDPM sampling.

* Schedule: 1000 steps, betas linear from 1e-4 to 0.02 (a diffusers `DDPMScheduler`, `make_scheduler`).
* Model: a diffusers `DiTTransformer2DModel` (`build_dit`) made unconditional: one class
  (``num_embeds_ada_norm=1``), every image labelled 0, label dropout off. With ``learn_sigma`` (DiT's
  default) it predicts the noise and, in as many channels again, where the variance lies between the
  forward process's beta_t and the true posterior's variance (improved DDPM's "learned range").
  diffusers' layout gives every block its own timestep and label embedder (DiT shares one), so its
  DiT-B/2 has 138 M parameters rather than DiT's ~130 M (`benchmarks/RESULTS.md`).
* Loss (`Diffusion.loss`): the noise's mean squared error, plus with ``learn_sigma`` the variational bound
  term of the step (KL between the true and the model's posterior, or the discretised Gaussian decoder
  likelihood at t = 0, in bits per dimension), where the mean comes from the noise prediction with its
  gradient stopped: the bound trains the variance only (improved DDPM's L_hybrid with lambda = 1, as DiT).
* Sampling (`sample_latents`): ancestral DDPM on the timesteps ``linspace(0, 999, steps)`` (250 published),
  with the learned variance; every sample draws its noise from its own CPU generator, so a sample does not
  depend on its batch or device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

NUM_TRAIN_TIMESTEPS = 1000
#: keys of the DiT config that follow from the VAE and image size, not from `dit.arch`
DERIVED_DIT_KEYS = ("in_channels", "out_channels", "sample_size", "num_embeds_ada_norm")


def make_scheduler(learn_sigma: bool = True) -> Any:
    """DiT's linear 1000-step schedule as a diffusers `DDPMScheduler` (no clipping: latents are unbounded)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=1e-4, beta_end=0.02,
                         beta_schedule="linear", clip_sample=False, prediction_type="epsilon",
                         variance_type="learned_range" if learn_sigma else "fixed_small", timestep_spacing="linspace")


def build_dit(arch: Mapping[str, Any], latent_channels: int, latent_size: int, learn_sigma: bool = True) -> torch.nn.Module:
    """An unconditional diffusers `DiTTransformer2DModel` on ``latent_channels x latent_size x latent_size`` latents."""
    from diffusers import DiTTransformer2DModel
    from diffusers.models.embeddings import LabelEmbedding

    model = DiTTransformer2DModel(**dict(arch), in_channels=latent_channels, sample_size=latent_size,
                                  out_channels=latent_channels * (2 if learn_sigma else 1), num_embeds_ada_norm=1)
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0  # one class, never dropped: the model is unconditional
    return model


def predict(model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The DiT's output for noisy latents `x_t` at timesteps `t` (every image of class 0)."""
    labels = torch.zeros(len(x_t), dtype=torch.long, device=x_t.device)
    return model(x_t, timestep=t, class_labels=labels).sample


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(mean, exp(log_scale)^2), elementwise (nats).

    The outermost bins take the tails (below -0.999 and above 0.999), as in DDPM's decoder.
    """
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centred + 1.0 / 255))
    cdf_min = torch.special.ndtr(inv_std * (centred - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


class Diffusion:
    """The forward process and the training loss on a `DDPMScheduler`'s schedule (see the module docstring)."""

    def __init__(self, scheduler: Any, learn_sigma: bool = True) -> None:
        betas = scheduler.betas.double()
        ac = scheduler.alphas_cumprod.double()
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        posterior_var = betas * (1 - ac_prev) / (1 - ac)
        self.learn_sigma = learn_sigma
        self.num_timesteps = len(betas)
        self._tables = {
            "sqrt_ac": ac.sqrt(), "sqrt_one_minus_ac": (1 - ac).sqrt(),
            "recip_sqrt_ac": (1 / ac).sqrt(), "sqrt_recip_ac_minus_one": (1 / ac - 1).sqrt(),
            # the posterior's variance is 0 at t = 0: its log takes the value of t = 1 there
            "posterior_logvar": torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]])),
            "posterior_c0": betas * ac_prev.sqrt() / (1 - ac),
            "posterior_ct": (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac),
            "log_betas": torch.log(betas),
        }
        self._on: dict[tuple[str, str], torch.Tensor] = {}

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        key = (name, str(like.device))
        if key not in self._on:
            self._on[key] = self._tables[name].to(device=like.device, dtype=torch.float32)
        return self._on[key][t].view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        return self._at("sqrt_ac", t, x0) * x0 + self._at("sqrt_one_minus_ac", t, x0) * noise

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (clipped) log variance of q(x_{t-1} | x_t, x0)."""
        mean = self._at("posterior_c0", t, x_t) * x0 + self._at("posterior_ct", t, x_t) * x_t
        return mean, self._at("posterior_logvar", t, x_t).expand_as(x_t)

    def loss(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """The per-sample training loss: noise MSE (+ the variational bound term with `learn_sigma`)."""
        channels = x_t.shape[1]
        eps = model_output[:, :channels]
        mse = _mean_flat((noise.float() - eps.float()) ** 2)
        if not self.learn_sigma:
            return mse
        frac = (model_output[:, channels:].float() + 1) / 2
        true_mean, true_logvar = self.posterior(x0, x_t, t)
        model_logvar = frac * self._at("log_betas", t, x_t) + (1 - frac) * true_logvar
        x0_pred = self._at("recip_sqrt_ac", t, x_t) * x_t - self._at("sqrt_recip_ac_minus_one", t, x_t) * eps.detach().float()
        model_mean, _ = self.posterior(x0_pred, x_t, t)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl) * (self.num_timesteps / 1000.0)
        return mse + vb


@torch.no_grad()
def sample_latents(model: torch.nn.Module, generators: Sequence[torch.Generator], shape: Sequence[int], steps: int,
                   learn_sigma: bool, device: torch.device) -> torch.Tensor:
    """Ancestral DDPM sampling of one latent per generator (B x C x H x W, on `device`)."""
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = make_scheduler(learn_sigma)
    scheduler.set_timesteps(steps)
    gens = list(generators)
    x = randn_tensor((len(gens), *shape), generator=gens, device=device, dtype=torch.float32)
    for t in scheduler.timesteps:
        out = predict(model, x, t.expand(len(x)).to(device)).float()
        x = scheduler.step(out, t, x, generator=gens).prev_sample
    return x
