"""Images to autoencoder latents and back: what the DiT trains on, and how its samples become images.

* `load_vae`: a diffusers `AutoencoderKL` from `weights` (published: ``stabilityai/sd-vae-ft-ema``, a
  Hugging Face id + revision or a local folder, resolved by `bias.inference.weights`), or with
  ``weights: null`` from `arch` with seeded random weights (tests and benchmarks).
* `encode_latents`: every training image, resized so that its shorter side is `size` and centre-cropped
  to ``size x size`` (as DiT prepares ImageNet), through the encoder once, by the batched runner
  (`bias.inference.runner.run_batched`: workers, batching, failures listed, resumable, split across
  processes). Stored per source SHA-1 as vector outputs of an `OutputStore` under
  ``<cache>/latents/<key>/``: the posterior's mean and standard deviation, of the image and (``flip``) of
  its mirror image, so that training draws a fresh posterior sample of a randomly flipped image each step
  without running the encoder again.
* `LatentSet`: those vectors of one dataset, read through memory maps (a million latents do not have to
  fit in memory).
* `decode_latents`: latents (scaled by the VAE's ``scaling_factor``, 0.18215 for sd-vae-ft-ema) to uint8 images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch

from bias.core.errors import ConfigError, MissingModelError
from bias.core.strings import sha1_array
from bias.inference.models import weight_source
from bias.inference.runner import RunReport, run_batched
from bias.inference.store import OutputSpec, OutputStore

LATENT_VERSION = 1
#: the seed of a randomly initialised VAE (every process builds the same one)
RANDOM_INIT_SEED = 0


def vae_downsampling_factor(config: Mapping[str, Any]) -> int:
    """How much smaller than the image an AutoencoderKL's latent is: 2 per down block after the first."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def vae_identity(weights: Any, arch: Mapping[str, Any] | None) -> dict[str, Any]:
    if weights is None:
        return {"random_init": True, "arch": dict(arch or {})}
    return weight_source(weights).identity()


def check_vae_ready(weights: Any, arch: Mapping[str, Any] | None, cache_root: str | os.PathLike) -> Path | None:
    """The VAE's folder (None: random weights from `arch`), or `MissingModelError` saying what to download."""
    if weights is None:
        if not isinstance(arch, Mapping):
            raise ConfigError("vae: weights is null but no arch is given; set vae.weights (published: "
                              "{hf: stabilityai/sd-vae-ft-ema}) or vae.arch={...} (random weights, tests only)")
        return None
    if arch is not None:
        raise ConfigError("vae: set either weights (a trained autoencoder) or arch (random weights), not both")
    source = weight_source(weights)
    path = source.resolve(cache_root)
    if not (path.is_dir() and (path / "config.json").is_file()):
        fix = (f"download it again: `hf download {source.hf} --revision {source.revision}`" if source.kind == "hf"
               else "point vae.weights at a diffusers AutoencoderKL folder")
        raise MissingModelError(f"vae.weights: {path} is not an AutoencoderKL folder (no config.json); {fix}")
    return path


def load_vae(weights: Any, arch: Mapping[str, Any] | None, cache_root: str | os.PathLike) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    path = check_vae_ready(weights, arch, cache_root)
    if path is not None:
        return AutoencoderKL.from_pretrained(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            return AutoencoderKL(**dict(arch))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"vae.arch: not an AutoencoderKL config ({err})") from err


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` (area averaging when shrinking, bicubic when enlarging), centre crop to size x size."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


class LatentEncoder:
    """The runner's model (`bias.inference.runner.BatchModel`) that stores each image's posterior (see the module)."""

    name = "latents"

    def __init__(self, vae_weights: Any, vae_arch: Mapping[str, Any] | None, size: int, latent_shape: Sequence[int],
                 flip: bool, batch_size: int, cache_root: str | os.PathLike, device: str = "auto") -> None:
        self.vae_weights, self.vae_arch, self.size, self.flip = vae_weights, vae_arch, size, flip
        self.latent_shape = tuple(int(v) for v in latent_shape)
        self.batch_size, self.device, self.cache_root = batch_size, device, cache_root
        dim = 2 * int(np.prod(self.latent_shape))
        self.outputs = {"latent": OutputSpec("vector", dim=dim)}
        if flip:
            self.outputs["latent_flipped"] = OutputSpec("vector", dim=dim)
        self._vae: torch.nn.Module | None = None

    def key(self) -> str:
        blob = json.dumps({"version": LATENT_VERSION, "vae": vae_identity(self.vae_weights, self.vae_arch),
                           "size": self.size, "flip": self.flip}, sort_keys=True, default=str)
        return f"vae{self.size}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def store(self, resize_shorter: int | None) -> OutputStore:
        tag = f"s{resize_shorter}" if resize_shorter else "orig"
        return OutputStore(Path(self.cache_root) / "latents" / f"{self.key()}-{tag}", self.outputs)

    # --- the runner's contract ----------------------------------------------------------------------------
    def runtime_device(self) -> str:
        return self.device

    def runtime_dtype(self, device: torch.device) -> torch.dtype:
        return torch.float32  # latents are stored in full precision

    def load(self, device: torch.device, dtype: torch.dtype) -> None:
        if self._vae is None:
            self._vae = load_vae(self.vae_weights, self.vae_arch, self.cache_root).to(device).eval()

    def unload(self) -> None:
        self._vae = None

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(centre_square(image, self.size).transpose(2, 0, 1).copy())

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(items))

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch.float() / 127.5 - 1
        views = {"latent": x} | ({"latent_flipped": x.flip(-1)} if self.flip else {})
        out = {}
        for name, view in views.items():
            dist = self._vae.encode(view).latent_dist
            out[name] = torch.cat([dist.mean.flatten(1), dist.std.flatten(1)], dim=1).float()
        return out

    def postprocess(self, outputs: Mapping[str, torch.Tensor], batch: torch.Tensor) -> list[dict[str, Any]]:
        arrays = {k: v.cpu().numpy() for k, v in outputs.items()}
        return [{k: v[i] for k, v in arrays.items()} for i in range(len(batch))]


def encode_latents(encoder: LatentEncoder, paths: Any, sha1s: np.ndarray, resize_shorter: int | None, state: Any,
                   num_workers: int | None) -> RunReport:
    """Fill the latent store for these sources, split across the processes of `state` (accelerate)."""
    from accelerate.utils import gather_object

    gather = (lambda obj: gather_object([obj])) if state.num_processes > 1 else None
    return run_batched(encoder, paths, sha1s, encoder.store(resize_shorter), resize_shorter=resize_shorter,
                       rank=state.process_index, world_size=state.num_processes, barrier=state.wait_for_everyone,
                       gather=gather, num_workers=num_workers, show_progress=state.is_local_main_process,
                       manifest={"vae": vae_identity(encoder.vae_weights, encoder.vae_arch), "size": encoder.size,
                                 "flip": encoder.flip, "latent_shape": list(encoder.latent_shape)})


class LatentSet:
    """The stored posteriors of a list of sources, by position; vectors are read through memory maps.

    The store keeps each vector output as shards ``vectors/<name>/<part>.npy`` with an index
    ``vectors/<name>.parquet`` (sha1, shard, row) (`bias.inference.store`).
    """

    def __init__(self, store: OutputStore, sha1s: np.ndarray, latent_shape: Sequence[int], flip: bool) -> None:
        self.store, self.latent_shape, self.flip = store, tuple(latent_shape), flip
        self.sha1 = sha1_array(sha1s)
        self._where = {name: self._locate(name) for name in (["latent", "latent_flipped"] if flip else ["latent"])}
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    def _locate(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        index = pq.read_table(self.store.folder / "vectors" / f"{name}.parquet", columns=["sha1", "shard", "row"])
        known = sha1_array(index["sha1"])
        order = np.argsort(known)
        pos = np.searchsorted(known[order], self.sha1)
        pos = np.minimum(pos, len(known) - 1)
        if len(known) == 0 or not np.array_equal(known[order][pos], self.sha1):
            raise ValueError(f"{self.store.folder}: some sources have no stored {name!r} (encode them first)")
        rows = order[pos]
        return index["shard"].to_numpy(zero_copy_only=False)[rows], index["row"].to_numpy()[rows]

    def __len__(self) -> int:
        return len(self.sha1)

    def _vectors(self, name: str, positions: np.ndarray) -> np.ndarray:
        shards, rows = self._where[name]
        out = np.empty((len(positions), 2 * int(np.prod(self.latent_shape))), dtype=np.float32)
        for i, p in enumerate(positions):
            key = (name, shards[p])
            if key not in self._maps:
                self._maps[key] = np.load(self.store.folder / "vectors" / name / f"{shards[p]}.npy", mmap_mode="r")
            out[i] = self._maps[key][rows[p]]
        return out

    def posterior(self, positions: np.ndarray, flipped: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the sources at `positions` (B x C x H x W), of the mirror image where `flipped`."""
        positions = np.asarray(positions, dtype=np.int64)
        vec = self._vectors("latent", positions)
        if flipped is not None and flipped.any():
            if not self.flip:
                raise ValueError("these latents were encoded without flips")
            sel = np.flatnonzero(flipped)
            vec[sel] = self._vectors("latent_flipped", positions[sel])
        half = vec.shape[1] // 2
        shape = (len(positions), *self.latent_shape)
        return torch.from_numpy(vec[:, :half].reshape(shape)), torch.from_numpy(vec[:, half:].reshape(shape))


@torch.no_grad()
def decode_latents(vae: torch.nn.Module, latents: torch.Tensor) -> np.ndarray:
    """Scaled latents (B x C x h x w) -> B x H x W x 3 uint8 images."""
    scale = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    images = vae.decode(latents.to(next(vae.parameters()).dtype) / scale).sample.float().clamp(-1, 1)
    return ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
