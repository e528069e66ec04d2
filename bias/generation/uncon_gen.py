"""`uncon_gen`: one unconditional DiT per dataset; its samples are the dataset that is classified.

    python scripts/uncon_gen.py data=webdataset ...          # train + sample, one folder of samples per dataset
    python scripts/classify.py data=folders data.paths='{...}' # the command it prints: classify the samples

For each dataset of the `data` config, on the training part of its seeded split (`data.per_dataset`
images; the val part is never seen by the generator):

1. the images are encoded once into the VAE's latents (`bias.generation.latents`, through the batched
   runner, cached under ``<cache>/latents/``);
2. a DiT is trained on them (`bias.generation.train`; checkpointed, resumable);
3. ``sample.n`` samples are drawn from its EMA weights with ``sample.steps`` DDPM steps and decoded, each
   from its own seed (`derive_seed(seed, "uncon_gen:sample:<dataset>:<i>")`), and written as PNGs; a rerun
   writes only the missing ones.

The run folder (``out``, default ``runs/uncon_gen/<data.name>/<config hash>/``)::

    experiment.json, config.yaml        the configuration (a rerun with another one into the same folder is refused)
    <dataset>/checkpoints/checkpoint.pt the training state (weights, EMA, optimizer, step, losses)
    <dataset>/history.json              the loss of every step, steps/s, where it resumed
    <dataset>/training_curve.png        the loss curve
    <dataset>/grids/step<k>.png         sample grids of the EMA model during training and at the end
    <dataset>/dit_ema/                  the EMA weights as a diffusers model folder
    <dataset>/samples/<i>.png           the samples; <dataset>/samples.json when they are all there
    generated.json                      the sample folders and the classify command
    tensorboard/                        the loss curves

`datasets=[a]` trains and samples only those datasets (one job per dataset, into the same folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bias.core.distributed import use_cpu
from bias.core.errors import ConfigError
from bias.core.io import write_bytes_atomic, write_json
from bias.core.progress import progress_bar
from bias.core.seeding import derive_seed
from bias.data.sources import resolve_sources
from bias.data.split import index_datasets, make_split
from bias.generation.diffusion import DERIVED_DIT_KEYS, Diffusion, build_dit, make_scheduler, sample_latents
from bias.generation.latents import (
    LatentEncoder,
    LatentSet,
    check_vae_ready,
    decode_latents,
    encode_latents,
    load_vae,
    vae_downsampling_factor,
)
from bias.generation.options import SampleOptions, TrainOptions, options_from
from bias.generation.train import train_dit
from bias.inference.store import encode_png

logger = logging.getLogger(__name__)
RUNTIME_KEYS = ("out", "cache_dir", "num_workers", "datasets", "print_config", "log_level")
#: called on every process after each checkpoint: `callback(dataset, step)`
DatasetStepCallback = Callable[[str, int], None]


class RunFolderError(ConfigError):
    """The run folder holds a run of another configuration."""


@dataclass(frozen=True)
class UnconGenConfig:
    seed: int
    image_size: int
    vae_weights: Any
    vae_arch: dict[str, Any] | None
    vae_batch_size: int
    dit_arch: dict[str, Any]
    learn_sigma: bool
    train: TrainOptions
    sample: SampleOptions
    datasets: list[str] | None

    @classmethod
    def from_config(cls, plain: Mapping[str, Any]) -> UnconGenConfig:
        vae = dict(plain.get("vae") or {})
        unknown = sorted(set(vae) - {"weights", "arch", "batch_size"})
        if unknown:
            raise ConfigError(f"vae.{unknown[0]}: not an option (they are weights, arch, batch_size)")
        dit = dict(plain.get("dit") or {})
        arch = dict(dit.get("arch") or {})
        derived = sorted(set(arch) & set(DERIVED_DIT_KEYS))
        if derived:
            raise ConfigError(f"dit.arch.{derived[0]}: follows from the VAE and image_size; leave it out")
        unknown = sorted(set(dit) - {"arch", "learn_sigma"})
        if unknown:
            raise ConfigError(f"dit.{unknown[0]}: not an option (they are arch, learn_sigma)")
        for key, value in (("seed", plain.get("seed", 0)), ("image_size", plain.get("image_size", 256)),
                           ("vae.batch_size", vae.get("batch_size", 32))):
            if isinstance(value, bool) or not isinstance(value, int) or (key != "seed" and value < 1):
                raise ConfigError(f"{key}: expected {'an' if key == 'seed' else 'a positive'} integer, got {value!r}")
        if not isinstance(dit.get("learn_sigma", True), bool):
            raise ConfigError(f"dit.learn_sigma: expected true or false, got {dit.get('learn_sigma')!r}")
        datasets = plain.get("datasets")
        if datasets is not None and (not isinstance(datasets, (list, tuple)) or not datasets):
            raise ConfigError(f"datasets: expected null or a list of dataset names, got {datasets!r}")
        return cls(seed=int(plain.get("seed", 0)), image_size=int(plain.get("image_size", 256)),
                   vae_weights=vae.get("weights"), vae_arch=vae.get("arch"),
                   vae_batch_size=int(vae.get("batch_size", 32)), dit_arch=arch,
                   learn_sigma=bool(dit.get("learn_sigma", True)),
                   train=options_from(TrainOptions, plain.get("train"), "train"),
                   sample=options_from(SampleOptions, plain.get("sample"), "sample"),
                   datasets=None if datasets is None else [str(d) for d in datasets])


def experiment_config(plain: Mapping[str, Any]) -> dict[str, Any]:
    """What determines the results (not where files go, which datasets this job does, or how many workers)."""
    out = {k: v for k, v in plain.items() if k not in RUNTIME_KEYS and k != "hydra"}
    out["data"] = {k: v for k, v in dict(out.get("data") or {}).items() if k not in ("expected", "near_duplicates")}
    return out


def run_folder(plain: Mapping[str, Any]) -> Path:
    if plain.get("out"):
        return Path(plain["out"])
    digest = hashlib.sha1(json.dumps(experiment_config(plain), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / "uncon_gen" / str((plain.get("data") or {}).get("name", "data")) / digest


# --- figures ---------------------------------------------------------------------------------------------

def tile(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> one image, a near-square grid with 2 px white gaps."""
    n, h, w, _ = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = img
    return grid


def plot_training_curve(losses: Sequence[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss per step")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"mean of {window} steps")
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- sampling ----------------------------------------------------------------------------------------------

def sample_images(model: torch.nn.Module, vae: torch.nn.Module, seeds: Sequence[int], latent_shape: Sequence[int],
                  steps: int, learn_sigma: bool, device: torch.device) -> np.ndarray:
    """One decoded sample per seed: B x H x W x 3 uint8."""
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    was_training = model.training
    model.eval()
    latents = sample_latents(model, generators, latent_shape, steps, learn_sigma, device)
    model.train(was_training)
    return decode_latents(vae, latents)


def sample_seed(seed: int, dataset: str, i: int) -> int:
    return derive_seed(seed, f"uncon_gen:sample:{dataset}:{i}")


def write_samples(model: torch.nn.Module, vae: torch.nn.Module, folder: Path, dataset: str, config: UnconGenConfig,
                  latent_shape: Sequence[int], accelerator) -> int:
    """Write the missing samples `<folder>/<i>.png`, i < sample.n, split across processes; how many this process wrote."""
    opts = config.sample
    names = [folder / f"{i:07d}.png" for i in range(opts.n)]
    pending = [i for i, p in enumerate(names) if not p.exists()]
    mine = pending[accelerator.process_index::accelerator.num_processes]
    bar = progress_bar(total=len(mine), desc=f"{dataset}: sample", unit="img", disable=not accelerator.is_local_main_process)
    for start in range(0, len(mine), opts.batch_size):
        chunk = mine[start:start + opts.batch_size]
        images = sample_images(model, vae, [sample_seed(config.seed, dataset, i) for i in chunk], latent_shape,
                               opts.steps, config.learn_sigma, accelerator.device)
        for i, image in zip(chunk, images):
            write_bytes_atomic(names[i], encode_png(image))
        bar.update(len(chunk))
    bar.close()
    accelerator.wait_for_everyone()
    return len(mine)


def save_grid(model: torch.nn.Module, vae: torch.nn.Module, path: Path, dataset: str, config: UnconGenConfig,
              latent_shape: Sequence[int], device: torch.device) -> None:
    """A grid of `train.grid_size` samples, from the same seeds at every step (progress is comparable)."""
    seeds = [derive_seed(config.seed, f"uncon_gen:grid:{dataset}:{j}") for j in range(config.train.grid_size)]
    images = sample_images(model, vae, seeds, latent_shape, config.sample.steps, config.learn_sigma, device)
    write_bytes_atomic(path, encode_png(tile(images)))


# --- the study ---------------------------------------------------------------------------------------------

def classify_command(datasets: Mapping[str, Mapping[str, Any]], n: int) -> str:
    """The command that classifies the samples (folders by dataset, in label order)."""
    paths = ", ".join(f"{name}: {record['folder']}" for name, record in datasets.items())
    return (f"scripts/classify.py data=folders data.paths='{{{paths}}}' data.per_dataset=N data.val_per_dataset=M "
            f"(N + M <= {n})")


def _selected(names: Sequence[str], wanted: list[str] | None) -> list[str]:
    if wanted is None:
        return list(names)
    unknown = [d for d in wanted if d not in names]
    if unknown:
        raise ConfigError(f"datasets: {unknown} are not datasets of the data config; it has {list(names)}")
    return [d for d in names if d in wanted]


def _dit_init(config: UnconGenConfig, dataset: str, channels: int, size: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, f"uncon_gen:init:{dataset}"))
        try:
            return build_dit(config.dit_arch, channels, size, config.learn_sigma)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"dit.arch: not a DiTTransformer2DModel config ({err})") from err


def run_uncon_gen(cfg: Any, callbacks: Sequence[DatasetStepCallback] = ()) -> dict[str, Any]:
    """Train, sample and record one generator per dataset (see the module docstring); the `generated.json` content."""
    from accelerate import Accelerator
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    config = UnconGenConfig.from_config(plain)
    data = dict(plain["data"])
    sources = resolve_sources(data)
    for source in sources.values():
        source.check()
    selected = _selected(list(sources), config.datasets)
    cache_dir = Path(plain.get("cache_dir") or "cache")
    check_vae_ready(config.vae_weights, config.vae_arch, cache_dir)  # a missing VAE fails before any work
    vae = load_vae(config.vae_weights, config.vae_arch, cache_dir).eval().requires_grad_(False)
    factor = vae_downsampling_factor(vae.config)
    patch = int(config.dit_arch.get("patch_size", 2))
    if config.image_size % (factor * patch):
        raise ConfigError(f"image_size: {config.image_size} is not a multiple of the VAE's factor {factor} x the DiT's "
                          f"patch size {patch}")
    latent_shape = (int(vae.config.latent_channels), config.image_size // factor, config.image_size // factor)
    scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)

    out = run_folder(plain)
    expected = experiment_config(plain)
    saved = out / "experiment.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps(expected, default=str)):
        raise RunFolderError(f"{out} holds a generation run with a different configuration; choose another out=DIR "
                             "or delete that folder")
    accelerator = Accelerator(cpu=use_cpu(), mixed_precision=config.train.precision, log_with="tensorboard",
                              project_dir=str(out))
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(expected, saved)
        (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
        accelerator.init_trackers("tensorboard")
    accelerator.wait_for_everyone()
    vae.to(accelerator.device)

    with accelerator.main_process_first():
        indexes = index_datasets(sources, cache_dir, plain.get("num_workers"))
    per_dataset = data.get("per_dataset")
    split = make_split(indexes, None if per_dataset is None else int(per_dataset), int(data["val_per_dataset"]),
                       int(data.get("split_seed", 0)))
    labels = [split.names.index(d) for d in selected]
    chosen = np.flatnonzero(np.isin(split.train_labels, labels))
    encoder = LatentEncoder(config.vae_weights, config.vae_arch, config.image_size, latent_shape, config.train.flip,
                            config.vae_batch_size, cache_dir, device=str(accelerator.device))
    report = encode_latents(encoder, split.train_read[chosen], split.train_sha1[chosen], data.get("resize_shorter"),
                            accelerator, plain.get("num_workers"))
    store = encoder.store(data.get("resize_shorter"))
    diffusion = Diffusion(make_scheduler(config.learn_sigma), config.learn_sigma)

    summary: dict[str, Any] = {"datasets": {}, "latents": str(store.folder), "failed": report.failed}
    for name in selected:
        folder = out / name
        label = split.names.index(name)
        sha = split.train_sha1[split.train_labels == label]
        ok, _ = store.stored(sha, verify=False)
        done = folder / "samples.json"
        if done.exists() and json.loads(done.read_text()).get("n") == config.sample.n:
            if accelerator.is_local_main_process:
                logger.info("%s: reusing the finished generator and samples in %s", name, folder)
            summary["datasets"][name] = json.loads(done.read_text())
            continue
        model = _dit_init(config, name, latent_shape[0], latent_shape[1])
        latents = LatentSet(store, sha[ok], latent_shape, config.train.flip)
        grids = folder / "grids"

        def grid(step: int, ema: torch.nn.Module, grids: Path = grids, name: str = name) -> None:
            save_grid(ema, vae, grids / f"step{step:07d}.png", name, config, latent_shape, accelerator.device)

        steps_cbs = [lambda step, cb=cb, name=name: cb(name, step) for cb in callbacks]
        outcome, ema = train_dit(model, latents, diffusion, config.train, accelerator, folder,
                                 derive_seed(config.seed, f"uncon_gen:train:{name}"), scaling, steps_cbs, grid,
                                 log_prefix=f"{name}/")
        sampler = ema if config.sample.use_ema else accelerator.unwrap_model(model)
        trained_now = outcome.steps > outcome.resumed_from_step  # else keep the history of the run that trained it
        if accelerator.is_main_process:
            if trained_now or not (folder / "history.json").exists():
                write_json({"dataset": name, "n_train_images": int(len(latents)), "steps": outcome.steps,
                            "resumed_from_step": outcome.resumed_from_step,
                            "steps_per_s": round(outcome.steps_per_s, 4), "train_time_s": round(outcome.wall_time_s, 2),
                            "loss": outcome.losses}, folder / "history.json")
                plot_training_curve(outcome.losses, folder / "training_curve.png", f"uncon_gen: {name}")
            final = grids / f"step{outcome.steps:07d}.png"
            if not final.exists():
                grid(outcome.steps, ema)
            ema.save_pretrained(folder / "dit_ema")
        accelerator.wait_for_everyone()
        start = time.time()
        write_samples(sampler, vae, folder / "samples", name, config, latent_shape, accelerator)
        record = {"dataset": name, "n": config.sample.n, "folder": str((folder / "samples").resolve()),
                  "ddpm_steps": config.sample.steps, "use_ema": config.sample.use_ema,
                  "sample_time_s": round(time.time() - start, 2), "train_steps": outcome.steps,
                  "n_train_images": int(len(latents))}
        if accelerator.is_main_process:
            write_json(record, done)
        summary["datasets"][name] = record
        del model, ema, sampler
    if accelerator.is_main_process:
        previous = json.loads((out / "generated.json").read_text()) if (out / "generated.json").exists() else {}
        done_all = {**previous.get("datasets", {}), **summary["datasets"]}  # other jobs' datasets (datasets=[...])
        summary["datasets"] = {n: done_all[n] for n in split.names if n in done_all}
        summary["classify"] = classify_command(summary["datasets"], config.sample.n)
        write_json(summary, out / "generated.json")
        logger.info("uncon_gen: samples of %s in %s\n  classify them: %s", ", ".join(summary["datasets"]), out,
                    summary["classify"])
    accelerator.end_training()
    return summary
