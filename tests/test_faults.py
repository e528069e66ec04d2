"""Fault injection: kill, truncate and corrupt at each stage of classify, transform and describe's LLM cache, and
check that nothing is lost, faked or silently replaced (issue 22).

Every case here failed on the tree before this module: a second run interleaved with a first in one run folder,
a nan network was scored, `seeds=[0,0]` counted one run twice, a damaged derived file ended in a traceback, a
killed transform left its workers running and kept nothing it had computed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from bias.cli import fail_cleanly
from bias.core.errors import ConfigError
from bias.core.io import folder_lock
from bias.data.images import file_sha1
from bias.data.index import build_index, list_image_files
from bias.data.sources import resolve_sources
from bias.data.split import DataConfigError
from bias.experiment.config import validate_classify_config
from bias.experiment.results import aggregate_seeds
from bias.experiment.run import check_output_folder, read_results
from bias.inference.runner import run_batched
from describe.llm import CachedGenerator, Generation, TextGenerator, TokenLedger
from tests.conftest import ROOT, TINY, paths_override, run_cli, write_colour_dataset
from tests.conftest import read_results as read_run
from transforms.base import output_store
from transforms.registry import create_transform

CONFIG_DIR = ROOT / "configs"


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="classify", overrides=list(overrides))


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The command failed with one `error:` line and no traceback; returns that line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("small")
    write_colour_dataset(root / "reds", 16, (200, 60, 60), seed=1, size=32)
    write_colour_dataset(root / "blues", 16, (60, 60, 200), seed=2, size=32)
    return {"reds": root / "reds", "blues": root / "blues"}


def classify_args(folders: dict[str, Path], cache: Path, *extra: str) -> list[str]:
    return ["data=folders", paths_override(folders), "data.per_dataset=8", "data.val_per_dataset=4",
            f"cache_dir={cache}", *TINY, "recipe.epochs=1", "baselines.enabled=false", *extra]


# --- the config check -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [("recipe.lr=inf", "recipe.lr"), ("recipe.lr=nan", "recipe.lr"),
                                           ("recipe.weight_decay=inf", "recipe.weight_decay"),
                                           ("recipe.warmup_epochs=nan", "recipe.warmup_epochs")])
def test_non_finite_numbers_are_refused_up_front(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}: expected a finite number"):
        validate_classify_config(composed(override))


def test_repeated_seeds_are_refused_and_never_counted_twice():
    with pytest.raises(ConfigError, match=r"^seeds: 0 is given more than once"):
        validate_classify_config(composed("seeds=[0,1,0]"))
    run = {"seed": 0, "accuracy": 0.5, "datasets": ["a"], "per_dataset": {"a": 0.5}, "chance": 0.5}
    with pytest.raises(ValueError, match="repeat"):
        aggregate_seeds([run, dict(run)])


# --- data folders ---------------------------------------------------------------------------------------------
def test_a_folder_given_twice_or_inside_another_dataset_is_refused(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataConfigError, match="'a' and 'b' are the same folder"):
        resolve_sources({"paths": {"a": str(tmp_path / "a"), "b": str(tmp_path / "a") + "/"}})
    with pytest.raises(DataConfigError, match=r"'b' \(.*sub\) lies inside the folder of dataset 'a'"):
        resolve_sources({"paths": {"a": str(tmp_path / "a"), "b": str(tmp_path / "a" / "sub")}})
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with pytest.raises(DataConfigError, match="same folder"):
        resolve_sources({"datasets": {"a": {"kind": "folder", "path": str(tmp_path / "a")},
                                      "b": {"kind": "folder", "path": str(tmp_path / "link")}}})
    assert list(resolve_sources({"paths": {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}})) == ["a", "b"]


def test_a_symlink_loop_in_a_data_folder_lists_every_file_once(tmp_path):
    write_colour_dataset(tmp_path / "d" / "inner", 3, (10, 20, 30), seed=0, size=16)
    (tmp_path / "d" / "inner" / "loop").symlink_to(tmp_path / "d")  # inner/loop/inner/loop/... forever
    (tmp_path / "d" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "d" / "self").symlink_to(tmp_path / "d" / "self")  # a link to itself: ELOOP when followed
    listing = list_image_files(tmp_path / "d")
    names = sorted(Path(p).name for p in listing.paths)
    assert names == ["000.png", "001.png", "002.png", "dangling.jpg"]  # the broken link is listed, then reported


# --- damaged derived files ------------------------------------------------------------------------------------
def test_a_damaged_folder_index_is_rebuilt_and_reported(tmp_path, caplog):
    write_colour_dataset(tmp_path / "d", 5, (10, 200, 30), seed=0, size=16)
    first = build_index(tmp_path / "d", tmp_path / "c", num_workers=0)
    stored = next((tmp_path / "c" / "index").glob("*.parquet"))
    for damage in (b"", b"PAR1 junk", stored.read_bytes()[: len(stored.read_bytes()) // 2]):
        stored.write_bytes(damage)
        again = build_index(tmp_path / "d", tmp_path / "c", num_workers=0)
        assert (again.sha1 == first.sha1).all() and (again.ok == first.ok).all()
        assert "was damaged" in caplog.text and stored.with_name(stored.name + ".damaged").exists()
        assert [r.levelname for r in caplog.records] == ["WARNING"]  # a note: on stderr under the commands
        caplog.clear()
    build_index(tmp_path / "d", tmp_path / "c", num_workers=0)  # rebuilt: read back without a note
    assert "damaged" not in caplog.text


def test_a_killed_index_build_keeps_what_it_checked(tmp_path, monkeypatch):
    import bias.data.index as index_module

    write_colour_dataset(tmp_path / "d", 10, (10, 200, 30), seed=0, size=16)
    real, checked = index_module._check_one, []

    def dies_after_six(path):
        if len(checked) == 6:
            raise KeyboardInterrupt  # a kill, as far as the index is concerned: nothing after this runs
        checked.append(path)
        return real(path)

    monkeypatch.setattr(index_module, "FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(index_module, "_check_one", dies_after_six)
    with pytest.raises(KeyboardInterrupt):
        build_index(tmp_path / "d", tmp_path / "c", num_workers=0)
    checked.clear()
    monkeypatch.setattr(index_module, "_check_one", lambda path: checked.append(path) or real(path))
    again = build_index(tmp_path / "d", tmp_path / "c", num_workers=0)
    assert len(checked) == 4 and again.ok.all() and len(again) == 10  # only what the killed build had not checked


def _images(folder: Path, n: int) -> tuple[list[str], list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths, [file_sha1(p) for p in paths]


def test_damaged_store_entries_are_moved_aside_and_recomputed_from_the_sources(tmp_path):
    paths, shas = _images(tmp_path / "img", 4)
    canny = create_transform("canny")

    def run():
        return run_batched(canny, paths, shas, output_store(canny, tmp_path / "c", None), num_workers=0,
                           show_progress=False)

    first = run()
    entries = first.store.folder / "entries.parquet"
    expected = {s: first.store.image_path(s).read_bytes() for s in shas}
    entries.write_bytes(entries.read_bytes()[:40])  # a copy cut short
    second = run()
    assert (second.computed, second.reused) == (4, 0) and len(second.repaired_files) == 1
    assert "entries.parquet was damaged" in second.repaired_files[0]
    manifest = json.loads((first.store.folder / "manifest.json").read_text())
    assert manifest["repaired_files"] == second.repaired_files
    assert {s: second.store.image_path(s).read_bytes() for s in shas} == expected
    assert (run().reused, run().repaired_files) == (4, [])


def test_a_damaged_text_output_file_is_recomputed_not_read_as_empty(tmp_path):
    from tests.test_runner import MeanColour

    paths, shas = _images(tmp_path / "img", 3)
    model = MeanColour()

    def run():
        return run_batched(model, paths, shas, output_store(model, tmp_path / "c", None), num_workers=0,
                           show_progress=False)

    first = run()
    captions = first.store.read_text("caption").sort_by("sha1")
    text_file = first.store.folder / "text" / "caption.parquet"
    text_file.write_bytes(b"PAR1" + b"\0" * 64)  # overwritten by junk
    second = run()
    assert second.computed == 3 and any("caption.parquet was damaged" in n for n in second.repaired_files)
    assert second.store.read_text("caption").sort_by("sha1").equals(captions)


# --- OS errors about the user's paths -------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.ELOOP])
def test_an_os_error_about_a_users_path_is_one_line_naming_it(code):
    with pytest.raises(SystemExit) as info:
        with fail_cleanly():
            raise OSError(code, os.strerror(code), "/data/runs/x")
    assert info.value.code == f"error: /data/runs/x: {os.strerror(code)}"
    with pytest.raises(KeyError):  # anything else is a bug and keeps its traceback
        with fail_cleanly():
            raise KeyError("bug")


def test_out_naming_a_file_or_a_read_only_folder_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"^out=.*/f names a file; out takes a folder"):
        check_output_folder("out", str(tmp_path / "f"))
    with pytest.raises(ConfigError, match=r"^cache_dir=.*lies under .*/f, which is a file"):
        check_output_folder("cache_dir", str(tmp_path / "f" / "c"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root: chmod would not stop writes
    with pytest.raises(ConfigError, match=r"is not writable .*choose another out=DIR"):
        check_output_folder("out", str(tmp_path / "new" / "run"))


# --- classify: lock, divergence, failed checks, damaged results and checkpoints -------------------------------
def test_a_second_run_on_a_locked_run_folder_is_refused_in_one_line(small, tmp_path):
    out = tmp_path / "run"
    with folder_lock(out, wait=False, busy="held by the test"):
        proc = run_cli("classify.py", *classify_args(small, tmp_path / "c"), f"out={out}", check=False)
    assert "another run is writing" in one_line_error(proc)
    assert sorted(p.name for p in out.iterdir()) in ([], [".lock"])  # it wrote nothing


def test_two_runs_started_together_on_one_folder_never_both_write_it(small, tmp_path):
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "scripts" / "classify.py"),
                               *classify_args(small, tmp_path / "c"), f"out={out}", f"recipe.lr={lr}"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for lr in (0.003, 0.0001)]
    outcomes = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    winners = [i for i, (rc, _, _) in enumerate(outcomes) if rc == 0]
    assert len(winners) == 1, outcomes
    loser = outcomes[1 - winners[0]][2]
    assert "another run is writing" in loser or "different configuration" in loser
    lr = (0.003, 0.0001)[winners[0]]
    assert json.loads((out / "experiment.json").read_text())["recipe"]["lr"] == lr
    assert read_run(out)["accuracy"] >= 0


def test_a_diverging_run_is_recorded_as_failed_and_never_scored(small, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("classify.py", *classify_args(small, tmp_path / "c"), f"out={out}", "recipe.lr=1e8",
                   "recipe.warmup_epochs=0", "recipe.epochs=2", check=False)
    line = one_line_error(proc)
    assert line.startswith("error: training diverged: non-finite") and "accuracy" not in proc.stdout
    failed = json.loads((out / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["epoch"] in (1, 2) and failed["step"] >= 1
    assert not (out / "results.json").exists() and not (out / "predictions.csv").exists()


def test_the_table_lists_a_diverged_row_as_failed_never_as_an_accuracy(tmp_path):
    from bias.experiment.table import Row, make_row, write_table

    done = Row("reference", "reference", "reference", {}, [0.9, 0.8], 0.5, (0.7, 0.95), None, [str(tmp_path / "r")],
               {}, ["learned", "learned"])
    diverged = make_row("canny", [{"status": "failed", "seed": 0, "transform": "canny", "family": "structural",
                                   "failure": {"what": "loss", "epoch": 2, "step": 7, "reason": "diverged"}}],
                        [tmp_path / "c"])
    md, png = write_table([done, diverged], tmp_path / "t", "t", 2)
    line = next(x for x in md.read_text().splitlines() if x.startswith("| canny"))
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2] == "**failed** (seed 0: non-finite loss at epoch 2, step 7)" and cells[3] == "failed"
    assert cells[4:7] == ["-", "-", "-"]  # no interval, drop, chance
    saved = json.loads((tmp_path / "t" / "table.json").read_text())
    assert saved[1]["accuracies"] == [] and saved[1]["mean"] is None and "step 7" in saved[1]["failures"][0]
    assert png.exists()


def test_a_failed_check_leaves_no_folder_that_blocks_the_corrected_command(small, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("classify.py", *classify_args(small, tmp_path / "c"), f"out={out}", "data.per_dataset=100",
                   check=False)
    assert "usable images" in one_line_error(proc) and not out.exists()
    run_cli("classify.py", *classify_args(small, tmp_path / "c"), f"out={out}")
    assert read_run(out)["n_train"] == 16


@pytest.mark.parametrize("junk", ["{}", "", "not json", '{"accuracy": NaN}', "[1, 2]"])
def test_damaged_results_are_moved_aside_not_trusted(tmp_path, junk):
    (tmp_path / "results.json").write_text(junk)
    results, note = read_results(tmp_path)
    assert results is None and "results.json was damaged" in note
    assert (tmp_path / "results.json.damaged").read_text() == junk and not (tmp_path / "results.json").exists()


def test_damaged_results_checkpoint_and_experiment_files_are_rebuilt_or_named(small, tmp_path):
    run_dir = tmp_path / "run"
    args = [*classify_args(small, tmp_path / "c"), f"out={run_dir}"]
    run_cli("classify.py", *args)
    first = read_run(run_dir)
    (run_dir / "results.json").write_text("{}")
    proc = run_cli("classify.py", *args)  # rebuilt from the last checkpoint: evaluated again, not retrained
    again = read_run(run_dir)
    assert "results.json was damaged" in proc.stderr and again["resumed_from_epoch"] == 1
    assert again["accuracy"] == first["accuracy"] and again["confusion"] == first["confusion"]
    assert any("results.json was damaged" in note for note in again["repaired"])
    checkpoint = run_dir / "checkpoints" / "epoch_0001" / "model.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    (run_dir / "results.json").unlink()
    run_cli("classify.py", *args)  # trained again from the first epoch: the same numbers (seeded)
    again = read_run(run_dir)
    assert again["resumed_from_epoch"] == 0 and any("epoch_0001 was damaged" in n for n in again["repaired"])
    assert again["accuracy"] == first["accuracy"] and again["history"] == first["history"]
    (run_dir / "experiment.json").write_text("{trunc")  # what the folder holds is unknown: named, not guessed
    line = one_line_error(run_cli("classify.py", *args, check=False))
    assert "is damaged" in line and f"delete the folder {run_dir}" in line


# --- transform: a killed job, its workers, two jobs on one store ----------------------------------------------
@pytest.fixture(scope="module")
def many(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("many")
    # 128 px: a batch of decoded images (1.5 MB) is more than a pipe holds, so a worker whose parent died blocks
    # writing it and never notices (PyTorch's own parent check is not reached): what left workers behind
    write_colour_dataset(root / "reds", 160, (200, 60, 60), seed=1, size=128)
    write_colour_dataset(root / "blues", 160, (60, 60, 200), seed=2, size=128)
    return {"reds": root / "reds", "blues": root / "blues"}


def transform_args(folders: dict[str, Path], cache: Path, workers: int = 0) -> list[str]:
    return ["data=folders", paths_override(folders), "all_files=true", "transform=canny", f"cache_dir={cache}",
            f"num_workers={workers}"]


def _manifest(cache: Path) -> dict:
    return json.loads(next((cache / "transforms").glob("*/manifest.json")).read_text())


def test_a_killed_transform_takes_its_workers_along_and_keeps_what_it_flushed(many, tmp_path):
    cache = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SLOW_BATCH_SECONDS": "0.3",
           "FLUSH_ITEMS": "64"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "slow_transform.py"),
                             *transform_args(many, cache, workers=2)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    forwarded = 0
    for line in proc.stdout:
        if line.startswith("forwarded "):
            forwarded = int(line.split()[1])
            if forwarded >= 224:  # 7 of 10 batches of 32
                break
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "DataLoader workers outlived their killed parent"
    run_cli("transform.py", *transform_args(many, cache))
    manifest = _manifest(cache)
    assert manifest["computed"] + manifest["reused"] == 320
    assert manifest["reused"] >= 128  # of the 224 forwarded, at most the last flush interval (64) and a batch


def test_two_transform_jobs_on_one_store_compute_each_source_once(many, tmp_path):
    cache = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SLOW_BATCH_SECONDS": "0.05"}
    cmd = [sys.executable, str(ROOT / "tests" / "helpers" / "slow_transform.py"), *transform_args(many, cache)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    summaries = [next(line for line in out.splitlines() if line.startswith("canny:")) for out, _ in outs]
    computed = [int(s.split(": ")[1].split(" computed")[0]) for s in summaries]
    assert sorted(computed) == [0, 320], summaries
    assert any("another job is filling" in err for _, err in outs)


# --- describe: the LLM call cache -----------------------------------------------------------------------------
class Echo(TextGenerator):
    identity = {"model": "echo"}
    batch_size = 4

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, max_new_tokens, stage=None):
        self.calls += len(prompts)
        return [Generation(text=f"echo {p}", prompt_tokens=1, completion_tokens=2, cached=False) for p in prompts]


class DiesAfter(Echo):
    """Echo that dies (like a killed process) once it has generated `budget` prompts."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def generate(self, prompts, max_new_tokens, stage=None):
        if self.calls + len(prompts) > self.budget:
            raise KeyboardInterrupt
        return super().generate(prompts, max_new_tokens, stage)


def test_a_killed_llm_stage_resumes_without_repeating_a_call(tmp_path):
    prompts = [f"prompt {i}" for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        CachedGenerator(DiesAfter(budget=6), tmp_path, batch_size=4).generate(prompts, 5, stage="themes")
    rest = Echo()
    out = CachedGenerator(rest, tmp_path, batch_size=4).generate(prompts, 5, stage="themes")
    assert rest.calls == 6 and [g.text for g in out] == [f"echo {p}" for p in prompts]  # 4 kept: the first batch


@pytest.mark.parametrize("damage", ["edit", "truncate", "swap"])
def test_a_damaged_llm_cache_entry_is_regenerated_and_counted_in_the_stage_ledger(tmp_path, damage):
    inner = Echo()
    CachedGenerator(inner, tmp_path).generate(["a", "b"], 5, stage="themes")
    files = sorted((tmp_path / "llm").rglob("*.json"))
    data = json.loads(files[0].read_text())
    if damage == "edit":  # other valid JSON: only the checksum tells
        files[0].write_text(json.dumps({**data, "text": "an answer nobody generated"}))
    elif damage == "truncate":
        files[0].write_text(files[0].read_text()[:30])
    else:
        files[0].write_text(files[1].read_text())  # another call's file
    again = CachedGenerator(inner, tmp_path)
    out = again.generate(["a", "b", "a"], 5, stage="themes")
    assert [g.text for g in out] == ["echo a", "echo b", "echo a"] and inner.calls == 3
    assert [g.repaired for g in out] == [True, False, False]  # the repeat of "a" is a hit on the fresh file
    ledger = again.ledger.as_dict()
    assert again.unreadable == 1 and ledger["stages"]["themes"]["damaged_cache_entries"] == 1
    assert ledger["damaged_cache_entries"] == 1
    own = TokenLedger()  # a stage that keeps its own ledger of the generations (describe.themes) counts it too
    own.record("themes", out)
    assert own.as_dict()["damaged_cache_entries"] == 1
    assert CachedGenerator(inner, tmp_path).generate(["a"], 5)[0].cached  # rewritten whole
