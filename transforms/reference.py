"""The reference: the identity transform, against which every other transform's accuracy is read."""

from __future__ import annotations

from transforms.base import Transform
from transforms.registry import register_transform


@register_transform("reference")
class Reference(Transform):
    """The identity: the classifier sees the original images.

    Its accuracy is the upper bound every other transform is compared against, so it must go
    through exactly the same pipeline (group "a") with no stage of its own.
    """
    keeps = "everything"

    kind = "online"
    augment_group = "a"
    family = "reference"
    has_image_stage = False
    has_tensor_stage = False
