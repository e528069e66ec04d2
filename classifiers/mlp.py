"""A small MLP for feature-vector transforms (``color_hist_vector``): ``model=mlp``.

A transform with ``output = "vector"`` hands the classifier a 1-D float vector per image
(`Transform.vector_size()` long) instead of an image, so a ConvNeXt does not apply. The question is
the same, how well datasets separate on what the transform keeps, and a small MLP is the
matching flexible classifier for a fixed-length vector; ``hidden=[]`` turns it into multinomial
logistic regression, the linear-probe baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NORMS = ("batch", "layer", "none")


class MLPClassifier(nn.Module):
    """Input normalisation, then ``Linear -> GELU (-> Dropout)`` per hidden width, then a Linear head.

    Why an input normalisation: histogram entries are tiny (a uniform 32-bin histogram is 1/32
    per bin, a joint 512-cell one ~0.002) and very unevenly spread across features (most joint
    cells are almost always empty), so un-normalised inputs make the first layer's useful
    learning rate differ by orders of magnitude between features. ``input_norm="batch"``
    (default) standardises each feature over the batch (BatchNorm1d, with running statistics at
    evaluation): it keeps everything that distinguishes one sample from another. ``"layer"``
    (LayerNorm over each sample's features) is offered but is lossy for histograms: it removes
    each sample's own mean and scale, so a histogram and the same histogram blended with a
    uniform one become identical. ``"none"`` feeds the raw vector.

    A training batch of a single sample (the last, incomplete batch of an epoch; the trainer
    does not drop it) has no batch statistics: it is normalised with the running statistics
    instead of raising.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256),
                 dropout: float = 0.0, input_norm: str = "batch") -> None:
        """
        Args:
            in_features: length of the input vectors (the transform's ``vector_size()``).
            num_classes: number of datasets to tell apart.
            hidden: widths of the hidden layers; empty gives logistic regression (one Linear).
            dropout: dropout probability after each hidden activation (0 adds no Dropout module).
            input_norm: "batch", "layer" or "none" (see the class docstring).
        """
        super().__init__()
        if in_features < 1 or num_classes < 1:
            raise ValueError(f"in_features and num_classes must be positive, got {in_features}, {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        if input_norm == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(in_features)
        elif input_norm == "layer":
            self.norm = nn.LayerNorm(in_features)
        else:
            self.norm = nn.Identity()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            if int(h) < 1:
                raise ValueError(f"hidden widths must be positive, got {list(hidden)}")
            layers += [nn.Linear(width, int(h)), nn.GELU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        if isinstance(norm, nn.BatchNorm1d) and self.training and x.shape[0] == 1:
            return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                                training=False, eps=norm.eps)
        return norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_features] float in, [N, num_classes] logits out."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"MLPClassifier expects [N, {self.in_features}] inputs, got {tuple(x.shape)}")
        return self.head(self.body(self._normalise(x)))
