"""Unconditional generation: train one DiT per dataset, sample it, and write a folder of samples per dataset.

python scripts/uncon_gen.py data=planted train.steps=2000 sample.n=800       # then classify the printed folders
accelerate launch scripts/uncon_gen.py data=webdataset ...                   # the published DiT-B/2 recipe
"""

from bias.cli import uncon_gen

if __name__ == "__main__":
    uncon_gen()
