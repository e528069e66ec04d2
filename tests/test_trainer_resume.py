"""The trainer's checkpoint is accelerate's own state: a run killed after an epoch resumes to the same numbers.

Tiny in-memory images and a tiny network, trained by `train_classifier` itself (no CLI), a few seconds each.
The command-line kill/resume test (tests/test_cli.py) covers the same for the whole pipeline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch.utils.data import Dataset

from classifiers.trainer import TRAINER_STATE, checkpoint_folders, latest_checkpoint, train_classifier


class Blobs(Dataset):
    """Two classes of 3x16x16 noise around different means; items keyed by the sampler's (index, epoch).

    35 training samples in batches of 8: the last batch is odd, as mixup must handle."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, n)
        self.images = torch.from_numpy(rng.normal(self.labels[:, None, None, None] * 0.8, 1.0,
                                                  (n, 3, 16, 16)).astype(np.float32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        i, _ = key
        return {"image": self.images[i], "label": int(self.labels[i]), "index": i, "ok": True, "reason": "",
                "path": f"blob{i}"}


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))


RECIPE = {"batch_size": 8, "effective_batch": 8, "epochs": 3, "warmup_epochs": 1, "lr": 0.01, "min_lr": 1e-4,
          "weight_decay": 0.05, "betas": [0.9, 0.95], "eps": 1e-8, "label_smoothing": 0.1, "eval_every": 1,
          "num_workers": 0, "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5}}


class Killed(Exception):
    """Stands in for a job killed right after an epoch's checkpoint was written."""


def kill_after(epoch_to_die: int):
    def callback(epoch: int) -> None:
        if epoch == epoch_to_die:
            raise Killed

    return callback


@pytest.fixture
def fresh_accelerator():
    """A new `Accelerator` per call: its process-wide state is reset first (as a new process would start)."""

    def make(**kwargs) -> Accelerator:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return Accelerator(cpu=True, **kwargs)

    yield make
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def train(accelerator: Accelerator, run_dir, callbacks=(), scaler=None):
    if scaler is not None:  # before `prepare`, where accelerate hands its scaler to the optimizer wrapper
        accelerator.scaler = scaler
    model = tiny_net()
    outcome = train_classifier(model, Blobs(35, 1), Blobs(20, 2), RECIPE, accelerator, run_dir, seed=3,
                               num_classes=2, callbacks=callbacks)
    return outcome, {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}


def assert_same_run(straight, resumed):
    (a, wa), (b, wb) = straight, resumed
    assert a.resumed_from_epoch == 0 and b.resumed_from_epoch == 1
    assert a.history == b.history and a.steps == b.steps
    assert np.array_equal(a.evaluation.probs, b.evaluation.probs) and a.evaluation.accuracy == b.evaluation.accuracy
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_bf16_run_killed_after_an_epoch_resumes_to_the_same_metrics_and_weights(tmp_path, fresh_accelerator):
    """precision=bf16 on the CPU (autocast to bfloat16; fp16 cannot run on the CPU: accelerate enables its
    autocast and GradScaler only on GPUs). bf16 needs no GradScaler, so none is saved here; the scaler's path is
    the next test's."""
    straight = train(fresh_accelerator(mixed_precision="bf16"), tmp_path / "straight")
    assert fresh_accelerator(mixed_precision="bf16").native_amp  # autocast really was on
    with pytest.raises(Killed):
        train(fresh_accelerator(mixed_precision="bf16"), tmp_path / "resumed", [kill_after(0)])
    folder = latest_checkpoint(tmp_path / "resumed")
    assert folder is not None and folder.name == "epoch_0001"
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", TRAINER_STATE} <= {p.name for p in
                                                                                           folder.iterdir()}
    assert not (folder / "scaler.pt").exists()
    assert json.loads((folder / TRAINER_STATE).read_text())["epoch"] == 0
    resumed = train(fresh_accelerator(mixed_precision="bf16"), tmp_path / "resumed")
    assert_same_run(straight, resumed)
    assert [p.name for p in checkpoint_folders(tmp_path / "resumed")] == ["epoch_0003"]  # older ones removed
    assert straight[0].history[-1]["val_acc"] > 0.5  # it learned something: the comparison is not of two nothings


def test_the_grad_scaler_state_is_saved_and_restored(tmp_path, fresh_accelerator):
    """What accelerate does for precision=fp16 on a GPU (`Accelerator.scaler` is a GradScaler), on the CPU: a
    `torch.amp.GradScaler("cpu")` set as `accelerator.scaler` before the trainer prepares the optimizer, as
    accelerate's constructor would. Exercised: `backward` scales the loss, the optimizer wrapper unscales, steps
    and updates the scale; `save_state` writes `scaler.pt`; `load_state` restores it and the resumed run ends
    with the uninterrupted run's scale, growth tracker, metrics and weights. Not exercised on the CPU: fp16
    autocast itself and the inf/nan steps it skips (they need a GPU)."""

    def scaler():
        return torch.amp.GradScaler("cpu", init_scale=2.0**6, growth_interval=2)

    acc = fresh_accelerator()
    straight = train(acc, tmp_path / "straight", scaler=scaler())
    final_scale = acc.scaler.state_dict()
    assert final_scale["scale"] > 2.0**6  # the scale moved: restoring it is a real check
    with pytest.raises(Killed):
        train(fresh_accelerator(), tmp_path / "resumed", [kill_after(0)], scaler=scaler())
    folder = latest_checkpoint(tmp_path / "resumed")
    saved = torch.load(folder / "scaler.pt", weights_only=True)
    assert saved["scale"] > 2.0**6 and saved["growth_interval"] == 2
    acc = fresh_accelerator()
    resumed = train(acc, tmp_path / "resumed", scaler=scaler())
    assert acc.scaler.state_dict() == final_scale
    assert_same_run(straight, resumed)


def test_a_checkpoint_cut_short_is_ignored_and_a_damaged_one_is_moved_aside(tmp_path, fresh_accelerator):
    with pytest.raises(Killed):
        train(fresh_accelerator(), tmp_path / "r", [kill_after(1)])
    complete = latest_checkpoint(tmp_path / "r")
    assert complete.name == "epoch_0002"
    half = complete.with_name("epoch_0003")  # a save of the next epoch killed before its counters were written
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path / "r") == complete
    weights = complete / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    earlier = complete.with_name("epoch_0002.damaged")  # a damaged copy set aside by an earlier run
    earlier.mkdir()
    (earlier / "old").write_text("x")
    outcome, _ = train(fresh_accelerator(), tmp_path / "r")
    assert outcome.resumed_from_epoch == 0 and len(outcome.history) == 3
    assert len(outcome.repaired) == 1 and "epoch_0002 was damaged" in outcome.repaired[0]
    assert sorted(p.name for p in earlier.iterdir())[-1] == TRAINER_STATE  # replaced by the new damaged copy
    assert not (earlier / "old").exists()
    assert [p.name for p in checkpoint_folders(tmp_path / "r")] == ["epoch_0003"]
    assert (tmp_path / "r" / "checkpoints" / "epoch_0003" / TRAINER_STATE).exists()
