"""Precompute a transform for a run's images, split across processes, resumable.

    accelerate launch scripts/transform.py transform=canny data=planted
"""

import sys

import hydra
from omegaconf import DictConfig

from bias.cli import CONFIG_DIR, check_command_line, fail_cleanly


@hydra.main(config_path=str(CONFIG_DIR), config_name="transform", version_base=None)
def main(cfg: DictConfig) -> None:
    from bias.experiment import precompute_for_config

    with fail_cleanly():
        precompute_for_config(cfg)


if __name__ == "__main__":
    check_command_line(sys.argv[1:])
    main()
