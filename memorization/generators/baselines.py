"""Trivial generators the study compares against, plus a positive control for memorisation.

* ``copy``     a random training model plus tiny noise: a generator that memorises by construction;
* ``noise``    a random training model plus N(0, sigma^2) per coordinate (published sigmas per method
               in ``configs/memorize/generator/noise.yaml``);
* ``average``  the mean of k random training models (P-diff regime: 100 models, k = 16);
* ``gaussian`` draws from a per-coordinate normal fitted to the training models.

Every sampler records what it picked in ``self.last_sample`` (seeded, so a run can be replayed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from memorization.generators.base import WeightGenerator, cpu_generator, register_generator
from memorization.zoo.store import Zoo


class _TrainingSetGenerator(WeightGenerator):
    """Keeps a private copy of the training parameters (never a view of ``zoo.params``)."""

    def _fit(self, zoo: Zoo, seed: int) -> None:
        self._train = zoo.params.detach().to("cpu", torch.float32).clone()

    def _pick(self, n: int, g: torch.Generator) -> Tensor:
        return torch.randint(0, len(self._train), (n,), generator=g)


@register_generator("copy")
class CopyTraining(_TrainingSetGenerator):
    """Positive control: ``train[i] + N(0, noise_std^2)`` with i uniform; min-L2 to training ~ noise_std*sqrt(P)."""

    default_num_samples = 100

    def __init__(self, noise_std: float = 1e-6, device: str = "cpu") -> None:
        super().__init__(device)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)

    def _sample(self, n: int, seed: int) -> Tensor:
        g = cpu_generator(seed)
        idx = self._pick(n, g)
        self.last_sample = {"indices": idx.tolist()}
        return self._train[idx] + self.noise_std * torch.randn(n, self._train.shape[1], generator=g)


@register_generator("noise")
class NoisyTraining(_TrainingSetGenerator):
    """``train[i] + N(0, (sigma * scale)^2)`` per coordinate, i uniform over the training models.

    ``scale`` converts a sigma given in a generator's normalised space into raw parameter units
    (G.pt reports its sigmas in a space scaled by 4.185; see the YAML). To add noise to a
    generator's *reference* set (Hyper-Representations: the autoencoder's reconstructions), fit this
    on a zoo whose params are those reconstructions (``dataclasses.replace(zoo, params=recon)``).
    """

    default_num_samples = 100

    def __init__(self, sigma: float = 0.02, scale: float = 1.0, device: str = "cpu") -> None:
        super().__init__(device)
        if sigma < 0 or scale <= 0:
            raise ValueError(f"need sigma >= 0 and scale > 0, got sigma={sigma}, scale={scale}")
        self.sigma, self.scale = float(sigma), float(scale)

    def _sample(self, n: int, seed: int) -> Tensor:
        g = cpu_generator(seed)
        idx = self._pick(n, g)
        self.last_sample = {"indices": idx.tolist()}
        return self._train[idx] + self.sigma * self.scale * torch.randn(n, self._train.shape[1], generator=g)


@register_generator("average")
class AverageTraining(_TrainingSetGenerator):
    """Each sample is the mean of ``k`` distinct random training models (published: 100 samples, k = 16).

    The original implementation summed into one of the chosen checkpoints in place, silently
    corrupting the training set; here the models are gathered into a fresh tensor first and the
    zoo is never written. ``last_sample["indices"]`` is the ``(n, k)`` list of models averaged.
    """

    default_num_samples = 100

    def __init__(self, k: int = 16, device: str = "cpu") -> None:
        super().__init__(device)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)

    def _sample(self, n: int, seed: int) -> Tensor:
        if self.k > len(self._train):
            raise ValueError(f"average: k={self.k} exceeds the {len(self._train)} training models; lower k")
        g = cpu_generator(seed)
        idx = torch.stack([torch.randperm(len(self._train), generator=g)[: self.k] for _ in range(n)])
        self.last_sample = {"indices": idx.tolist()}
        return self._train[idx].clone().mean(dim=1)


@register_generator("gaussian")
class GaussianFit(WeightGenerator):
    """Independent normal per coordinate: mean and std (population, ``correction=0``) of the training models."""

    default_num_samples = 100

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)

    def _fit(self, zoo: Zoo, seed: int) -> None:
        params = zoo.params.detach().to("cpu", torch.float32)
        self.mean_ = params.mean(0)
        self.std_ = params.std(0, correction=0) if len(params) > 1 else torch.zeros_like(self.mean_)

    def _sample(self, n: int, seed: int) -> Tensor:
        return self.mean_ + self.std_ * torch.randn(n, self.mean_.numel(), generator=cpu_generator(seed))
