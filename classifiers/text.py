"""Text classifiers, for transforms whose output is text (the caption transforms).

* `SentenceEncoderClassifier` (``model.name: sentence_encoder``): a transformers text encoder (the
  published sentence-t5-base, or any encoder folder), the mean of its last hidden states over the real
  tokens, and a linear head; fine-tuned in full by the ordinary trainer (`classifiers.trainer`). T5-family
  folders load as their encoder-only class (`T5EncoderModel`: sentence-t5 ships no decoder), others
  through `AutoModel`. The Dense and Normalize modules of a sentence-transformers folder are not used:
  the head is linear on the pooled states, the published "linear head".
* `embed_texts`: frozen sentence embeddings of any encoder folder (mean pooling, optionally L2
  normalised as all-MiniLM-L6-v2 is), for the fast probe (``model.name: sentence_probe``, fitted by
  `bias.experiment.text`).
* `BagOfWords`: word-count features for the bag-of-words baseline of every text run.
* `TextDataset`: the texts of a split with their labels, tokenised per item in the DataLoader workers.

The trainer hands every model its batch's input (`classifiers.data.model_input`); a text batch carries it
under ``batch["tokens"]``: ``[B, 2, max_length]`` token ids (row 0) and attention mask (row 1), right-padded. The model trims the columns no text of the batch
uses, so a batch costs its longest text, not `max_length`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from bias.core.errors import ConfigError
from bias.core.strings import as_string_column
from bias.inference.models import weight_source

#: T5-family model types whose folders load as the encoder alone
ENCODER_ONLY_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
#: a word of the bag-of-words features: letters, digits and the signs of prices and percentages
WORD = re.compile(r"[\w$%]+")


def encoder_folder(weights: Any, cache_root: str | os.PathLike = "cache") -> Path:
    """The model folder of a text encoder's `weights` (a `WeightSource`; a file inside a folder gives the
    folder, so a package weight file pinned by its sha256 names its whole model folder)."""
    path = weight_source(weights).resolve(cache_root)
    folder = path.parent if path.is_file() else path
    if not (folder / "config.json").exists():
        raise ConfigError(f"model.kwargs.weights: {folder} has no config.json; point it at a transformers text "
                          "encoder folder (with its tokenizer)")
    return folder


def load_encoder(folder: str | os.PathLike) -> tuple[nn.Module, Any]:
    """(encoder, tokenizer) from a transformers model folder."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    name = ENCODER_ONLY_CLASSES.get(config.model_type)
    cls = getattr(transformers, name) if name else transformers.AutoModel
    encoder = cls.from_pretrained(folder, config=config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return encoder, tokenizer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D] states and [B, L] mask -> [B, D]: the mean over the masked-in tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _trimmed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 2, L] ids and mask -> (ids, mask) without the trailing columns no text of the batch uses."""
    ids, mask = x[:, 0], x[:, 1]
    used = max(1, int(mask.sum(1).max().item())) if len(mask) else 1
    return ids[:, :used], mask[:, :used]


def encode(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean-pooled last hidden states of `encoder` for a [B, 2, L] batch of ids and masks."""
    ids, mask = _trimmed(x)
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return mean_pool(hidden, mask)


class SentenceEncoderClassifier(nn.Module):
    """A text encoder, mean pooling over the real tokens, a linear head; input [B, 2, L] (ids, mask)."""

    def __init__(self, encoder: nn.Module, num_classes: int, tokenizer: Any = None, max_length: int = 256) -> None:
        super().__init__()
        width = int(getattr(encoder.config, "d_model", None) or encoder.config.hidden_size)
        self.encoder = encoder
        self.head = nn.Linear(width, num_classes)
        self.tokenizer, self.max_length = tokenizer, int(max_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != 2:
            raise ValueError(f"SentenceEncoderClassifier expects [N, 2, L] token ids and masks, got {tuple(x.shape)}")
        return self.head(encode(self.encoder, x))


def sentence_classifier(num_classes: int, weights: Any = None, max_length: int = 256,
                        cache_root: str | os.PathLike = "cache") -> SentenceEncoderClassifier:
    """`model.name: sentence_encoder`: the encoder of `weights` with a fresh linear head of `num_classes`."""
    if weights is None:
        raise ConfigError("model.kwargs.weights: the sentence encoder needs weights (e.g. {hf: "
                          "sentence-transformers/sentence-t5-base, revision: main} or a local folder)")
    check_max_length(max_length)
    encoder, tokenizer = load_encoder(encoder_folder(weights, cache_root))
    return SentenceEncoderClassifier(encoder, num_classes, tokenizer, max_length)


def check_max_length(max_length: Any) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"model.kwargs.max_length: expected an integer >= 2 (tokens per text), got {max_length!r}")


def tokenize(tokenizer: Any, text: str, max_length: int) -> torch.Tensor:
    """One text -> [2, max_length] long: token ids (right-padded with the pad token) and attention mask."""
    enc = tokenizer(text, max_length=max_length, truncation=True, padding="max_length")
    return torch.tensor([enc["input_ids"], enc["attention_mask"]], dtype=torch.long)


class TextDataset(Dataset):
    """Texts with labels for the trainer: item ``(index, epoch)`` -> {"tokens": [2, L] ids and mask, ...}.

    `texts[i]` is None for a sample that has no text (its captioning failed): it comes back with
    ``ok=False`` and `reasons[i]`, and the trainer leaves it out of the loss and the metrics and reports
    it, as it does with images that fail to load. Texts are kept packed (`bias.core.strings`), not as a
    Python string per sample.
    """

    def __init__(self, texts: Sequence[str | None], labels: Sequence[int], tokenizer: Any, max_length: int,
                 report_paths: Sequence[str] | None = None, reasons: Mapping[int, str] | None = None) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers fork; each tokenises on its own
        texts = list(texts)
        self.missing = np.array([t is None for t in texts], dtype=bool)
        self.texts = as_string_column(["" if t is None else t for t in texts])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.tokenizer, self.max_length = tokenizer, int(max_length)
        self.report_paths = None if report_paths is None else as_string_column(report_paths)
        self.reasons = dict(reasons or {})

    def __len__(self) -> int:
        return len(self.labels)

    def text(self, index: int) -> str | None:
        return None if self.missing[index] else self.texts[index]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index = key[0] if isinstance(key, tuple) else key
        path = self.report_paths[index] if self.report_paths is not None else str(index)
        item = {"label": int(self.labels[index]), "index": index, "ok": True, "reason": "", "path": path}
        if self.missing[index]:
            item.update(ok=False, reason=self.reasons.get(index, "no text"),
                        tokens=torch.zeros((2, self.max_length), dtype=torch.long))
            return item
        item["tokens"] = tokenize(self.tokenizer, self.texts[index], self.max_length)
        return item

    def subset(self, positions: Sequence[int]) -> TextDataset:
        """The samples at `positions`, renumbered from 0 (a part of train to choose a grid point on)."""
        positions = np.asarray(positions, dtype=np.int64)
        texts = [self.text(int(i)) for i in positions]
        reasons = {j: self.reasons[int(i)] for j, i in enumerate(positions) if int(i) in self.reasons}
        paths = None if self.report_paths is None else [self.report_paths[int(i)] for i in positions]
        return TextDataset(texts, self.labels[positions], self.tokenizer, self.max_length, paths, reasons)


@torch.no_grad()
def embed_texts(encoder: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 64,
                max_length: int = 256, device: str | torch.device = "cpu", normalize: bool = True) -> np.ndarray:
    """Frozen sentence embeddings [n, d] float32: mean-pooled last hidden states (L2-normalised with `normalize`).

    Texts are encoded in order of length (less padding per batch) and returned in the order given.
    """
    encoder = encoder.to(device).eval()
    texts = list(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(texts), batch_size):
        chosen = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in chosen], max_length=max_length, truncation=True, padding=True,
                        return_tensors="pt")
        x = torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).to(device)
        vectors = encode(encoder, x).float()
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[chosen] = vectors.cpu().numpy()
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def words(text: str) -> list[str]:
    """The lower-cased words of a text (`WORD`)."""
    return WORD.findall(text.lower())


class BagOfWords:
    """Word-count features, scikit-learn style: ``fit(texts)`` keeps the `max_words` words found in the most
    training texts (ties by the word), ``transform(texts)`` -> float32 [n, words] of log(1 + count)."""

    def __init__(self, max_words: int = 2048) -> None:
        if max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {max_words}")
        self.max_words = int(max_words)

    def fit(self, texts: Iterable[str]) -> BagOfWords:
        documents = Counter(w for t in texts for w in set(words(t)))
        ranked = sorted(documents.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_words]
        self.vocabulary_ = {w: i for i, (w, _) in enumerate(ranked)}
        return self

    def transform(self, texts: Iterable[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), max(1, len(self.vocabulary_))), dtype=np.float32)
        for row, text in enumerate(texts):
            for word, count in Counter(words(text)).items():
                col = self.vocabulary_.get(word)
                if col is not None:
                    out[row, col] = count
        return np.log1p(out)
