"""Dataset classification: train a classifier to tell which dataset an image came from.

    accelerate launch scripts/classify.py transform=canny
    accelerate launch scripts/classify.py data=folders data.paths='{a: /data/a, b: /data/b}' recipe=paper
"""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from bias.cli import CONFIG_DIR, check_command_line, fail_cleanly


@hydra.main(config_path=str(CONFIG_DIR), config_name="classify", version_base=None)
def main(cfg: DictConfig) -> None:
    from bias.experiment import run_classification

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    with fail_cleanly():
        run_classification(cfg)


if __name__ == "__main__":
    check_command_line(sys.argv[1:])
    main()
