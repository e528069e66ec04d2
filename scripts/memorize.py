"""Memorization study: fit a weight generator on a model zoo and judge its samples against trivial baselines.

python scripts/memorize.py task=mnist1d_mlp generator=pdiff
python scripts/memorize.py task=mnist1d_mlp generator=hyperreps zoo.n_models=300 generator.steps=2000
python scripts/memorize.py study=gpt_cpu           # a recorded CPU-sized run (configs/memorize/study/)
"""

from bias.cli import memorize

if __name__ == "__main__":
    memorize()
