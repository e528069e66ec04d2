"""Natural-language dataset reports: object statistics, topics, LLM themes, tested differences, one HTML file.

python scripts/describe.py                       # planted data, ground-truth captions -> runs/planted/describe/
python scripts/describe.py data=planted_objects images_per_dataset=100
"""

import sys
from pathlib import Path
from typing import Any

# This file's folder comes first on sys.path and this file is named like the `describe` package: drop the folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _describe(cfg: Any) -> None:
    from omegaconf import OmegaConf

    from describe.run import run_describe

    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg))
    run_describe(cfg)


def main() -> None:
    """`bias.cli.describe` once the integrator adds it; until then the same Hydra app built here."""
    try:
        from bias.cli import describe
    except ImportError:
        from bias.cli import _hydra_app

        describe = _hydra_app("describe", _describe)
    describe()


if __name__ == "__main__":
    main()
