"""Transforms that run a neural network through `bias.inference` (segmentation, depth, detection, ...)."""
