"""Classifiers by name, through timm: `create_classifier("convnext_tiny", num_classes=3)`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch

from bias.core.errors import BiasError, ConfigError


class UnknownModelError(BiasError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class ModelArgumentError(ConfigError, TypeError):
    """`model.kwargs` that the architecture does not take; the message says how to pick a model cleanly."""


#: classifiers of text (the caption transforms): a fine-tuned sentence encoder, and the frozen-embedding
#: probe (fitted by `bias.experiment.text`, not trained by the trainer)
TEXT_MODELS = ("sentence_encoder", "sentence_probe")
LOCAL_MODELS = ("mlp", *TEXT_MODELS)


def check_model_name(name: str) -> None:
    if name not in LOCAL_MODELS and not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:15]
        raise UnknownModelError(
            f"unknown model {name!r}; timm has e.g. {', '.join(close) or 'convnext_tiny, resnet50'} "
            "(see timm.list_models())"
        )


def create_classifier(name: str, num_classes: int, pretrained: bool = False,
                      kwargs: Mapping[str, Any] | None = None, in_features: int | None = None) -> torch.nn.Module:
    """A timm model with a fresh `num_classes` head; `kwargs` override the architecture (depths, dims, ...).

    `mlp` is the classifier of feature-vector transforms and needs `in_features`; `sentence_encoder` is
    the fine-tuned text classifier of text transforms (`classifiers.text`, kwargs: weights, max_length).
    """
    check_model_name(name)
    extra = dict(kwargs or {})
    for key, value in list(extra.items()):
        if isinstance(value, list):
            extra[key] = tuple(value)
    if name == "mlp":
        from classifiers.mlp import MLPClassifier

        if in_features is None:
            raise ValueError("model=mlp classifies feature vectors: use it with a vector transform (e.g. color_hist_vector)")
        return MLPClassifier(in_features, num_classes, **extra)
    if name == "sentence_encoder":
        from classifiers.text import sentence_classifier

        return sentence_classifier(num_classes, **dict(kwargs or {}))
    if name == "sentence_probe":
        raise ValueError("model=sentence_probe is a logistic regression on frozen embeddings, fitted by "
                         "bias.experiment.text, not a network to build")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **extra)
    except TypeError as err:
        raise ModelArgumentError(
            f"model.kwargs {dict(kwargs or {})} do not fit model {name!r} ({err}). Hydra merges overrides into the "
            f"current model config, so `model.name={name}` keeps the previous model's kwargs: choose the model as a "
            f"group instead, `model=timm model.name={name}` (add model.kwargs.KEY=VALUE for its own arguments)"
        ) from err


def check_classifier(name: str, num_classes: int, kwargs: Mapping[str, Any] | None = None,
                     in_features: int | None = None) -> None:
    """Build the classifier on the meta device (no memory, no weights): bad names or kwargs fail in a second."""
    with torch.device("meta"):
        create_classifier(name, num_classes, False, kwargs, in_features)
