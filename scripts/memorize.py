"""Memorization study: fit a weight generator on a model zoo and judge its samples against trivial baselines.

    python scripts/memorize.py task=mnist1d_mlp generator=pdiff
    python scripts/memorize.py task=mnist1d_mlp generator=hyperreps zoo.n_models=300 generator.steps=2000
    python scripts/memorize.py study=gpt_cpu           # a recorded CPU-sized run (configs/memorize/study/)
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bias.cli import CONFIG_DIR, fail_cleanly
from memorization.study import register_resolvers

register_resolvers()


@hydra.main(config_path=str(CONFIG_DIR), config_name="memorize", version_base=None)
def main(cfg: DictConfig) -> None:
    from memorization.study import run_study

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    with fail_cleanly():
        run_study(cfg, dict(HydraConfig.get().runtime.choices))


if __name__ == "__main__":
    main()
