"""Sample a dataset's URLs with a fixed seed and download them into webdataset shards.

    python scripts/download.py dataset=cc metadata=/data/meta/cc12m.tsv out=/data/ycd/cc
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from bias.cli import CONFIG_DIR, fail_cleanly


@hydra.main(config_path=str(CONFIG_DIR), config_name="download", version_base=None)
def main(cfg: DictConfig) -> None:
    from bias.download import download_from_config

    with fail_cleanly():
        download_from_config(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()
