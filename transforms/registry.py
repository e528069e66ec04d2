"""Name-based registry of transforms: a name is the whole API.

    @register_transform("canny")
    class Canny(Transform): ...

    create_transform("canny", low=50)
    list_transforms()
"""

from __future__ import annotations

from typing import Any

from bias.core.registry import Registry, UnknownNameError
from transforms.base import Transform


class UnknownTransformError(UnknownNameError):
    """No transform is registered under this name."""


TRANSFORMS: Registry[type[Transform]] = Registry(
    "transform", error=UnknownTransformError,
    hint="Register a new one with @register_transform and add configs/transform/<name>.yaml.")

register_transform = TRANSFORMS.register  # class decorator: @register_transform("canny")
list_transforms = TRANSFORMS.names
get_transform_class = TRANSFORMS.get


def create_transform(name: str, **params: Any) -> Transform:
    return TRANSFORMS.create(name, **params)
