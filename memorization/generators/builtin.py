"""Importing this module registers every built-in generator."""

from memorization.generators import baselines, gpt, hyperdiffusion, hyperreps, pdiff  # noqa: F401
