"""The Hydra configs, top-level `configs/` in the checkout, installed as `bias.configs` (`pkg://bias.configs`): config groups data/, transform/, recipe/, model/, table/, memorize/; audit/ is the root of the audit command's own configs (its model/ and task/ groups)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
