"""Model zoos: flatten order, storage round trip, vectorised == single training, tiny zoos on every task."""

from __future__ import annotations

import json

import pytest
import torch

from memorization.zoo import ParamSpec, Zoo, ZooFileError, build_zoo, get_task, load_zoo_config
from memorization.zoo.archs import build_arch, init_params
from memorization.zoo.training import ZooRecipe, train_single, train_vectorised

TINY_MNIST1D = {"num_samples": 600}
TINY_RECIPE = {"epochs": 3, "batch_size": 32, "lr": 3e-3}


def test_hyperrep_cnn_has_the_published_parameter_count_and_flatten_order():
    model = build_arch({"name": "hyperrep_cnn"}, (1, 28, 28), 10)
    spec = ParamSpec.from_module(model)
    assert spec.numel() == 2464  # conv 1->8 k5, 8->6 k5, 6->4 k2, fc 36->20, fc 20->10
    assert spec.names == list(model.state_dict())
    flat = spec.flatten(model.state_dict())
    assert torch.equal(flat[:200], model.features[0].weight.reshape(-1))  # first: conv1 weight, row-major
    assert torch.equal(flat[-10:], model.fc2.bias)
    batch = torch.stack([flat, 2 * flat])
    back = spec.unflatten(batch)
    assert back["fc2.weight"].shape == (2, 10, 20) and torch.equal(back["fc2.weight"][1], 2 * model.fc2.weight)
    assert torch.equal(spec.flatten(back), batch)


def _hand_zoo(n=5, n_test=13, subset=False):
    g = torch.Generator().manual_seed(0)
    model = build_arch({"name": "mlp", "hidden": [4]}, (1, 40), 10)
    full_spec = ParamSpec.from_module(model)
    spec = ParamSpec.from_module(model, ["layers.1.weight", "layers.1.bias"]) if subset else full_spec
    meta = {"model_id": list(range(n)), "run": [0] * n, "seed": [7] * n, "step": list(range(n)),
            "accuracy": [0.5 + 0.01 * i for i in range(n)], "loss": [1.0] * n, "regime": ["steps"] * n}
    return Zoo("mnist1d", {"name": "mlp", "hidden": [4]}, spec, torch.randn(n, spec.numel(), generator=g), meta,
               torch.rand(n, n_test, generator=g) < 0.4, {"regime": "steps", "note": [1, 2]},
               torch.randn(full_spec.numel(), generator=g) if subset else None, full_spec if subset else None,
               {"num_samples": 600})


@pytest.mark.parametrize("subset", [False, True])
def test_zoo_save_load_round_trip(tmp_path, subset):
    zoo = _hand_zoo(subset=subset)
    path = zoo.save(tmp_path / "z.safetensors")
    back = Zoo.load(path)
    assert torch.equal(back.params, zoo.params) and torch.equal(back.error_masks, zoo.error_masks)
    assert back.meta == zoo.meta and back.config == zoo.config and back.arch == zoo.arch
    assert back.spec == zoo.spec and back.task_kwargs == zoo.task_kwargs and len(back) == 5 and back.n_test == 13
    if subset:
        assert torch.equal(back.base, zoo.base) and back.base_spec == zoo.base_spec
        full = back.full_params()
        a, b = back.base_spec.offsets()["layers.1.weight"]
        assert torch.equal(full[:, a:b], zoo.params[:, :40]) and torch.equal(full[:, :a], zoo.base[:a].expand(5, -1))


def test_zoo_load_reports_broken_files(tmp_path):
    path = _hand_zoo().save(tmp_path / "z.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ZooFileError, match="rebuild"):
        Zoo.load(path)
    with pytest.raises(FileNotFoundError, match="build_zoo"):
        Zoo.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("arch", [{"name": "mlp", "hidden": [16, 8]}, {"name": "hyperrep_cnn"}])
def test_vectorised_training_equals_single_model_training(arch):
    task = get_task("mnist1d", **TINY_MNIST1D)
    recipe = ZooRecipe.from_mapping(TINY_RECIPE)
    seeds = [11, 5, 2024]
    result = train_vectorised(task, arch, seeds, recipe, progress=False)
    alone = train_single(task, arch, 5, recipe)
    start = init_params(arch, task.input_shape, task.num_classes, 5)
    assert (alone - start).abs().max() > 1e-2  # it trained
    torch.testing.assert_close(result.params[-1, 1], alone, atol=2e-5, rtol=1e-4)
    assert (result.params[-1, 0] - alone).abs().max() > 1e-2  # a different seed is a different model


def test_checkpoints_per_run_do_not_change_the_final_weights():
    kwargs = dict(task="mnist1d", arch={"name": "mlp", "hidden": [8]}, n_models=3, seed=1, task_kwargs=TINY_MNIST1D,
                  recipe=TINY_RECIPE, device="cpu", progress=False)
    one = build_zoo(**kwargs)
    three = build_zoo(**kwargs, checkpoints_per_run=3)
    assert len(three) == 9 and three.meta["run"] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert three.meta["step"][:3] == [10, 20, 30]  # 10 steps per epoch (300 train / batch 32)
    torch.testing.assert_close(three.params[2::3], one.params, atol=0, rtol=0)
    assert one.meta["seed"] == three.meta["seed"][::3] and len(set(one.meta["seed"])) == 3


TASK_CASES = [
    ("mnist1d", {"name": "mlp", "hidden": [32]}, TINY_MNIST1D, {"epochs": 15, "batch_size": 32, "lr": 1e-2}, 0.1),
    ("digits", {"name": "mlp", "hidden": [16]}, {}, {"epochs": 4, "batch_size": 32, "lr": 1e-2}, 0.1),
    ("digits", {"name": "hyperrep_cnn"}, {"image_size": 28}, {"epochs": 6, "batch_size": 32, "lr": 1e-2}, 0.1),
    ("planted", {"name": "mlp", "hidden": [16]}, {"n_per_dataset": 60, "image_size": 16},
     {"epochs": 10, "batch_size": 30, "lr": 3e-3}, 1 / 3),
]


@pytest.mark.parametrize("task,arch,task_kwargs,recipe,chance", TASK_CASES, ids=lambda c: str(c)[:20])
def test_tiny_zoo_beats_chance_and_masks_agree_with_accuracy(tmp_path, task, arch, task_kwargs, recipe, chance):
    if task == "planted":
        task_kwargs = {**task_kwargs, "cache_dir": str(tmp_path / "cache")}
    zoo = build_zoo(task, arch, "runs", 3, seed=0, out=tmp_path / "zoo.safetensors", task_kwargs=task_kwargs,
                    recipe=recipe, device="cpu", progress=False)
    acc = zoo.accuracy
    assert (acc > chance + 0.15).all(), f"{task}/{arch['name']}: accuracies {acc.tolist()} vs chance {chance}"
    torch.testing.assert_close(1 - zoo.error_masks.float().mean(1), acc)
    assert len(set(map(tuple, zoo.error_masks.int().tolist()))) == 3  # different seeds err on different samples
    acc2, masks2 = zoo.evaluate(zoo.params, chunk=2)
    assert torch.equal(masks2, zoo.error_masks) and torch.allclose(acc2, acc)
    t = zoo.get_task()
    assert zoo.config["task_kwargs"] == task_kwargs and t.info["n_test"] == zoo.n_test


def test_task_split_is_seeded_and_recorded():
    a = get_task("digits", split_seed=3)
    b = get_task("digits", split_seed=3, test_fraction=0.5)
    c = get_task("digits", split_seed=4)
    assert a.info["test_index_sha"] == b.info["test_index_sha"] != c.info["test_index_sha"]
    assert a.n_test + a.info["n_train"] == 1797 and abs(a.n_test - 1797 / 2) < 10
    assert torch.bincount(a.y_test).min() >= 85  # stratified


def test_build_zoo_reuses_matching_file_and_protects_others(tmp_path):
    out = tmp_path / "z.safetensors"
    kwargs = dict(task="mnist1d", arch={"name": "mlp", "hidden": [4]}, n_models=2, seed=0, out=out,
                  task_kwargs=TINY_MNIST1D, recipe={"epochs": 1}, device="cpu", progress=False)
    first = build_zoo(**kwargs)
    stamp = out.stat().st_mtime_ns
    again = build_zoo(**kwargs)
    assert out.stat().st_mtime_ns == stamp and torch.equal(again.params, first.params)
    assert json.loads(json.dumps(Zoo.read_header(out)["config"])) == first.config
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_zoo(**{**kwargs, "seed": 1})
    other = build_zoo(**{**kwargs, "seed": 1}, overwrite=True)
    assert not torch.equal(other.params, first.params)


def test_steps_regime_trains_only_the_subset_one_checkpoint_per_step():
    subset = ["layers.1.weight", "layers.1.bias"]
    zoo = build_zoo("mnist1d", {"name": "mlp", "hidden": [8]}, "steps", n_models=6, seed=0, task_kwargs=TINY_MNIST1D,
                    recipe={"epochs": 15, "batch_size": 32, "lr": 1e-2}, subset=subset, device="cpu", progress=False)
    assert zoo.spec.names == subset and zoo.params.shape == (6, 8 * 10 + 10) and zoo.base is not None
    assert zoo.meta["step"] == [151, 152, 153, 154, 155, 156] and zoo.meta["regime"] == ["steps"] * 6
    steps = (zoo.params[1:] - zoo.params[:-1]).norm(dim=1)
    assert (steps > 0).all()
    full = zoo.full_params()
    a, _ = zoo.base_spec.offsets()["layers.1.weight"]
    assert torch.equal(full[:, :a], zoo.base[:a].expand(6, -1))  # the first layer stays frozen at the base
    acc, masks = zoo.evaluate(zoo.params)
    assert torch.equal(masks, zoo.error_masks) and (acc > 0.2).all()


def test_zoo_configs_load_for_both_regimes():
    for name in ("mnist1d_mlp", "mnist1d_cnn", "digits_mlp", "digits_cnn", "planted_mlp", "planted_cnn"):
        runs = load_zoo_config(name, "runs")
        steps = load_zoo_config(name, "steps")
        assert runs["regime"] == "runs" and runs["n_models"] >= 100
        assert steps["regime"] == "steps" and steps["n_models"] == 300 and steps["subset"]
        kw = runs.get("task_kwargs", {})
        shape = {"mnist1d": (1, 40), "digits": (1, kw.get("image_size", 8), kw.get("image_size", 8)),
                 "planted": (3, kw.get("image_size", 16), kw.get("image_size", 16))}[runs["task"]]
        spec = ParamSpec.from_module(build_arch(runs["arch"], shape, 10))
        assert set(steps["subset"]) <= set(spec.names), (name, steps["subset"])
    with pytest.raises(FileNotFoundError, match="known"):
        load_zoo_config("nope")
