"""The Hydra configs, top-level `configs/` in the checkout, installed as `bias.configs` (`pkg://bias.configs`): config groups data/, transform/, recipe/, model/, table/, memorize/."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
