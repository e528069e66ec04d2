"""Transforms that run a neural network through `bias.inference` (segmentation, depth, detection, ...)."""

from transforms.neural import caption, depth, detect, generate, imagenet, objects, sam, seg, vae  # noqa: F401  (registers them)
