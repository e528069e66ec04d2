"""Transforms that keep one kind of information each; see `transforms.base.Transform`."""

from transforms.base import Transform
from transforms.registry import create_transform, get_transform_class, list_transforms, register_transform

__all__ = ["Transform", "create_transform", "get_transform_class", "list_transforms", "register_transform"]
