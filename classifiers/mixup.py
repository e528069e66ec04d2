"""Mixup and CutMix with label smoothing: timm's `Mixup` and `SoftTargetCrossEntropy`, seeded per step.

Per element (timm's ``mode="elem"``): each sample is mixed with its partner in the reversed batch; with
probability `switch_prob` by CutMix (lambda ~ Beta(cutmix_alpha), corrected to the pasted box's true area),
otherwise by Mixup (lambda ~ Beta(mixup_alpha)); the targets are the label-smoothed one-hot rows mixed alike.
With mixing off (`prob` 0, or both alphas 0: the cpu recipe) the loss is the plain label-smoothed cross-entropy.

Batches of any size: timm's Mixup needs an even batch, ours can be odd (the last batch of an epoch, or one
that lost a broken file), so the even-sized front of the batch is mixed and an odd last sample keeps its own
image and label-smoothed target. Feature vectors (not images) get Mixup only (CutMix pastes image boxes);
token ids are never mixed.

timm draws from numpy's global generator: each call seeds it from the caller's words (run seed, step,
process) and restores it afterwards, so a resumed run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy


@contextlib.contextmanager
def numpy_global_seed(words: Sequence[int]) -> Iterator[None]:
    """numpy's global generator seeded from `words` (non-negative 32-bit ints) inside the block, as it was after."""
    saved = np.random.get_state()
    np.random.seed(np.random.SeedSequence([int(w) for w in words]).generate_state(4))
    try:
        yield
    finally:
        np.random.set_state(saved)


class MixupCutmix:
    """`(inputs, targets) = mix(x, labels, seed_words)`, and `mix.loss(logits, targets)` for them.

    With mixing on, the targets are class-probability rows and the loss timm's `SoftTargetCrossEntropy`; off,
    the targets are the labels and the loss `torch.nn.CrossEntropyLoss(label_smoothing=...)`.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, mode: str = "elem") -> None:
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.active = prob > 0 and (mixup_alpha > 0 or cutmix_alpha > 0)
        common = {"prob": prob, "switch_prob": switch_prob, "mode": mode, "label_smoothing": label_smoothing,
                  "num_classes": num_classes}
        self._images = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, **common) if self.active else None
        self._vectors = (Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=0.0, **common)
                         if self.active and mixup_alpha > 0 else None)
        self.loss: torch.nn.Module = (SoftTargetCrossEntropy() if self.active
                                      else torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing))

    def __call__(self, x: torch.Tensor, labels: torch.Tensor,
                 seed_words: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixes `x` in place (as timm does: pass a tensor of your own) and returns it with its targets."""
        if not self.active:
            return x, labels
        if not x.is_floating_point():
            raise ValueError("mixup mixes images or feature vectors, not token ids: set recipe.mixup.prob=0")
        even = len(x) - len(x) % 2
        targets = mixup_target(labels, self.num_classes, 1.0, self.label_smoothing)
        mixer = self._images if x.dim() == 4 else self._vectors
        if mixer is not None and even:
            with numpy_global_seed(seed_words):
                _, targets[:even] = mixer(x[:even], labels[:even])
        return x, targets
