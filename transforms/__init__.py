"""Transforms that keep one kind of information each; see `transforms.base.Transform`.

Importing the package registers the built-in transforms (`transforms.reference`, `transforms.classical`,
`transforms.neural`);
a new module of built-ins gets one line below.
"""

from transforms.base import Transform
from transforms.registry import create_transform, get_transform_class, list_transforms, register_transform

__all__ = ["Transform", "create_transform", "get_transform_class", "list_transforms", "register_transform"]

from transforms import reference  # noqa: E402, F401, I001
from transforms.classical import colour, colour_hist, edges, frequency, hog, shuffle, sift  # noqa: E402, F401, I001
from transforms import neural  # noqa: E402, F401, I001
