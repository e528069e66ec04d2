"""The bias table: one classify run per transform (and seed), reused when present.

    python scripts/table.py                               # the classical transforms on planted data
    python scripts/table.py table=patch_sweep seeds=[0,1,2]
    python scripts/table.py data=folders data.paths='{a: /data/a, b: /data/b}' recipe=paper
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bias.cli import CONFIG_DIR, check_command_line, fail_cleanly


@hydra.main(config_path=str(CONFIG_DIR), config_name="table", version_base=None)
def main(cfg: DictConfig) -> None:
    from bias.table import run_table

    with fail_cleanly():
        run_table(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    check_command_line(sys.argv[1:])
    main()
