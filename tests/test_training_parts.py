"""The trainer's pieces: weight-decay groups, schedule, accumulation, mixup, per-item seeding."""

import math
import random

import numpy as np
import pytest
import torch

from classifiers.data import EpochSampler, item_seed
from classifiers.mixup import MixupCutmix
from classifiers.models import UnknownModelError, check_model_name, create_classifier
from classifiers.optim import build_optimizer, build_scheduler
from classifiers.trainer import accumulation_steps


def recipe_and_model(name: str) -> tuple[dict, dict]:
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / f"configs/recipe/{name}.yaml").recipe)
    model_name = OmegaConf.load(ROOT / f"configs/recipe/{name}.yaml").defaults[0]["/model"]
    return recipe, OmegaConf.to_container(OmegaConf.load(ROOT / f"configs/model/{model_name}.yaml"))


@pytest.mark.parametrize("recipe_name", ["cpu", "cpu_convnext", "paper"])
def test_weight_decay_groups_are_the_two_dimensional_parameters_of_each_recipes_model(recipe_name):
    """timm's groups (no decay on ndim <= 1, *.bias, the model's no_weight_decay()) are the sets of the rule
    before timm: decay exactly the parameters of two or more dimensions."""
    recipe, model_cfg = recipe_and_model(recipe_name)
    model = create_classifier(model_cfg["name"], 3, kwargs=model_cfg["kwargs"])
    opt = build_optimizer(model, recipe["lr"], recipe["weight_decay"], recipe["betas"], recipe["eps"])
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == tuple(recipe["betas"])
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == recipe["weight_decay"] for p in g["params"]}
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decay == {id(p) for p in model.parameters() if p.ndim >= 2}
    assert no_decay == {id(p) for p in model.parameters() if p.ndim < 2}
    assert all(g["lr"] == recipe["lr"] for g in opt.param_groups)


def test_no_weight_decay_on_one_dimensional_parameters_and_stacked_ones():
    model = create_classifier("convnext_atto", 3, kwargs={"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]})
    # layer scale is 1-D and starts at the published 1e-6
    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert gammas and all(torch.allclose(g, torch.full_like(g, 1e-6)) for g in gammas)
    stacked = [torch.zeros(5, 4, 3, requires_grad=True), torch.zeros(5, 4, requires_grad=True)]  # 5 models
    opt = build_optimizer(stacked, 1e-3, 0.3, batch_dims=1)
    by_decay = {g["weight_decay"]: [id(p) for p in g["params"]] for g in opt.param_groups}
    assert by_decay == {0.3: [id(stacked[0])], 0.0: [id(stacked[1])]}


def closed_form_lr(k: int, total: int, warmup: int, base: float, floor: float) -> float:
    """The schedule as specified (paper: linear warmup, per-step cosine to min_lr), written out."""
    if k < warmup:
        return base * k / warmup
    progress = min(1.0, (k - warmup) / max(1, total - warmup))
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("recipe_name, steps_per_epoch", [("cpu", 29), ("paper", 245), ("sentence_t5", 7)])
def test_lr_sequence_is_linear_warmup_then_cosine_to_min_lr(recipe_name, steps_per_epoch):
    """timm's CosineLRScheduler, stepped per update, gives the closed form at every update to 1e-9. cpu: 1,800
    training images in batches of 64; paper: 1M images in effective batches of 4096."""
    recipe, _ = recipe_and_model(recipe_name)
    total = steps_per_epoch * recipe["epochs"]
    warmup = int(float(recipe["warmup_epochs"]) * steps_per_epoch)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, recipe["lr"], recipe["weight_decay"], recipe["betas"], recipe["eps"])
    scheduler = build_scheduler(opt, total, warmup, recipe["min_lr"])
    got = []
    for k in range(total + 3):  # the lr update k uses; after the last update it stays at min_lr
        got.append([g["lr"] for g in opt.param_groups])
        scheduler.step_update(k + 1)
    want = [closed_form_lr(k, total, warmup, recipe["lr"], recipe["min_lr"]) for k in range(total + 3)]
    assert max(abs(g - w) for row, w in zip(got, want) for g in row) < 1e-9
    assert got[0][0] == 0.0 and got[warmup][0] == pytest.approx(recipe["lr"]) and got[-1][0] == recipe["min_lr"]


def test_paper_convnext_tiny_has_published_shape():
    model = create_classifier("convnext_tiny", 3)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(27.8e6, rel=0.01)
    assert model.head.fc.out_features == 3
    assert [len(s.blocks) for s in model.stages] == [3, 3, 9, 3]


def test_unknown_model_lists_alternatives():
    with pytest.raises(UnknownModelError, match="convnext"):
        check_model_name("convnext_nonexistent")


def test_accumulation_matches_published_effective_batch():
    assert accumulation_steps(4096, 128, 8) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(4096, 100, 8)


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The closed form: targets s/K off the label and 1 - s + s/K on it, against log-softmax, batch mean."""
    k = logits.shape[1]
    targets = torch.full_like(logits, smoothing / k)
    targets[torch.arange(len(labels)), labels] += 1 - smoothing
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


def test_mixup_off_is_the_plain_label_smoothed_cross_entropy():
    x, y = torch.randn(7, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    off = MixupCutmix(3, 0.0, 0.0, 0.0, 0.5, 0.1)  # the cpu recipe's mixup block
    out, targets = off(x.clone(), y, (0, 7, 0, 0))
    assert torch.equal(out, x) and torch.equal(targets, y)
    logits = torch.randn(7, 3)
    assert off.loss(logits, targets).item() == pytest.approx(smoothed_cross_entropy(logits, y, 0.1).item(), abs=1e-6)


def test_mixup_on_odd_batches_mixes_the_even_front_and_keeps_the_last_sample():
    """timm's Mixup needs an even batch; a batch of 7 mixes its first 6 (partners 5-i) and keeps the 7th."""
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    cut = MixupCutmix(3, 0.0, 1.0, 1.0, 0.5, 0.0)  # cutmix only, no smoothing: targets are kept areas
    xc = torch.arange(7.0)[:, None, None, None].expand(7, 1, 16, 16).contiguous()
    numpy_state = np.random.get_state()[1].copy()
    outc, tc = cut(xc.clone(), y, (0, 7, 3, 0))
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # numpy's global generator left as it was
    assert torch.allclose(tc.sum(1), torch.ones(7))
    assert torch.equal(outc[6], xc[6]) and torch.equal(tc[6], torch.tensor([1.0, 0.0, 0.0]))
    mixed = 0
    for i in range(6):
        own = (outc[i] == i).float().mean()
        assert set(outc[i].unique().tolist()) <= {float(i), float(5 - i)}  # its own pixels or its partner's
        if y[i] != y[5 - i]:
            assert tc[i, y[i]] == pytest.approx(own.item()) and tc[i, y[5 - i]] == pytest.approx(1 - own.item())
        mixed += own < 1
    assert mixed > 0
    again, t_again = cut(xc.clone(), y, (0, 7, 3, 0))
    other, _ = cut(xc.clone(), y, (0, 7, 4, 0))
    assert torch.equal(again, outc) and torch.equal(t_again, tc) and not torch.equal(other, outc)  # seeded per step
    one, t_one = cut(xc[:1].clone(), y[:1], (0, 7, 3, 0))  # a batch of one: nothing to mix with
    assert torch.equal(one, xc[:1]) and torch.equal(t_one, torch.tensor([[1.0, 0.0, 0.0]]))


def test_mixup_on_uses_soft_target_cross_entropy_and_mixes_feature_vectors_without_cutmix():
    y = torch.tensor([0, 1, 2, 1])
    mix = MixupCutmix(3, 0.8, 1.0, 1.0, 0.5, 0.1)
    vectors = torch.stack([torch.full((5,), float(i)) for i in range(4)])
    out, targets = mix(vectors.clone(), y, (1, 7, 0, 0))
    lam = targets[:, 0].new_tensor([(out[i, 0] - (3 - i)) / (2 * i - 3) for i in range(4)])  # x_i = l x_i + (1-l) x_3-i
    assert torch.allclose(out, out[:, :1].expand(4, 5))  # a whole-vector blend, never a pasted box
    assert ((lam > 0) & (lam <= 1)).all() and torch.allclose(targets.sum(1), torch.ones(4))
    logits = torch.randn(4, 3)
    want = -(targets * logits.log_softmax(-1)).sum(-1).mean()
    assert mix.loss(logits, targets).item() == pytest.approx(want.item(), abs=1e-6)
    with pytest.raises(ValueError, match="token ids"):
        mix(torch.zeros(4, 6, dtype=torch.long), y, (1, 7, 0, 0))


def test_epoch_sampler_and_item_seeds_are_deterministic():
    s = EpochSampler(10, seed=1, shuffle=True)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(3)
    assert list(s) == a and all(e == 3 for _, e in a)
    s.set_epoch(4)
    assert [i for i, _ in s] != [i for i, _ in a]
    assert item_seed(0, 1, 2, 3) == item_seed(0, 1, 2, 3) != item_seed(0, 1, 2, 4)


def test_pipeline_normalises_after_the_tensor_stage():
    """An hpf output is min-max scaled; normalising before it would be undone."""
    from PIL import Image

    from classifiers.augment import eval_augment, normalizer
    from classifiers.data import ImageDataset
    from transforms.registry import create_transform

    recipe = {"image_size": 32, "eval_resize": 32, "groups": {"b": {"normalize": True}}}
    rng = np.random.default_rng(0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/x.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        hpf = create_transform("hpf")
        ds = ImageDataset([path], [0], eval_augment(recipe, "b"), hpf, 0, 2, 32, normalize=normalizer(recipe, "b"))
        got = ds[0]["image"]
        x = eval_augment(recipe, "b")(Image.open(path).convert("RGB"))
        want = normalizer(recipe, "b")(hpf.apply_tensor(x, torch.Generator()))
    assert torch.allclose(got, want)
    assert got.min() < -1.5  # normalised: a [0, 1] image with min 0 maps below -1.8 in every channel


def test_recipe_normalize_overrides_depart_from_the_group_for_one_transform():
    from classifiers.augment import normalizer

    recipe = {"groups": {"b": {"normalize": True}}, "normalize_overrides": {"hog": False}}
    assert normalizer(recipe, "b", "hpf") is not None
    assert normalizer(recipe, "b", "hog") is None
    assert normalizer({"groups": {"b": {"normalize": False}}, "normalize_overrides": {"x": True}}, "b", "x") is not None
    assert normalizer({"groups": {"b": {"normalize": True}}}, "b", "hog") is not None


def test_string_column_packs_strings_without_python_objects_and_gives_them_back():
    from bias.core.strings import StringColumn

    strings = ["/data/a/0001.jpg", "", "tar:12:345:/d/é 00000.tar", "x" * 1000]
    col = StringColumn(strings)
    assert len(col) == 4 and list(col) == strings and col[-1] == strings[-1]
    assert all(a.dtype != object for a in (col._data, col._offsets))
    with pytest.raises(IndexError):
        col[4]
    assert len(StringColumn([])) == 0


def test_paper_randaugment_survives_posterize_to_zero_bits():
    """m9 mstd0.5 inc1 reaches magnitude 10, i.e. posterize to 0 bits, which Pillow 13 rejects."""

    from omegaconf import OmegaConf
    from PIL import Image

    from classifiers.augment import _posterize, train_augment
    from tests.conftest import ROOT

    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/paper.yaml").recipe)
    recipe["image_size"] = 32
    augment = train_augment(recipe, "a")
    image = Image.new("RGB", (40, 40), (200, 120, 30))
    random.seed(0)
    for _ in range(400):  # P(posterize at magnitude 10 in one call) is about 2/16 x 2.3%: ~1 hit per 35 calls
        assert augment(image).shape == (3, 32, 32)
    assert _posterize(image, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert _posterize(image, 1).getpixel((0, 0)) == (128, 0, 0)


def test_text_batches_carry_tokens_under_their_own_key_and_images_under_image():
    """A text batch's model input travels under "tokens", an image batch's under "image"; the trainer reads
    either through `model_input`, and a sample with both (or neither) is an error, not a silent pick."""
    from classifiers.data import collate, model_input
    from classifiers.text import TextDataset

    class Tokenizer:
        def __call__(self, text, max_length, truncation, padding):
            ids = [len(w) for w in text.split()][:max_length]
            return {"input_ids": ids + [0] * (max_length - len(ids)),
                    "attention_mask": [1] * len(ids) + [0] * (max_length - len(ids))}

    texts = TextDataset(["a bb ccc", None], [0, 1], Tokenizer(), 4, reasons={1: "failed"})
    batch = collate([texts[0], texts[1]])
    assert "image" not in batch and batch["tokens"].shape == (2, 2, 4)
    assert model_input(batch)[0, 0].tolist() == [1, 2, 3, 0] and batch["ok"].tolist() == [True, False]
    images = collate([{"image": torch.zeros(3, 2, 2), "label": 0, "index": 0, "ok": True, "reason": "", "path": "p"}])
    assert model_input(images).shape == (1, 3, 2, 2)
    with pytest.raises(KeyError, match="exactly one"):
        model_input({"image": 1, "tokens": 2})


def test_the_shift_crop_keeps_the_eval_scale_so_one_pixel_lines_survive_exactly():
    """`crop: shift` (recipe.groups.X.crop) takes the training view at the evaluation's scale: for a 64-px image
    with eval_resize 64 every training view is an exact 56 x 56 window of the pixels, one-pixel lines included;
    the random-resized crop resamples them into grey smears. The window moves with the per-sample seed."""

    import numpy as np
    from PIL import Image

    from classifiers.augment import eval_augment, train_augment

    recipe = {"image_size": 56, "eval_resize": 64, "crop_scale": [0.35, 1.0], "crop_ratio": [0.75, 1.3333333],
              "groups": {"c": {"hflip": False, "normalize": False, "crop": "shift"},
                         "r": {"hflip": False, "normalize": False}}}
    pixels = np.zeros((64, 64), np.uint8)
    pixels[::7, :] = 255  # one-pixel horizontal lines
    pixels[:, 5::9] = 255
    image = Image.fromarray(pixels).convert("RGB")
    shift = train_augment(recipe, "c")
    corners = set()
    for seed in range(40):
        random.seed(seed)
        view = (shift(image)[0].numpy() * 255).round().astype(np.uint8)
        hits = [(t, left) for t in range(9) for left in range(9) if np.array_equal(view, pixels[t:t + 56, left:left + 56])]
        assert len(hits) >= 1, "a shift-crop view is not an exact window of the image"
        corners.add(hits[0])
        assert set(np.unique(view)) == {0, 255}  # no resampled grey
    assert len(corners) > 10
    centre = (eval_augment(recipe, "c")(image)[0].numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(centre, pixels[4:60, 4:60])
    random.seed(0)
    resized = (train_augment(recipe, "r")(image)[0].numpy() * 255).round().astype(np.uint8)
    assert len(np.unique(resized)) > 2  # the default random-resized crop does resample
    recipe["groups"]["c"]["crop"] = "zoom"
    with pytest.raises(ValueError, match="'resized' or 'shift'"):
        train_augment(recipe, "c")


def test_a_chart_transform_is_seen_whole_so_the_tails_of_the_sorted_colours_survive():
    """`color_hist` declares `view = "whole"`: its sorted-colour chart reaches the classifier whole (resized to
    image_size), in training and evaluation alike, whatever the group's crop. Known answer: a white image with
    2% black ink; the chart's first rows hold the ink, and the group's centre crop (64 -> 56) cut all of it."""

    from omegaconf import OmegaConf
    from PIL import Image

    from classifiers.augment import eval_augment, train_augment
    from tests.conftest import ROOT
    from transforms.classical.colour_hist import ColourHistogramImage

    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/cpu.yaml").recipe)
    assert ColourHistogramImage.view == "whole" and ColourHistogramImage.augment_group == "c"
    image = np.full((64, 64, 3), 255, np.uint8)
    image.reshape(-1, 3)[:82] = 0  # 82 of 4,096 pixels: 2% ink
    chart = Image.fromarray(ColourHistogramImage(size=64).apply_image(image))
    assert np.asarray(chart)[0, :64].max() == 0  # the darkest quantiles fill the first row
    cropped = eval_augment(recipe, "c")(chart)  # the group's view: shorter side 64, centre 56
    assert cropped.min() > 0.99  # no ink left: the crop cut the first 4 rows
    views = [eval_augment(recipe, "c", "whole")]
    for seed in range(5):
        random.seed(seed)
        views.append(train_augment(recipe, "c", "whole"))
    for view in views:
        x = view(chart)
        assert x.shape == (3, 56, 56)
        ink = (x.mean(0) < 0.5).float().mean().item()
        assert 0.01 < ink < 0.03  # the ink's share survives the resize, in every view
        assert torch.equal(x, views[0](chart))  # deterministic: no crop, no flip
    with pytest.raises(ValueError, match="view must be one of"):
        eval_augment(recipe, "c", "zoom")


def test_the_run_hash_names_a_whole_view_so_a_cropped_colour_run_is_not_reused():
    """Run folders made before color_hist was seen whole hold cropped results: the config hash differs."""
    from omegaconf import OmegaConf

    from bias.experiment.run import config_hash, experiment_config

    assert experiment_config(OmegaConf.create({"transform": {"name": "color_hist"}}))["transform_view"] == "whole"
    assert "transform_view" not in experiment_config(OmegaConf.create({"transform": {"name": "canny"}}))
    import hashlib

    plain = OmegaConf.create({"transform": {"name": "canny"}})  # a scene transform's hash is what it always was
    assert config_hash(plain) == hashlib.sha1(b'{"transform": {"name": "canny"}}').hexdigest()[:8]


def test_epochs_scale_lengthens_one_transforms_run_in_proportion_to_recipe_epochs():
    """`recipe.epochs_scale: {name: factor}` multiplies the epochs of that transform's run only; a shorter
    `recipe.epochs` (a quick run, the known-answer budget) shortens it in proportion, never below warmup."""
    from bias.core.errors import ConfigError
    from bias.experiment.config import RecipeConfig
    from bias.experiment.run import recipe_for_transform

    recipe = {"epochs": 10, "warmup_epochs": 1, "epochs_scale": {"pixel_shuffle": 2.5}}
    assert recipe_for_transform(recipe, "pixel_shuffle")["epochs"] == 25
    assert recipe_for_transform(recipe, "canny") is recipe
    assert recipe_for_transform({**recipe, "epochs": 4}, "pixel_shuffle")["epochs"] == 10
    assert recipe_for_transform({**recipe, "epochs": 1, "epochs_scale": {"x": 0.1}}, "x")["epochs"] == 1
    assert recipe["epochs"] == 10  # not modified in place
    fields = RecipeConfig.model_fields
    assert "epochs_scale" in fields
    with pytest.raises((ConfigError, ValueError)):
        RecipeConfig.model_validate({**_cpu_recipe(), "epochs_scale": {"pixel_shuffle": -1}})


def _cpu_recipe() -> dict:
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    return OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/cpu.yaml").recipe)


def test_the_run_hash_holds_the_epochs_a_transform_trains_not_the_scale_table():
    """Adding `epochs_scale` for one transform leaves every other transform's run folder (and reuse) as it was;
    the scaled transform's run is the same experiment as plain `recipe.epochs` set to the scaled count."""
    from omegaconf import OmegaConf

    from bias.experiment.run import config_hash

    def cfg(name: str, epochs: int, scale: dict | None) -> OmegaConf:
        recipe = {"epochs": epochs, "warmup_epochs": 1, **({"epochs_scale": scale} if scale is not None else {})}
        return OmegaConf.create({"transform": {"name": name}, "recipe": recipe})

    assert config_hash(cfg("canny", 10, {"pixel_shuffle": 2})) == config_hash(cfg("canny", 10, None))
    assert config_hash(cfg("pixel_shuffle", 10, {"pixel_shuffle": 2})) == config_hash(cfg("pixel_shuffle", 20, None))
    assert config_hash(cfg("pixel_shuffle", 10, {"pixel_shuffle": 2})) != config_hash(cfg("pixel_shuffle", 10, None))


def test_view_overrides_show_the_random_pixel_shuffle_whole_under_the_cpu_recipe_only():
    """A bag of pixels loses nothing to a whole view and gains a fixed share of each colour: a random crop of it
    is a resampled subsample whose ink share depends on where the crop fell. recipe=paper keeps its crop."""
    from omegaconf import OmegaConf
    from PIL import Image

    from bias.core.errors import ConfigError
    from bias.experiment.config import RecipeConfig
    from classifiers.augment import train_augment, transform_view
    from tests.conftest import ROOT
    from transforms.classical.shuffle import PixelShuffle

    cpu = _cpu_recipe()
    paper = OmegaConf.to_container(OmegaConf.load(ROOT / "configs/recipe/paper.yaml").recipe)
    assert transform_view(cpu, "pixel_shuffle", PixelShuffle.view) == "whole"
    assert transform_view(paper, "pixel_shuffle", PixelShuffle.view) == "scene"
    assert transform_view(cpu, "patch_shuffle", "scene") == "scene"
    assert transform_view({"view_overrides": {"color_hist": "scene"}}, "color_hist", "whole") == "scene"
    with pytest.raises(ValueError, match="view must be one of"):
        transform_view({"view_overrides": {"x": "zoom"}}, "x", "scene")
    with pytest.raises((ConfigError, ValueError)):
        RecipeConfig.model_validate({**cpu, "view_overrides": {"pixel_shuffle": "zoom"}})

    image = np.full((64, 64, 3), 255, np.uint8)
    image[24:40, 16:48] = 0  # a glyph in the middle: 12.5% ink
    image = Image.fromarray(image)

    def ink_shares(view: str) -> list[float]:
        shares = []
        for seed in range(12):
            random.seed(seed)
            x = train_augment(cpu, "a", view)(image)
            shares.append((x.mean(0) < 0.5).float().mean().item())
        return shares

    whole, cropped = ink_shares("whole"), ink_shares("scene")
    assert max(whole) - min(whole) < 1e-6 and abs(whole[0] - 0.125) < 0.01  # the glyph's share, every epoch
    assert max(cropped) - min(cropped) > 0.05  # the crop's share wanders with the crop


def test_the_run_hash_names_an_overridden_view_and_leaves_other_rows_alone():
    from omegaconf import OmegaConf

    from bias.experiment.run import config_hash, experiment_config

    def cfg(name: str, overrides: dict | None) -> OmegaConf:
        recipe = {"epochs": 10, **({"view_overrides": overrides} if overrides is not None else {})}
        return OmegaConf.create({"transform": {"name": name}, "recipe": recipe})

    whole = {"pixel_shuffle": "whole"}
    assert experiment_config(cfg("pixel_shuffle", whole))["transform_view"] == "whole"
    assert "view_overrides" not in experiment_config(cfg("pixel_shuffle", whole))["recipe"]
    assert config_hash(cfg("canny", whole)) == config_hash(cfg("canny", None))  # every other row is reused
    assert config_hash(cfg("pixel_shuffle", whole)) != config_hash(cfg("pixel_shuffle", None))
    assert config_hash(cfg("color_hist", {"color_hist": "scene"})) != config_hash(cfg("color_hist", None))
