"""Known answers for the memorization metrics: error-mask IoU, max similarity, min L2, permutation alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memorization.metrics import (
    align_mlp,
    aligned_min_l2,
    error_iou,
    max_similarity,
    min_l2,
    mlp_layers,
    permute_hidden,
)
from memorization.zoo.archs import build_arch
from memorization.zoo.store import ParamSpec


def _loop_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            out[i, j] = (a[i] & b[j]).sum() / ((a[i] | b[j]).sum() + 1e-8)
    return out


def test_error_iou_hand_made_masks():
    a = torch.tensor([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 0, 0, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    iou = error_iou(a, b)
    expected = torch.tensor([[1 / 4, 1.0, 0.0], [0.0, 0.0, 0.0]])  # two empty error sets: 0 / (0 + 1e-8) = 0
    torch.testing.assert_close(iou, expected, atol=1e-6, rtol=0)


def test_error_iou_matches_pair_loop_and_chunking():
    rng = np.random.default_rng(0)
    a = rng.random((23, 301)) < 0.3
    b = rng.random((17, 301)) < 0.5
    ref = _loop_iou(a, b)
    for chunk in (1, 5, 4096):
        got = error_iou(torch.from_numpy(a), torch.from_numpy(b), chunk=chunk)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    self_iou = error_iou(torch.from_numpy(a))
    np.testing.assert_allclose(np.diag(self_iou.numpy()), 1.0, atol=1e-6)


def test_half_precision_refused_where_counts_would_be_inexact():
    masks = torch.ones(2, 3000, dtype=torch.bool)
    with pytest.raises(ValueError, match="exact only up to 2048"):
        error_iou(masks, dtype=torch.float16)


def test_max_similarity_excludes_self_explicitly():
    train = torch.tensor([[1, 1, 0, 0, 0, 0],
                          [1, 0, 0, 0, 0, 0],   # IoU with 0: 1/2
                          [0, 0, 1, 1, 1, 0],
                          [0, 0, 1, 1, 0, 0]], dtype=torch.bool)  # IoU with 2: 2/3
    v, i = max_similarity(train, train, exclude_self=True)
    torch.testing.assert_close(v, torch.tensor([0.5, 0.5, 2 / 3, 2 / 3]), atol=1e-6, rtol=0)
    assert i.tolist() == [1, 0, 3, 2]
    v_self, i_self = max_similarity(train, train)  # without exclusion every model finds itself
    assert torch.allclose(v_self, torch.ones(4)) and i_self.tolist() == [0, 1, 2, 3]
    # a generated set holding a copy of training model 2 and marked as such by index
    gen = train[[2, 0]]
    v, i = max_similarity(gen, train, self_index=torch.tensor([2, -1]))
    assert i.tolist() == [3, 0] and abs(v[0].item() - 2 / 3) < 1e-6 and abs(v[1].item() - 1.0) < 1e-6
    with pytest.raises(ValueError, match="same set"):
        max_similarity(gen, train, exclude_self=True)
    with pytest.raises(ValueError, match="nothing to compare"):
        max_similarity(train[:1], train[:1], exclude_self=True)


def test_min_l2_hand_made_vectors():
    gen = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    train = torch.tensor([[0.0, 0.0], [6.0, 8.0], [3.0, 4.5]])
    v, i = min_l2(gen, train)
    torch.testing.assert_close(v, torch.tensor([0.0, 0.5]))
    assert i.tolist() == [0, 2]
    v, i = min_l2(train, train, exclude_self=True)
    torch.testing.assert_close(v, torch.tensor([29.25 ** 0.5, 21.25 ** 0.5, 21.25 ** 0.5]))
    assert i.tolist() == [2, 2, 1]


def test_min_l2_copy_of_a_large_vector_is_exactly_zero():
    """The matmul form of cdist would report ~1e-2 here; the exact refinement must give 0."""
    g = torch.Generator().manual_seed(0)
    train = 100.0 + torch.randn(50, 2000, generator=g)
    gen = train[[7, 31]].clone()
    gen[1, 5] += 1e-3
    v, i = min_l2(gen, train, chunk=1)
    assert v[0].item() == 0.0 and i.tolist() == [7, 31]
    assert abs(v[1].item() - 1e-3) < 1e-4


def _mlp(hidden, seed):
    torch.manual_seed(seed)
    model = build_arch({"name": "mlp", "hidden": hidden}, (1, 12), 5)
    spec = ParamSpec.from_module(model)
    return model, spec, spec.flatten(model.state_dict()).detach()


@pytest.mark.parametrize("hidden", [[16], [10, 7], [6, 6, 6]])
def test_permuted_mlp_same_function_aligned_distance_zero(hidden):
    model, spec, flat = _mlp(hidden, 0)
    rng = np.random.default_rng(1)
    perms = [rng.permutation(h) for h in hidden]
    permuted = permute_hidden(flat, spec, perms)
    twin = build_arch({"name": "mlp", "hidden": hidden}, (1, 12), 5)
    twin.load_state_dict(spec.unflatten(permuted))
    x = torch.randn(32, 1, 12)
    torch.testing.assert_close(twin(x), model(x), atol=1e-5, rtol=1e-5)
    assert (permuted - flat).norm() > 0.5
    aligned, found = align_mlp(permuted, flat, spec)
    assert (aligned - flat).norm() < 1e-5
    # others: random MLPs of the same shape; the permuted copy must be found at distance 0 among them
    train = torch.stack([_mlp(hidden, s)[2] for s in range(1, 6)] + [flat])
    v_plain, _ = min_l2(permuted[None], train)
    v, i = aligned_min_l2(permuted[None], train, spec)
    assert v.item() < 1e-5 and i.item() == 5 and v_plain.item() > 0.5
    v_c, i_c = aligned_min_l2(permuted[None], train, spec, candidates=2)
    assert v_c.item() < 1e-5 and i_c.item() == 5


def test_aligned_distance_never_exceeds_plain_and_excludes_self():
    _, spec, _ = _mlp([8], 0)
    models = torch.stack([_mlp([8], s)[2] for s in range(6)])
    v_plain, _ = min_l2(models, models, exclude_self=True)
    v, i = aligned_min_l2(models, models, spec, exclude_self=True)
    assert (i != torch.arange(6)).all() and (v > 0).all()
    assert (v <= v_plain + 1e-5).all()


def test_alignment_rejects_non_mlp_specs():
    cnn = build_arch({"name": "hyperrep_cnn"}, (1, 28, 28), 10)
    with pytest.raises(ValueError, match="MLP"):
        mlp_layers(ParamSpec.from_module(cnn))
