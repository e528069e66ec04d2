"""The command line end to end on tiny data: outputs, broken files, clear errors, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import (
    ROOT,
    TINY,
    TWO_RANK_ARGS,
    TWO_RANK_ENV,
    paths_override,
    precompute_on_two_ranks,
    read_results,
    run_cli,
    torchrun,
    write_colour_dataset,
)
from tests.image_factory import write_tricky_images


@pytest.fixture(scope="module")
def messy_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    write_colour_dataset(root / "reds", 36, (200, 60, 60), seed=1)
    write_colour_dataset(root / "blues", 36, (60, 60, 200), seed=2)
    expected = write_tricky_images(root / "blues" / "tricky")
    return {"reds": root / "reds", "blues": root / "blues"}, expected


def test_end_to_end_run_writes_results_and_accounts_for_every_broken_file(messy_folders, tmp_path):
    folders, expected = messy_folders
    out = tmp_path / "run"
    proc = run_cli("classify.py", "data=folders", paths_override(folders), "data.per_dataset=24",
                   "data.val_per_dataset=10", "transform=canny", f"out={out}", f"cache_dir={tmp_path / 'cache'}", *TINY,
                   launcher=[str(ROOT / ".venv/bin/accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no"]
                   if (ROOT / ".venv/bin/accelerate").exists() else None)
    assert "vs chance" in proc.stdout and str(out / "results.json") in proc.stdout
    r = read_results(out)
    for key in ("accuracy", "ci95", "chance", "per_dataset", "confusion", "n_train", "n_val", "skipped", "seed"):
        assert key in r, key
    assert r["n_train"] == 48 and r["n_val"] == 20 and r["chance"] == 0.5
    assert r["ci95"][0] <= r["accuracy"] <= r["ci95"][1]
    assert np.array(r["confusion"]).sum() == 20
    broken = {name for name, reason in expected.items() if reason is not None}
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in r["skipped"]}
    assert set(skipped) == broken and all(skipped.values())
    manifest = pq.read_table(out / "manifest.parquet")
    splits = manifest.column("split").to_pylist()
    assert splits.count("train") == 48 and splits.count("val") == 20
    assert not broken & {p.split("/")[-1] for p in manifest.column("path").to_pylist()}
    for name in ("config.yaml", "confusion.png", "history.png", "predictions.csv",
                 "checkpoints/epoch_0002/model.safetensors", "checkpoints/epoch_0002/trainer_state.json"):
        assert (out / name).exists(), name
    # the canny cache is reused by a second run
    again = run_cli("classify.py", "data=folders", paths_override(folders), "data.per_dataset=24",
                    "data.val_per_dataset=10", "transform=canny", f"out={out}", f"cache_dir={tmp_path / 'cache'}", *TINY)
    assert "reusing finished run" in again.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["transform=nope"], "Could not find 'transform/nope'"),
        (["data=folders", "data.paths={a: /does/not/exist, b: /tmp}"], "does not exist"),
        (["data=folders", "data.paths={a: /tmp}"], "two or more datasets"),
        (["data=folders", "data.paths={a: /tmp, b: /tmp, a: /usr}"], "duplicate dataset names"),
        (["model=timm", "model.name=convnext_nonexistent"], "unknown model 'convnext_nonexistent'"),
        (["model.name=resnet50"], "model=timm model.name=resnet50"),
        (["model=timm", "model.name=resnet50", "model.kwargs={depths: [1, 1, 2, 1]}"], "do not fit model 'resnet50'"),
        (["recipe=nope"], "Could not find 'recipe/nope'"),
        (["transform.radius=-1", "transform=lpf"], "radius"),
    ],
)
def test_clear_errors_before_any_heavy_work(overrides, message, tmp_path):
    proc = run_cli("classify.py", *overrides, f"out={tmp_path / 'x'}", f"cache_dir={tmp_path / 'c'}", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "c").exists()  # failed before generating or indexing anything


def test_val_larger_than_data_and_empty_dataset(two_folders, tmp_path):
    proc = run_cli("classify.py", "data=folders", paths_override(two_folders), "data.val_per_dataset=100",
                   f"out={tmp_path / 'x'}", f"cache_dir={tmp_path / 'c'}", check=False)
    assert proc.returncode != 0 and "usable images but data.val_per_dataset=100" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"")
    proc = run_cli("classify.py", "data=folders", paths_override({"a": two_folders["reds"], "b": empty}),
                   f"out={tmp_path / 'y'}", f"cache_dir={tmp_path / 'c'}", check=False)
    assert proc.returncode != 0 and "'b'" in proc.stderr and "no usable images" in proc.stderr


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_resume_after_a_kill_gives_the_same_metrics(two_folders, tmp_path, precision):
    """Also with precision=bf16 (autocast on the CPU; fp16 cannot run there: accelerate enables it only on GPUs).
    The GradScaler that fp16 brings is checked in tests/test_trainer_resume.py."""
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=24", "data.val_per_dataset=12",
            "transform=pixel_shuffle", "transform.mode=fixed", f"cache_dir={tmp_path / 'c'}", *TINY,
            "recipe.epochs=3", "recipe.epochs_scale.pixel_shuffle=1", "recipe.eval_every=1",
            f"recipe.precision={precision}"]
    run_cli("classify.py", *args, f"out={tmp_path / 'straight'}")
    killed = run_cli("tests/helpers/kill_after_epoch.py", *args, f"out={tmp_path / 'resumed'}",
                     env={"KILL_AFTER_EPOCH": "0"}, check=False)
    assert killed.returncode == 137 and not (tmp_path / "resumed" / "results.json").exists()
    assert (tmp_path / "resumed" / "checkpoints" / "epoch_0001" / "trainer_state.json").exists()
    run_cli("classify.py", *args, f"out={tmp_path / 'resumed'}")
    a, b = read_results(tmp_path / "straight"), read_results(tmp_path / "resumed")
    assert b["resumed_from_epoch"] == 1 and a["resumed_from_epoch"] == 0
    assert a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert (tmp_path / "resumed" / "predictions.csv").read_text() == (tmp_path / "straight" / "predictions.csv").read_text()
    assert (tmp_path / "resumed" / "permutation_pixel_shuffle.npy").exists()


def test_a_different_config_in_the_same_run_dir_is_refused(two_folders, tmp_path):
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=8", "data.val_per_dataset=4",
            f"cache_dir={tmp_path / 'c'}", f"out={tmp_path / 'r'}", *TINY, "recipe.epochs=1"]
    run_cli("classify.py", *args)
    proc = run_cli("classify.py", *args, "recipe.lr=0.1", check=False)
    assert proc.returncode != 0 and "different configuration" in proc.stderr


def test_two_processes_shard_precompute_and_evaluate_every_val_image_once(two_folders, tmp_path):
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=20", "data.val_per_dataset=11",
            "transform=canny", f"cache_dir={tmp_path / 'c'}", *TWO_RANK_ARGS]
    manifest, parts = precompute_on_two_ranks(args, tmp_path / "c", 29533)
    assert manifest["n_unique"] == 62 and manifest["computed"] == 62 and manifest["reused"] == 0
    assert sorted(p["computed"] for p in parts) == [31, 31]
    proc = run_cli("classify.py", *args, f"out={tmp_path / 'r'}", env=TWO_RANK_ENV, launcher=torchrun(29533))
    assert proc.stdout.count("vs chance") == 1 and proc.stdout.count("  verdict: ") == 1  # the main process logs
    r = read_results(tmp_path / "r")
    assert r["processes"] == 2 and r["n_val"] == 22  # 22 val images over 2 ranks x batches of 4: padding dropped
    assert np.array(r["confusion"]).sum() == 22
    preds = (tmp_path / "r" / "predictions.csv").read_text().strip().splitlines()[1:]
    assert len(preds) == 22 and len(set(preds)) == 22


def test_a_file_that_breaks_after_indexing_is_reported_not_replaced(tmp_path):
    root = tmp_path / "data"
    write_colour_dataset(root / "reds", 20, (200, 60, 60), seed=1)
    write_colour_dataset(root / "blues", 20, (60, 60, 200), seed=2)
    folders = {"reds": root / "reds", "blues": root / "blues"}
    args = ["data=folders", paths_override(folders), "data.per_dataset=10", "data.val_per_dataset=6",
            f"cache_dir={tmp_path / 'c'}", *TINY, "recipe.epochs=1"]
    run_cli("classify.py", *args, f"out={tmp_path / 'a'}")
    manifest = pq.read_table(tmp_path / "a" / "manifest.parquet").to_pylist()
    victims = [next(r["path"] for r in manifest if r["split"] == s) for s in ("val", "train")]
    for victim in victims:  # same size and mtime: the stored index still believes it is fine
        st = os.stat(victim)
        with open(victim, "r+b") as f:
            f.seek(8)  # keep the PNG signature, destroy the chunks
            f.write(b"\0" * (st.st_size - 8))
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    run_cli("classify.py", *args, f"out={tmp_path / 'b'}")
    r = read_results(tmp_path / "b")
    load_failures = {s["path"]: s for s in r["skipped"] if s["stage"] == "load"}
    assert set(load_failures) == set(victims)
    assert r["n_val"] == 11 and r["n_train"] == 19 and np.array(r["confusion"]).sum() == 11
    preds = (tmp_path / "b" / "predictions.csv").read_text()
    assert victims[0] not in preds


def test_several_seeds_are_aggregated_and_logged(two_folders, tmp_path):
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=10", "data.val_per_dataset=6",
            f"cache_dir={tmp_path / 'c'}", *TINY, "recipe.epochs=1", "seeds=[0,1]", f"out={tmp_path / 'multi'}"]
    proc = run_cli("classify.py", *args)
    assert "2 seeds: accuracy" in proc.stdout
    agg = json.loads((tmp_path / "multi" / "aggregate.json").read_text())
    runs = [read_results(tmp_path / "multi" / f"seed{s}") for s in (0, 1)]
    assert agg["seeds"] == [0, 1] and agg["accuracies"] == [r["accuracy"] for r in runs]
    assert np.isclose(agg["accuracy_std"], np.std(agg["accuracies"], ddof=1))
    assert runs[0]["seed"] == 0 and runs[1]["seed"] == 1
    assert list((tmp_path / "multi" / "seed0" / "tensorboard").rglob("events.out.tfevents*"))


def test_feature_vector_transform_trains_an_mlp_through_the_same_trainer(two_folders, tmp_path):
    small = [o for o in TINY if not o.startswith("model.")]
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=16", "data.val_per_dataset=8",
            f"cache_dir={tmp_path / 'c'}", *small, "recipe.epochs=4", "recipe.lr=0.01", "transform=color_hist_vector"]
    refused = run_cli("classify.py", *args, f"out={tmp_path / 'x'}", check=False)
    assert refused.returncode != 0 and "add model=mlp" in refused.stderr
    run_cli("classify.py", *args, "model=mlp", f"out={tmp_path / 'r'}")
    r = read_results(tmp_path / "r")
    assert r["model"] == "mlp" and r["n_val"] == 16
    assert r["accuracy"] >= 0.9  # red vs blue folders differ in colour distribution only


def test_a_corrupt_cache_entry_is_recomputed_and_its_source_is_not_blamed(two_folders, tmp_path):
    args = ["data=folders", paths_override(two_folders), "data.per_dataset=12", "data.val_per_dataset=6",
            "transform=canny", f"cache_dir={tmp_path / 'c'}", *TINY, "recipe.epochs=1"]
    run_cli("classify.py", *args, f"out={tmp_path / 'a'}")
    cache = next((tmp_path / "c" / "transforms").iterdir())
    victim = sorted(cache.glob("*/*.png"))[0]
    victim.write_text("garbage where a cached canny PNG was")
    run_cli("classify.py", *args, f"out={tmp_path / 'b'}", "seed=1")
    r = read_results(tmp_path / "b")
    assert r["skipped"] == [] and r["n_val"] == 12  # the source was fine: nothing dropped, nothing blamed
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["repaired"] == 1 and manifest["computed"] == 1 and manifest["failed"] == []
    assert victim.read_bytes().startswith(b"\x89PNG")


def test_progress_bars_in_a_log_write_at_most_a_line_per_30_seconds(two_folders, tmp_path):
    """stderr to a file (not a terminal), as in a batch job: a bar per epoch, not a line per step."""
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "classify.py"), "data=folders",
                               paths_override(two_folders), "data.per_dataset=32", "data.val_per_dataset=8",
                               f"out={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}", *TINY, "recipe.batch_size=4",
                               "recipe.effective_batch=4", "recipe.epochs=2"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=err, text=True, timeout=900)
    assert proc.returncode == 0
    text = log.read_text()
    updates = [u for u in text.replace("\r", "\n").split("\n") if u.startswith("epoch 1/2:")]
    assert 16 == read_results(tmp_path / "r")["history"][0]["step"]  # 16 steps in the epoch
    assert 1 <= len(updates) <= 3, updates  # opened, maybe one 30-s refresh, closed: never one per step
