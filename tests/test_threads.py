"""Torch threads per process (`bias.core.distributed.configure_threads`) and the memory layout of the trainer."""

from __future__ import annotations

import logging

import pytest
import torch

from bias.core import distributed
from classifiers.trainer import as_layout, memory_format


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_accelerate_launch_on_cpu_gets_its_share_of_the_cores(monkeypatch, restore_threads, caplog):
    caplog.set_level(logging.INFO, logger="bias")
    monkeypatch.setattr(distributed, "cpu_cores", lambda: 4)
    monkeypatch.setattr(distributed, "use_cpu", lambda: True)
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.configure_threads() == 2 and torch.get_num_threads() == 2
    assert "using 2 torch threads per process" in caplog.text
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # one core each: nothing to change
    torch.set_num_threads(1)
    assert distributed.configure_threads() == 1


def test_an_explicit_count_wins_and_other_launchers_are_left_alone(monkeypatch, restore_threads):
    monkeypatch.setattr(distributed, "cpu_cores", lambda: 4)
    monkeypatch.setattr(distributed, "use_cpu", lambda: True)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    assert distributed.configure_threads(3) == 3 and torch.get_num_threads() == 3
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")  # e.g. the test suite's OMP_NUM_THREADS=1: kept
    torch.set_num_threads(1)
    assert distributed.configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    monkeypatch.setattr(distributed, "use_cpu", lambda: False)  # on GPUs the data loaders' threads matter more
    assert distributed.configure_threads() == 1


def test_channels_last_is_the_same_network():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    x = torch.randn(4, 3, 12, 12)
    layout = memory_format({"channels_last": True})
    assert layout is torch.channels_last and memory_format({}) is torch.contiguous_format
    y = conv.to(memory_format=layout)(as_layout(x, layout))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, conv(x.contiguous()), atol=1e-5)
    vec = torch.randn(4, 7)
    assert as_layout(vec, layout) is vec  # feature vectors pass through
