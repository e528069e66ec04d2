"""VAE reconstruction: keep what a latent-diffusion autoencoder keeps (layout, objects, colours), lose fine detail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bias.core.errors import ConfigError
from transforms.neural.image_models import ImageModelTransform, check_size, resize_image, stack_fields
from transforms.registry import register_transform


def downsampling_factor(config: Mapping[str, Any]) -> int:
    """How much smaller than the image an AutoencoderKL's latent is: 2 per down block after the first."""
    return 2 ** (len(config["block_out_channels"]) - 1)


@register_transform("vae")
class VAEReconstruction(ImageModelTransform):
    """The image through a diffusers AutoencoderKL at ``size x size`` (posterior mode), resized back; HxWx3 uint8.

    Published: reconstruction through the latent-diffusion KL-f4 autoencoder at 256x256 (the mode of
    the posterior, no sampling), resized back to the original size; classified with augmentation
    group "a" (the reference pipeline: the output is a natural-looking image).

    The checkpoint differs from the study's: we know of no Hugging Face id of the KL-f4 autoencoder in
    diffusers format, so the default `weights` are ``stabilityai/sd-vae-ft-ema``, a KL-f8 autoencoder
    (4 latent channels; a 256x256 image becomes a 32x32x4 latent, where KL-f4 gives 64x64x3). An
    f8 latent holds a quarter as many positions, so it loses more fine detail than the published
    transform. To run the published one, convert the latent-diffusion ``kl-f4`` first-stage
    checkpoint to a diffusers AutoencoderKL folder (config: ``block_out_channels: [128, 256, 512]``,
    ``latent_channels: 3``, three ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``, ``layers_per_block: 2``)
    and pass its path as ``weights: DIR`` (``transform.weights=DIR``).

    The image is resized (stretched, as published) to ``size x size`` (area averaging when shrinking,
    bicubic when enlarging), scaled to [-1, 1], encoded, the posterior's mode decoded, clamped, and
    the reconstruction resized back to the image's size.
    """
    keeps = "what an autoencoder reconstruction keeps: layout, objects, colour, not fine detail"
    published = (
        'AutoencoderKL at 256x256, posterior mode, resized back (paper: latent-diffusion KL-f4); ours: '
        '`sd_vae_ft_ema` = `stabilityai/sd-vae-ft-ema`, KL-f8 (no diffusers KL-f4 id is known to us; a '
        'converted KL-f4 folder works with `transform.weights=/path/to/folder`)'
    )

    kind = "precomputed"
    augment_group = "a"
    family = "semantic"

    def __init__(self, weights: Any = "sd_vae_ft_ema", arch: Mapping[str, Any] | None = None, size: int = 256,
                 batch_size: int = 16, device: str = "auto", dtype: str = "auto") -> None:
        super().__init__(weights=weights, arch=arch, batch_size=batch_size, device=device, dtype=dtype)
        check_size(f"{self.name}: size", size)
        self.size = size

    def pretrained(self, folder: Path) -> torch.nn.Module:
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(folder)

    def from_arch(self, arch: Mapping[str, Any]) -> torch.nn.Module:
        from diffusers import AutoencoderKL

        try:
            return AutoencoderKL(**arch)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"transform (vae).arch: not an AutoencoderKL config ({err})") from err

    def load_model(self, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
        model = self.build()
        factor = downsampling_factor(model.config)
        if self.size % factor:
            raise ConfigError(f"transform (vae).size: {self.size} is not a multiple of the autoencoder's "
                              f"downsampling factor {factor}")
        return model

    def preprocessing(self) -> dict[str, Any]:
        """The published input (stretched to size x size, scaled to [-1, 1]) and the autoencoder's own config values
        that bear on it (diffusers' ``config.json``: its latent ``scaling_factor``, which a reconstruction cancels)."""
        import json

        path = self.weight_path(self._cache_root)
        config = json.loads((path / "config.json").read_text()) if path is not None and \
            (path / "config.json").is_file() else dict(self.arch or {})
        return {"from": "published (the study's reconstruction)", "size": self.size, "fit": "stretch",
                "range": [-1, 1], "scaling_factor": config.get("scaling_factor"),
                "sample_size": config.get("sample_size")}

    def preprocess(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        square = resize_image(image, (self.size, self.size))
        return {"pixels": torch.from_numpy(np.ascontiguousarray(square.transpose(2, 0, 1))),
                "size": torch.tensor(image.shape[:2], dtype=torch.int64)}

    def collate(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return stack_fields(items)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """B x 3 x size x size uint8 reconstructions."""
        x = batch["pixels"].float() / 127.5 - 1
        latent = self.model.encode(x).latent_dist.mode()
        y = self.model.decode(latent).sample.float().clamp(-1, 1)
        return ((y + 1) * 127.5).round().to(torch.uint8)

    def postprocess(self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
        return [{"image": resize_image(np.ascontiguousarray(y.transpose(1, 2, 0)), (int(h), int(w)))}
                for y, (h, w) in zip(outputs.cpu().numpy(), batch["size"].tolist())]
