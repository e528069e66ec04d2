"""The audit for checkpoints too large to hold at once: every set is read in coordinate blocks.

A *source* is a set of flat parameter vectors that can give ``rows(start, stop)`` (whole vectors, for
evaluation, a few at a time) and ``columns(blocks)`` (one block of coordinates of every vector, for
distances). `memorization.audit.checkpoints.CheckpointSet` is one; the baselines of the study
(`memorization.generators.baselines`) are rebuilt here as lazy sources over the training set with
the same definitions: training + N(0, sigma^2) noise, means of k random training models, a
per-coordinate Gaussian fitted to the training models. Their random draws come per (row, block) from
seeds derived from the audit seed, so a block can be drawn again identically; the numbers therefore
differ from the in-memory generators' (one draw for the whole tensor), not their distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bias.core.seeding import item_seed
from memorization.audit.checkpoints import Block
from memorization.metrics import max_similarity
from memorization.metrics.similarity import streamed_min_l2


class _LazyBaseline:
    """Rows ``i`` of a baseline built from the training source `train`, block by block."""

    def __init__(self, train, blocks: Sequence[Sequence[Block]], n: int, seed: int) -> None:
        self.train, self.blocks, self.n, self.seed = train, list(blocks), int(n), int(seed)
        self.numel = train.numel

    def __len__(self) -> int:
        return self.n

    def _noise(self, rows: range, b: int, width: int) -> Tensor:
        out = torch.empty(len(rows), width)
        for j, i in enumerate(rows):
            out[j] = torch.randn(width, generator=torch.Generator().manual_seed(item_seed(self.seed, 7, i, b)))
        return out

    def block(self, b: int, rows: range) -> Tensor:
        raise NotImplementedError

    def columns(self, blocks: Sequence[Block]) -> Tensor:
        return self.block(self.blocks.index(list(blocks)), range(self.n))

    def rows(self, start: int = 0, stop: int | None = None) -> Tensor:
        rows = range(start, min(self.n, self.n if stop is None else stop))
        return torch.cat([self.block(b, rows) for b in range(len(self.blocks))], 1)


class NoiseRows(_LazyBaseline):
    """``train[i] + sigma * N(0, 1)`` per coordinate, i uniform over the training models (seeded)."""

    def __init__(self, train, blocks, n: int, seed: int, sigma: float) -> None:
        super().__init__(train, blocks, n, seed)
        self.sigma = float(sigma)
        self.picks = torch.randint(0, len(train), (self.n,), generator=torch.Generator().manual_seed(seed))

    def block(self, b: int, rows: range) -> Tensor:
        t = self.train.columns(self.blocks[b])[self.picks[rows.start:rows.stop]]
        return t + self.sigma * self._noise(rows, b, t.shape[1])


class AverageRows(_LazyBaseline):
    """The mean of k distinct random training models per row (seeded)."""

    def __init__(self, train, blocks, n: int, seed: int, k: int) -> None:
        super().__init__(train, blocks, n, seed)
        g = torch.Generator().manual_seed(seed)
        self.k = min(int(k), len(train))
        self.picks = torch.stack([torch.randperm(len(train), generator=g)[: self.k] for _ in range(self.n)])

    def block(self, b: int, rows: range) -> Tensor:
        return self.train.columns(self.blocks[b])[self.picks[rows.start:rows.stop]].mean(1)


class GaussianRows(_LazyBaseline):
    """Per coordinate, N(mean, std^2) of the training models (population std), drawn per (row, block)."""

    def block(self, b: int, rows: range) -> Tensor:
        t = self.train.columns(self.blocks[b])
        mean, std = t.mean(0), (t.std(0, correction=0) if len(t) > 1 else torch.zeros(t.shape[1]))
        return mean + std * self._noise(rows, b, t.shape[1])


class StreamingEvaluator:
    """`memorization.study.ClassificationEvaluator` over sources: the same metrics, read block by block."""

    kind = "classification"
    quality_label, closeness_label = "test accuracy", "max similarity to training (error IoU)"

    def __init__(self, zoo, train, blocks: Sequence[Sequence[Block]], eval_rows: int, refine: int,
                 device=None, progress: bool = False) -> None:
        self.zoo, self.train, self.blocks = zoo, train, list(blocks)
        self.eval_rows, self.refine, self.device = max(1, int(eval_rows)), int(refine), device
        self.task = zoo.get_task()
        self.ref_accuracy, self.ref_masks = self.evaluate(train)

    def evaluate(self, source) -> tuple[Tensor, Tensor]:
        accs, masks = [], []
        for a in range(0, len(source), self.eval_rows):
            acc, mask = self.zoo.evaluate(source.rows(a, a + self.eval_rows), chunk=self.eval_rows, device=self.device,
                                          task=self.task)
            accs.append(acc)
            masks.append(mask)
        return torch.cat(accs), torch.cat(masks)

    def _cols(self, source):
        return lambda b: source.columns(self.blocks[b])

    def __call__(self, source, exclude_self: bool = False, precomputed=None) -> dict[str, np.ndarray]:
        acc, masks = precomputed or self.evaluate(source)
        sim, sim_idx = max_similarity(masks, self.ref_masks, exclude_self)
        if exclude_self:
            l2, l2_idx = streamed_min_l2(self._cols(source), len(self.blocks), len(source), exclude_self=True,
                                         refine=self.refine)
        else:
            l2, l2_idx = streamed_min_l2(self._cols(source), len(self.blocks), len(source), self._cols(self.train),
                                         len(self.train), refine=self.refine)
        return {"accuracy": acc.numpy(), "max_similarity": sim.numpy(), "nearest_behaviour": sim_idx.numpy(),
                "min_l2": l2.numpy(), "nearest": l2_idx.numpy(), "quality": acc.numpy(), "closeness": sim.numpy()}

    def reference_metrics(self) -> dict[str, np.ndarray]:
        return self(self.train, exclude_self=True, precomputed=(self.ref_accuracy, self.ref_masks))
