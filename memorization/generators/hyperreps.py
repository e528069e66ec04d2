"""Hyper-Representations (Schuerholt et al. 2022) as evaluated in the memorisation study.

An autoencoder maps standardised flat weights to a latent vector (``encoder="mlp"``: a small MLP,
the CPU-friendly default; ``"transformer"``: tokens of ``token_size`` weights through a transformer
encoder, a linear bottleneck, and a mirrored transformer decoder). Training minimises the
reconstruction MSE with Gaussian input noise (the published contrastive term is not implemented).

Sampling, as published: encode the top ``top_fraction`` (30%) of training models by accuracy
(``zoo.meta["accuracy"]``), fit a Gaussian KDE with ``bandwidth`` 0.002 to every latent dimension
separately, draw, decode. Novelty is measured against `reference_params`: the autoencoder's
reconstructions of the training weights, not the weights themselves.

Two samplers (``sampler``):

* ``"per_dimension"`` (default): the product of the per-dimension KDEs, drawn correctly. Every
  dimension d of sample s independently picks a training latent ``i[s, d]`` and adds its own noise:
  ``z[s, d] = Z[i[s, d], d] + bandwidth * eps[s, d]``.
* ``"shared_random_state"``: what the original code did. It called each dimension's KDE sampler
  with the *same* random state, so every dimension drew the same index and the same standard
  normal: ``z[s, :] = Z[i[s], :] + bandwidth * eps[s]`` (one training latent plus one scalar
  offset added to all dimensions). With bandwidth 0.002 the decoded sample is the reconstruction
  of a training model up to a tiny shift: a copier by construction. Offered only to reproduce
  the published numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memorization.generators.base import WeightGenerator, cpu_generator, register_generator
from memorization.generators.nets import (
    ParamTokenizer,
    PerTokenLinear,
    fit_generators,
    fit_normalizer,
    minibatch,
    seeded_modules,
    train_loop,
)
from memorization.zoo.store import ParamSpec, Zoo

SAMPLERS = ("per_dimension", "shared_random_state")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers[:-1])


class MLPAutoencoder(nn.Module):
    def __init__(self, num_params: int, hidden: list[int], latent_dim: int) -> None:
        super().__init__()
        self.encoder = _mlp([num_params, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden), num_params])

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


class TransformerAutoencoder(nn.Module):
    """Weights cut into per-tensor tokens; transformer encoder -> flat bottleneck -> transformer decoder."""

    def __init__(self, spec: ParamSpec, token_size: int, latent_dim: int, d_model: int, depth: int, heads: int) -> None:
        super().__init__()
        self.tokens = ParamTokenizer(spec, token_size)
        T = self.tokens.num_tokens

        def stack() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, 0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

        self.embed, self.enc, self.to_latent = PerTokenLinear(T, token_size, d_model), stack(), nn.Linear(T * d_model, latent_dim)
        self.from_latent, self.dec, self.unembed = nn.Linear(latent_dim, T * d_model), stack(), PerTokenLinear(T, d_model, token_size)
        self.pos_enc = nn.Parameter(torch.randn(T, d_model) * 0.02)
        self.pos_dec = nn.Parameter(torch.randn(T, d_model) * 0.02)
        self.norm_enc, self.norm_dec = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.d_model = d_model

    def encode(self, x: Tensor) -> Tensor:
        h = self.norm_enc(self.enc(self.embed(self.tokens.tokenize(x)) + self.pos_enc))
        return self.to_latent(h.flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        h = self.from_latent(z).reshape(z.shape[0], -1, self.d_model) + self.pos_dec
        return self.tokens.detokenize(self.unembed(self.norm_dec(self.dec(h))))


@register_generator("hyperreps")
class HyperReps(WeightGenerator):
    default_num_samples = 200

    def __init__(self, encoder: str = "mlp", hidden: list[int] = (512, 256), latent_dim: int = 128,
                 token_size: int = 64, d_model: int = 128, depth: int = 2, heads: int = 4,
                 input_noise: float = 0.05, steps: int = 5000, lr: float = 1e-3, weight_decay: float = 1e-5,
                 batch_size: int = 128, top_fraction: float = 0.3, bandwidth: float = 0.002,
                 sampler: str = "per_dimension", normalize: str = "coordinate", progress: bool = True,
                 device: str = "auto") -> None:
        super().__init__(device)
        if encoder not in ("mlp", "transformer"):
            raise ValueError(f"hyperreps: encoder must be 'mlp' or 'transformer', got {encoder!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"hyperreps: sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not 0 < top_fraction <= 1:
            raise ValueError(f"hyperreps: top_fraction must be in (0, 1], got {top_fraction}")
        self.encoder, self.hidden, self.latent_dim = encoder, [int(h) for h in hidden], int(latent_dim)
        self.token_size, self.d_model, self.depth, self.heads = int(token_size), int(d_model), int(depth), int(heads)
        self.input_noise, self.steps, self.lr, self.weight_decay = float(input_noise), int(steps), float(lr), float(weight_decay)
        self.batch_size, self.top_fraction, self.bandwidth = int(batch_size), float(top_fraction), float(bandwidth)
        self.sampler, self.normalize, self.progress = sampler, normalize, progress

    def _build(self, spec: ParamSpec) -> nn.Module:
        if self.encoder == "mlp":
            return MLPAutoencoder(spec.numel(), self.hidden, self.latent_dim)
        return TransformerAutoencoder(spec, self.token_size, self.latent_dim, self.d_model, self.depth, self.heads)

    def _fit(self, zoo: Zoo, seed: int) -> None:
        if "accuracy" not in zoo.meta:
            raise KeyError("hyperreps samples from the top models by accuracy; the zoo has no meta['accuracy'] "
                           "column (evaluate the models with zoo.evaluate and add it)")
        dev = self.torch_device
        self.norm_, x = fit_normalizer(zoo.params.float(), self.normalize, dev)
        (self.ae_,) = seeded_modules(seed, dev, lambda: self._build(zoo.spec))
        idx_gen, noise_gen = fit_generators(seed, dev)

        def loss(step: int) -> Tensor:
            batch = minibatch(x, self.batch_size, idx_gen)
            noisy = batch + self.input_noise * torch.randn(batch.shape, device=dev, generator=noise_gen)
            return F.mse_loss(self.ae_.decode(self.ae_.encode(noisy)), batch)

        self.history_ = train_loop(self.ae_, loss, self.steps, lr=self.lr, weight_decay=self.weight_decay,
                                   desc="hyperreps autoencoder", progress=self.progress)
        acc = torch.as_tensor(zoo.meta["accuracy"], dtype=torch.float32)
        k = max(1, round(self.top_fraction * len(zoo)))
        self.top_indices_ = torch.argsort(acc, descending=True, stable=True)[:k]
        with torch.no_grad():
            self.top_latents_ = self.ae_.encode(x[self.top_indices_.to(dev)]).cpu()

    def encode(self, params: Tensor, chunk: int = 1024) -> Tensor:
        dev = self.torch_device
        with torch.no_grad():
            return torch.cat([self.ae_.encode(self.norm_(p.to(dev, torch.float32))).cpu() for p in params.split(chunk)])

    def decode(self, latents: Tensor, chunk: int = 1024) -> Tensor:
        dev = self.torch_device
        with torch.no_grad():
            return torch.cat([self.norm_.inverse(self.ae_.decode(z.to(dev))).cpu() for z in latents.split(chunk)])

    def reference_params(self, zoo: Zoo) -> Tensor:
        """The autoencoder's reconstructions of ``zoo.params`` (no noise): what the study compares samples with."""
        return self.decode(self.encode(zoo.params))

    def _sample(self, n: int, seed: int) -> Tensor:
        g = cpu_generator(seed)
        Z = self.top_latents_
        m, d = Z.shape
        if self.sampler == "per_dimension":
            pick = torch.randint(0, m, (n, d), generator=g)
            z = Z.gather(0, pick) + self.bandwidth * torch.randn(n, d, generator=g)
        else:
            pick = torch.randint(0, m, (n,), generator=g)
            z = Z[pick] + self.bandwidth * torch.randn(n, 1, generator=g)
        self.last_sample = {"sampler": self.sampler, "top_indices": self.top_indices_[pick].tolist()}
        return self.decode(z)
