"""Mixup and CutMix with label smoothing, per element, seeded per step.

Each sample is mixed with its partner in the reversed batch, so odd batch sizes (a batch that
lost a broken file) work. With probability `switch_prob` a sample uses CutMix
(lambda ~ Beta(cutmix_alpha)), otherwise Mixup (lambda ~ Beta(mixup_alpha)); CutMix's lambda is
corrected to the pasted box's true area.
"""

from __future__ import annotations

import numpy as np
import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    out = torch.full((len(labels), num_classes), off, device=labels.device)
    out.scatter_(1, labels[:, None], 1.0 - smoothing + off)
    return out


class MixupCutmix:
    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1) -> None:
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        if not self.active or len(x) == 0:
            return x, targets
        n = len(x)
        h, w = x.shape[-2:] if x.ndim == 4 else (0, 0)
        use_cut = np.zeros(n, dtype=bool)
        apply = rng.random(n) < self.prob
        if x.ndim != 4:  # feature vectors: mixup only
            pass
        elif self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cut = rng.random(n) < self.switch_prob
        elif self.cutmix_alpha > 0:
            use_cut[:] = True
        mix_l = rng.beta(self.mixup_alpha, self.mixup_alpha, n) if self.mixup_alpha > 0 else np.ones(n)
        cut_l = rng.beta(self.cutmix_alpha, self.cutmix_alpha, n) if self.cutmix_alpha > 0 else np.ones(n)
        if x.ndim != 4 and self.mixup_alpha <= 0:
            apply[:] = False
        lam = np.where(apply, np.where(use_cut, cut_l, mix_l), 1.0).astype(np.float32)
        partner = x.flip(0)
        out = x.clone()
        for i in range(n):
            if not apply[i] or lam[i] >= 1.0:
                continue
            if use_cut[i]:
                cut = np.sqrt(1.0 - lam[i])
                ch, cw = int(h * cut), int(w * cut)
                cy, cx = rng.integers(h), rng.integers(w)
                y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
                x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
                out[i, :, y0:y1, x0:x1] = partner[i, :, y0:y1, x0:x1]
                lam[i] = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
            else:
                out[i] = lam[i] * x[i] + (1 - lam[i]) * partner[i]
        lam_t = torch.from_numpy(lam).to(x.device)[:, None]
        return out, lam_t * targets + (1 - lam_t) * targets.flip(0)
