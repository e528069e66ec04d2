"""The memorization audit of user checkpoints: known answers on tiny trained MLPs, the round trip against the
study, streaming, loaders of every kind, and the errors raised before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bias.configs import CONFIG_DIR
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file, save_file

from memorization.audit.checkpoints import (
    CheckpointError,
    column_blocks,
    export_checkpoints,
    export_zoo,
    open_checkpoints,
)
from memorization.audit.run import run_audit
from memorization.metrics import min_l2, permute_hidden
from memorization.metrics.novelty import beyond_front, pareto_front, replica_rate
from memorization.metrics.similarity import streamed_min_l2, tensor_blocks
from memorization.report import INTERPOLATION, NOVEL, REPLICATION
from memorization.zoo.build import build_zoo
from memorization.zoo.spec import ParamSpec
from memorization.zoo.store import Zoo
from tests.conftest import run_cli

DIGITS = {"test_fraction": 0.5}
ZOO = dict(task="digits", arch={"name": "mlp", "hidden": [8]}, regime="runs", task_kwargs=DIGITS,
           recipe={"epochs": 8, "lr": 1e-2, "batch_size": 64}, device="cpu", progress=False)
SMALL = ["task.name=digits", "task.kwargs={test_fraction: 0.5}", "model.arch={name: mlp, hidden: [8]}",
         "baselines.num_samples=12", "baselines.average_k=4", "plots.tsne=false", "plots.boundary_grid=20",
         "progress=false"]


def audit_cfg(*overrides: str):
    with initialize_config_dir(str(CONFIG_DIR / "audit"), version_base=None):
        return compose("audit", list(overrides))


def audit(tmp: Path, train: Path, generated: Path, *extra: str) -> dict:
    return run_audit(audit_cfg(f"train={train}", f"generated={generated}", f"out={tmp / 'out'}", *SMALL, *extra))


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    """12 trained digits MLPs (64-8-10), and 8 more trained from other seeds; both exported as folders."""
    root = tmp_path_factory.mktemp("audit")
    train = build_zoo(n_models=12, seed=0, **ZOO)
    fresh = build_zoo(n_models=8, seed=1, **ZOO)
    export_checkpoints(train.params, train.spec, root / "train")
    return {"root": root, "train": train, "fresh": fresh, "train_dir": root / "train"}


def generated_folder(zoos, name: str, params: torch.Tensor) -> Path:
    return export_checkpoints(params, zoos["train"].spec, zoos["root"] / name)


# -- known answers ------------------------------------------------------------------------------------
def test_training_plus_tiny_noise_is_replication(zoos, tmp_path):
    train = zoos["train"].params
    gen = train + 1e-4 * torch.randn(train.shape, generator=torch.Generator().manual_seed(0))
    r = audit(tmp_path, zoos["train_dir"], generated_folder(zoos, "tiny_noise", gen))
    assert r["verdict"]["verdict"] == REPLICATION
    assert r["novelty"]["replica_rate"]["rate"] == 1.0
    assert r["groups"]["generated"]["max_similarity_mean"] > 0.99
    assert r["novelty"]["two_sample_test"]["mannwhitney_p_generated_closer"] < 1e-3
    # every generated checkpoint is nearest to the training checkpoint it was copied from
    assert r["per_checkpoint"]["generated"]["nearest_training"] == list(range(12))
    for name in ["audit.json", "report.md", "min_l2_hist.png", "accuracy_vs_similarity.png", "heatmap.png",
                 "decision_boundaries.png", "fronts.png"]:
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    assert "**Verdict: replication**" in (tmp_path / "out" / "report.md").read_text()


def test_averages_of_pairs_are_not_novel(zoos, tmp_path):
    train = zoos["train"].params
    pairs = torch.tensor([[i, (i + 1) % 12] for i in range(12)])
    r = audit(tmp_path, zoos["train_dir"], generated_folder(zoos, "pairs", train[pairs].mean(1)))
    assert r["verdict"]["verdict"] in (INTERPOLATION, REPLICATION)
    assert r["verdict"]["verdict"] != NOVEL
    # an average of two runs sits between them: nearer to a training checkpoint than training runs are to each other
    assert r["groups"]["generated"]["min_l2_median"] < r["reference_nn"]["median"]


def test_independent_runs_are_not_replicas(zoos, tmp_path):
    r = audit(tmp_path, zoos["train_dir"], generated_folder(zoos, "fresh", zoos["fresh"].params))
    assert r["verdict"]["verdict"] != REPLICATION
    assert r["novelty"]["replica_rate"]["rate"] <= 0.125  # about 0: at most one of the 8 by chance
    # after alignment the nearest distances of independent 8-unit MLPs concentrate (all within 4.6-5.8 here), so
    # the closest-pair threshold of 12 models is no longer a safe margin: the aligned rate is recorded, not judged
    assert 0 <= r["novelty"]["replica_rate_aligned"]["rate"] <= 1
    assert r["novelty"]["two_sample_test"]["mannwhitney_p_generated_closer"] > 0.01


def test_hidden_unit_permutations_replicate_after_alignment(zoos, tmp_path):
    train = zoos["train"].params
    rng = np.random.default_rng(0)
    gen = torch.stack([permute_hidden(p, zoos["train"].spec, [rng.permutation(8)]) for p in train])
    r = audit(tmp_path, zoos["train_dir"], generated_folder(zoos, "permuted", gen))
    al = r["alignment"]
    assert al["applicable"] and al["generated_nn"]["max"] < 1e-4
    assert r["groups"]["generated"]["min_l2_median"] > 1000 * al["generated_nn"]["max"]  # raw L2 is large
    assert r["novelty"]["replica_rate_aligned"]["rate"] == 1.0
    assert r["verdict"]["verdict"] == REPLICATION  # the same functions: max error-IoU 1
    assert r["groups"]["generated"]["max_similarity_mean"] == pytest.approx(1.0)


# -- the round trip against scripts/memorize.py -----------------------------------------------------------
def test_round_trip_equals_the_study(tmp_path):
    from memorization.study import run_study
    from tests.test_memorize_study import TINY, compose_cfg

    study_out = tmp_path / "study"
    metrics = run_study(compose_cfg("task=mnist1d_mlp", "generator=average", "generator.k=4", "zoo.regime=steps",
                                    "num_samples=10", f"out={study_out}", f"cache_dir={tmp_path}",
                                    *[o for o in TINY if not o.startswith("plots.")], "plots.tsne=false",
                                    "plots.boundary_grid=20"))
    paths = export_zoo(metrics["zoo"]["path"], tmp_path / "export")  # the zoo and the samples as folders
    samples = load_file(str(study_out / "samples.safetensors"))["generated"]
    export_checkpoints(samples, Zoo.load(metrics["zoo"]["path"]).spec, tmp_path / "export" / "generated")
    r = run_audit(audit_cfg(f"train={paths['train']}", f"generated={tmp_path / 'export' / 'generated'}",
                            "params=[layers.2.*]", f"base={paths['base']}",
                            "task.name=mnist1d", "task.kwargs={num_samples: 1000}",
                            "model.arch={name: mlp, hidden: [16, 16]}",
                            f"baselines.noise_sigmas=[{','.join(str(x) for x in metrics['noise']['sigmas'])}]",
                            "baselines.num_samples=20", "baselines.average_k=4", "plots.tsne=false",
                            "plots.boundary_grid=20", "progress=false", f"out={tmp_path / 'audit'}"))
    assert r["verdict"]["verdict"] == metrics["verdict"]["verdict"]
    assert r["verdict"]["checks"]["dominated_by"] == metrics["verdict"]["checks"]["dominated_by"]
    assert list(r["groups"]) == list(metrics["groups"])
    for key, study_group in metrics["groups"].items():
        for stat in ("n", "accuracy_mean", "max_similarity_mean", "min_l2_median", "min_l2_mean"):
            assert r["groups"][key][stat] == pytest.approx(study_group[stat], rel=1e-6, abs=1e-7), (key, stat)
    assert r["model"]["num_audited"] == 16 * 10 + 10 and r["alignment"]["applicable"] is False


# -- streaming -----------------------------------------------------------------------------------------
def test_streamed_audit_gives_the_in_memory_numbers(zoos, tmp_path):
    train = zoos["train"].params
    gen_dir = generated_folder(zoos, "stream", train[:6] + 0.01 * torch.randn(6, train.shape[1],
                                                                              generator=torch.Generator().manual_seed(1)))
    full = audit(tmp_path / "a", zoos["train_dir"], gen_dir)
    streamed = audit(tmp_path / "b", zoos["train_dir"], gen_dir, "metrics.memory_gb=1e-6", "metrics.block_columns=100")
    assert streamed["streamed"] and not full["streamed"]
    for key in ("training", "generated"):
        for stat in ("accuracy_mean", "max_similarity_mean", "min_l2_median", "min_l2_mean"):
            assert streamed["groups"][key][stat] == pytest.approx(full["groups"][key][stat], rel=1e-5), (key, stat)
    # the lazy baselines draw their own (seeded) noise, with the same definition: the same scale of distances
    for sigma in ("noise_0.02", "noise_0.04"):
        assert streamed["groups"][sigma]["min_l2_median"] == pytest.approx(full["groups"][sigma]["min_l2_median"],
                                                                            rel=0.05)
    assert streamed["verdict"]["verdict"] == full["verdict"]["verdict"]
    assert streamed["alignment"]["applicable"] is False


def test_streamed_min_l2_and_column_blocks():
    g = torch.Generator().manual_seed(0)
    gen, ref = torch.randn(30, 500, generator=g), torch.randn(20, 500, generator=g)
    gen[4] = ref[9]
    cols_g, nb = tensor_blocks(gen, 64)
    cols_r, _ = tensor_blocks(ref, 64)
    v, i = streamed_min_l2(cols_g, nb, 30, cols_r, 20, max_values=1000)
    v0, i0 = min_l2(gen, ref)
    assert torch.equal(i, i0) and torch.allclose(v, v0, atol=1e-5) and v[4] == 0 and i[4] == 9
    v, i = streamed_min_l2(cols_r, nb, 20, exclude_self=True)
    v0, i0 = min_l2(ref, ref, exclude_self=True)
    assert torch.equal(i, i0) and torch.allclose(v, v0, atol=1e-5)
    spec = ParamSpec(["a", "b", "c"], [(10, 7), (3,), (4, 2, 2)])
    for width in (1, 5, 16, 70, 1000):
        groups = column_blocks(spec, width)
        flat = [b for grp in groups for b in grp]
        assert flat[0].flat_start == 0 and flat[-1].flat_stop == spec.numel()
        assert all(a.flat_stop == b.flat_start for a, b in zip(flat, flat[1:]))
        assert all(sum(b.flat_stop - b.flat_start for b in grp) <= max(width, 7) for grp in groups)


def test_novelty_statistics_known_answers():
    assert replica_rate([0.5, 2.0, 3.0, 0.1], [1.0, 1.5, 4.0]) == {"threshold": 1.0, "rate": 0.5, "n": 4}
    q, n = np.array([0.9, 0.8, 0.7, 0.85]), np.array([0.1, 0.3, 0.5, 0.05])
    assert pareto_front(q, n).tolist() == [0, 1, 2]
    beyond = beyond_front([0.95, 0.8, 0.75], [0.2, 0.2, 0.6], q, n)
    assert beyond.tolist() == [True, False, True]


# -- loaders ---------------------------------------------------------------------------------------------
def test_pt_files_stacked_files_and_prefixes_load_the_same_vectors(zoos, tmp_path):
    z = zoos["train"]
    pt = tmp_path / "pt"
    pt.mkdir()
    for i, row in enumerate(z.params[:3]):
        sd = {f"module.{k}": v.clone() for k, v in z.spec.unflatten(row).items()}
        torch.save(sd if i else {"state_dict": sd}, pt / f"m{i}.pth")
    (pt / "notes.txt").write_text("not a checkpoint")
    loaded = open_checkpoints(pt, z.spec, "train", strip_prefix="module.")
    assert torch.equal(loaded.load(), z.params[:3]) and loaded.ignored == ["notes.txt"]
    blocks = column_blocks(z.spec, 100)
    assert torch.equal(torch.cat([loaded.columns(b) for b in blocks], 1), z.params[:3])
    save_file({"rows": z.params[:5].contiguous()}, str(tmp_path / "stack.safetensors"))
    stacked = open_checkpoints(tmp_path / "stack.safetensors", z.spec, "generated")
    assert len(stacked) == 5 and torch.equal(stacked.load(), z.params[:5])
    assert torch.equal(torch.cat([stacked.columns(b) for b in blocks], 1), z.params[:5])
    torch.save(z.params[:4].clone(), tmp_path / "stack.pt")
    assert torch.equal(open_checkpoints(tmp_path / "stack.pt", z.spec, "generated").load(), z.params[:4])


def test_errors_name_every_problem_before_any_work(zoos, tmp_path):
    z = zoos["train"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        open_checkpoints(tmp_path / "empty", z.spec, "train")
    bad = export_checkpoints(z.params[:3], z.spec, tmp_path / "bad")
    (bad / "broken.safetensors").write_bytes(b"\x00garbage")
    (bad / "broken2.pt").write_bytes(b"nope")
    sd = {k: v.clone() for k, v in z.spec.unflatten(z.params[0]).items()}
    sd.pop("layers.1.bias")
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, str(bad / "keys.safetensors"))
    sd = {k: v.clone() for k, v in z.spec.unflatten(z.params[0]).items()}
    sd["layers.0.weight"] = torch.zeros(9, 64)
    save_file(sd, str(bad / "shape.safetensors"))
    with pytest.raises(CheckpointError) as info:
        open_checkpoints(bad, z.spec, "train")
    msg = str(info.value)
    for needle in ("2 unreadable file(s)", "broken.safetensors", "broken2.pt", "missing keys", "layers.1.bias",
                   "extra keys", "extra.weight", "shape.safetensors: layers.0.weight has shape (9, 64)"):
        assert needle in msg, needle
    save_file({"rows": torch.zeros(3, 7)}, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(CheckpointError, match="rows have 7 values, the audited parameters 610"):
        open_checkpoints(tmp_path / "narrow.safetensors", z.spec, "generated")
    save_file({"a": torch.zeros(3, 610), "b": torch.zeros(3, 610)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(CheckpointError, match="generated_key"):
        open_checkpoints(tmp_path / "two.safetensors", z.spec, "generated")
    from bias.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"patterns \['nope\*'\] match no parameter"):
        audit(tmp_path, zoos["train_dir"], zoos["train_dir"], "params=[nope*]")
    with pytest.raises(ConfigError, match="give base=PATH"):
        audit(tmp_path, zoos["train_dir"], zoos["train_dir"], "params=[layers.1.*]")
    with pytest.raises(ConfigError, match="give generated=PATH"):
        run_audit(audit_cfg(f"train={zoos['train_dir']}", *SMALL))
    with pytest.raises(ConfigError, match=r"task: give task.root=\.\.\."):
        run_audit(audit_cfg(f"train={zoos['train_dir']}", f"generated={zoos['train_dir']}", "task=image_folder"))
    with pytest.raises(ConfigError, match="model=zoo cannot be built"):
        audit(tmp_path, zoos["train_dir"], zoos["train_dir"], "model.arch={name: hyperrep_cnn}")


def test_command_line_reports_a_bad_folder_in_one_line(zoos, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("audit.py", f"train={zoos['train_dir']}", f"generated={tmp_path / 'empty'}", *SMALL, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: generated=") and "no checkpoint" in proc.stderr


# -- other models and tasks ------------------------------------------------------------------------------
def _write_user_code(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "user_audit_code.py").write_text(
        "import torch\n"
        "def data(n=60):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.randn(n, 3, 8, 8, generator=g)\n"
        "    return x, (x.mean((1, 2, 3)) > 0).long()\n"
        "def net(width=4):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),\n"
        "                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, 2))\n"
        "def flat_net():\n"
        "    return torch.nn.Linear(5, 2)\n")


def test_callable_model_and_task_with_a_batchnorm_subset_and_base(tmp_path):
    _write_user_code(tmp_path / "code")
    import sys

    sys.path.insert(0, str(tmp_path / "code"))
    try:
        import user_audit_code
    finally:
        sys.path.remove(str(tmp_path / "code"))
    torch.manual_seed(0)
    base = user_audit_code.net()
    base.eval()
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(tmp_path / "base.safetensors"))
    bn = ParamSpec(["1.weight", "1.bias", "1.running_mean", "1.running_var"], [(4,)] * 4)
    sd = base.state_dict()
    rows = torch.stack([bn.flatten({k: sd[k] for k in bn.names}) + 0.3 * torch.randn(16) for _ in range(6)])
    export_checkpoints(rows, bn, tmp_path / "train")
    export_checkpoints(rows + 1e-5, bn, tmp_path / "gen")
    code = tmp_path / "code"
    r = run_audit(audit_cfg(f"train={tmp_path / 'train'}", f"generated={tmp_path / 'gen'}", "model=callable",
                            "model.target=user_audit_code:net", f"model.path={code}", "task=callable",
                            "task.target=user_audit_code:data", f"task.path={code}", "params=[1.*]",
                            f"base={tmp_path / 'base.safetensors'}", "baselines.num_samples=6", "baselines.average_k=2",
                            "plots.tsne=false", "plots.boundary_grid=10", "progress=false", f"out={tmp_path / 'out'}"))
    assert r["model"]["num_audited"] == 16 and r["model"]["num_params"] == 3 * 4 * 9 + 4 + 16 + 8 + 2
    assert r["verdict"]["verdict"] == REPLICATION and r["task"]["n_eval"] == 60
    from bias.core.errors import ConfigError

    flat = ParamSpec(["weight", "bias"], [(2, 5), (2,)])
    export_checkpoints(torch.randn(3, 12), flat, tmp_path / "flat")
    with pytest.raises(ConfigError, match=r"does not run on the task's inputs \(3, 8, 8\)"):
        run_audit(audit_cfg(f"train={tmp_path / 'flat'}", f"generated={tmp_path / 'flat'}", "model=callable",
                            "model.target=user_audit_code:flat_net", f"model.path={code}", "task=callable",
                            "task.target=user_audit_code:data", f"task.path={code}", "progress=false",
                            f"out={tmp_path / 'out2'}"))


def test_timm_model_on_an_image_folder_and_a_hf_dataset(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        (tmp_path / "images" / f"class{c}").mkdir(parents=True)
        for i in range(4):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "images" / f"class{c}" / f"{i}.png")
    import datasets

    imgs = [Image.open(p).convert("RGB") for p in sorted((tmp_path / "images").rglob("*.png"))]
    datasets.Dataset.from_dict({"img": imgs, "label": [0] * 4 + [1] * 4}).save_to_disk(str(tmp_path / "hf"))
    import timm

    model = timm.create_model("test_resnet", num_classes=2, in_chans=3).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "base.safetensors"))
    names = ["layer4.0.bn2.weight", "layer4.0.bn2.bias"]
    sd = model.state_dict()
    spec = ParamSpec(names, [tuple(sd[n].shape) for n in names])
    rows = spec.flatten({n: sd[n] for n in names})[None] + 0.1 * torch.randn(4, spec.numel())
    export_checkpoints(rows, spec, tmp_path / "train")
    export_checkpoints(rows[:2] + 1e-5, spec, tmp_path / "gen")
    common = [f"train={tmp_path / 'train'}", f"generated={tmp_path / 'gen'}", "model=timm", "model.name=test_resnet",
              "params=[layer4.0.bn2.weight,layer4.0.bn2.bias]", f"base={tmp_path / 'base.safetensors'}",
              "baselines.num_samples=4", "baselines.average_k=2", "plots.tsne=false", "plots.boundary_grid=4",
              "progress=false"]
    folder = run_audit(audit_cfg(*common, "task=image_folder", f"task.root={tmp_path / 'images'}",
                                 "task.image_size=16", f"out={tmp_path / 'a'}"))
    hf = run_audit(audit_cfg(*common, "task=hf", f"task.path={tmp_path / 'hf'}", "task.from_disk=true",
                             "task.image_column=img", "task.image_size=16", f"out={tmp_path / 'b'}"))
    assert folder["task"]["n_eval"] == hf["task"]["n_eval"] == 8 and folder["task"]["num_classes"] == 2
    for key in ("training", "generated"):  # the same images through both loaders: the same accuracies
        assert folder["groups"][key]["accuracy_mean"] == pytest.approx(hf["groups"][key]["accuracy_mean"])
    assert folder["model"]["num_audited"] == spec.numel() and folder["verdict"]["verdict"] == REPLICATION
    saved = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert saved["per_checkpoint"]["generated"]["nearest_training"] == [0, 1]
    assert load_file(str(tmp_path / "train" / "checkpoint_00000.safetensors"))["layer4.0.bn2.weight"].shape == (
        sd["layer4.0.bn2.weight"].shape)
