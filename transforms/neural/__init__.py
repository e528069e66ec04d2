"""Transforms that run a neural network through `bias.inference` (segmentation, depth, detection, ...)."""

from transforms.neural import depth, detect, objects, sam, seg, vae  # noqa: F401  (registers them)
