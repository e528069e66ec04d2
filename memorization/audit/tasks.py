"""The evaluation data of an audit, by kind: ``task=zoo``, ``image_folder``, ``hf`` or ``callable``.

Each returns a `memorization.zoo.tasks.Task` whose test split is the evaluation set (accuracy and
error masks are computed on it, as in the study); an audit has no training split (``x_train`` is
empty, it only carries the input shape). Images are decoded to RGB, area-resized to
``image_size`` x ``image_size`` and standardised with ``mean`` / ``std`` per channel; an image that
cannot be decoded is an error that lists it, never a silent drop.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bias.core.errors import ConfigError, DataError
from bias.core.registry import Registry
from memorization.zoo.tasks import Task, get_task

AUDIT_TASKS: Registry[Callable[..., Task]] = Registry("audit task kind", attr=None)
register_audit_task = AUDIT_TASKS.register


def import_target(target: str, path: str | None = None) -> Any:
    """``"package.module:function"`` -> the function; `path` (a folder) is put first on ``sys.path``."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise ConfigError(f"expected 'module:function', got {target!r}")
    module_name, attr = target.split(":")
    if path:
        folder = str(Path(path).resolve())
        if not Path(folder).is_dir():
            raise ConfigError(f"path={path}: no such folder to import {module_name} from")
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import {module_name!r} for {target!r} ({err}); give its folder with path=") from err
    if not hasattr(module, attr):
        raise ConfigError(f"{module_name} has no {attr!r} (for {target!r})")
    return getattr(module, attr)


def evaluation_task(name: str, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                    num_classes: int | None = None, info: dict[str, Any] | None = None) -> Task:
    """A `Task` whose test split is (x, y); labels must be integers in ``[0, num_classes)``."""
    x_t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    y_t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if y_t.ndim != 1 or len(y_t) != len(x_t):
        raise DataError(f"task {name}: need one integer label per input, got inputs {tuple(x_t.shape)} and labels "
                        f"{tuple(y_t.shape)}")
    if len(x_t) == 0:
        raise DataError(f"task {name}: the evaluation set is empty")
    if y_t.is_floating_point() and not torch.equal(y_t, y_t.round()):
        raise DataError(f"task {name}: labels must be integers (class indices)")
    y_t = y_t.long()
    k = int(num_classes) if num_classes is not None else int(y_t.max()) + 1
    if int(y_t.min()) < 0 or int(y_t.max()) >= k:
        raise DataError(f"task {name}: labels range over [{int(y_t.min())}, {int(y_t.max())}], expected [0, {k})")
    return Task(name, x_t[:0].clone(), y_t[:0].clone(), x_t.contiguous(), y_t, k, dict(info or {}))


def _prepare_images(images: Sequence[np.ndarray], image_size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    import cv2

    size = int(image_size)
    out = np.stack([img if img.shape[:2] == (size, size) else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                    for img in images]).astype(np.float32) / 255.0
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return ((out - m) / s).transpose(0, 3, 1, 2)


@register_audit_task("zoo")
def zoo_task(name: str = "mnist1d", kwargs: dict[str, Any] | None = None) -> Task:
    """One of our zoo tasks (`memorization.zoo.tasks`: mnist1d, digits, planted) with the study's split; its
    test split is the evaluation set, so accuracies equal the study's."""
    return get_task(name, **dict(kwargs or {}))


@register_audit_task("image_folder")
def image_folder_task(root: str, image_size: int = 32, mean: Sequence[float] = (0.5, 0.5, 0.5),
                      std: Sequence[float] = (0.5, 0.5, 0.5), max_per_class: int | None = None) -> Task:
    """``root/<class>/<image>``: one subfolder per class (sorted names = class indices), images in sorted order."""
    from bias.data.images import is_image_path, load_rgb

    folder = Path(root)
    classes = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not classes:
        raise DataError(f"task.root={root}: expected one subfolder of images per class, found none")
    images, labels, bad = [], [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in cls.rglob("*") if p.is_file() and is_image_path(p))
        if not files:
            raise DataError(f"task.root={root}: class folder {cls.name} holds no images")
        for p in files[: max_per_class or None]:
            try:
                images.append(load_rgb(p))
            except Exception as err:
                bad.append(f"{p.relative_to(folder)} ({err})")
                continue
            labels.append(label)
    if bad:
        raise DataError(f"task.root={root}: {len(bad)} unreadable image(s): {'; '.join(bad[:10])}; remove or fix them")
    x = _prepare_images(images, image_size, mean, std)
    return evaluation_task("image_folder", x, np.asarray(labels), len(classes),
                           {"root": str(folder), "classes": [c.name for c in classes], "image_size": int(image_size)})


@register_audit_task("hf")
def hf_task(path: str, split: str = "test", image_column: str = "image", label_column: str = "label",
            name: str | None = None, from_disk: bool = False, image_size: int = 32,
            mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
            max_samples: int | None = None) -> Task:
    """A Hugging Face dataset split (``datasets.load_dataset(path, name, split=...)``, or ``load_from_disk``
    with ``from_disk=true``); images (PIL) are prepared like the image folder's, array columns used as they are."""
    try:
        import datasets
    except ImportError as err:
        raise ConfigError("task=hf needs the datasets package: pip install 'understand-bias[hf]'") from err
    if from_disk:
        ds = datasets.load_from_disk(path)
        ds = ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    else:
        ds = datasets.load_dataset(path, name, split=split)
    missing = [c for c in (image_column, label_column) if c not in ds.column_names]
    if missing:
        raise DataError(f"task=hf {path}: no column(s) {missing}; it has {ds.column_names}")
    if max_samples:
        ds = ds.select(range(min(int(max_samples), len(ds))))
    values = ds[image_column]
    labels = np.asarray(ds[label_column])
    num_classes = None
    feature = ds.features.get(label_column)
    if hasattr(feature, "num_classes"):
        num_classes = int(feature.num_classes)
    if values and hasattr(values[0], "convert"):
        x = _prepare_images([np.asarray(v.convert("RGB")) for v in values], image_size, mean, std)
    else:
        x = np.asarray(values, np.float32)
    return evaluation_task("hf", x, labels, num_classes, {"path": path, "split": split, "name": name})


@register_audit_task("callable")
def callable_task(target: str, kwargs: dict[str, Any] | None = None, path: str | None = None,
                  num_classes: int | None = None) -> Task:
    """``module:function`` returning ``(inputs, labels)`` (tensors or arrays), called with `kwargs`."""
    result = import_target(target, path)(**dict(kwargs or {}))
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise DataError(f"task {target}: expected (inputs, labels), got {type(result).__name__}")
    return evaluation_task(target, result[0], result[1], num_classes, {"target": target})


def create_task(kind: str, **params: Any) -> Task:
    """``create_task("image_folder", root=..., image_size=32)``."""
    try:
        return AUDIT_TASKS.create(kind, **params)
    except TypeError as err:
        raise ConfigError(f"task={kind}: {err}") from err
