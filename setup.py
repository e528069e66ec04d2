"""The one thing pyproject.toml cannot say: the Hydra configs live in the top-level `configs/` folder of the
checkout, and are installed as the package `bias.configs` (so `pkg://bias.configs` works from any directory)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bias*", "transforms*", "classifiers*", "describe*", "memorization*"]),
              "bias.configs"],
    package_dir={"bias.configs": "configs"},
)
