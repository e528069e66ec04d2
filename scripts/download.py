"""Sample a dataset's URLs with a fixed seed and download them into webdataset shards.

python scripts/download.py dataset=cc metadata=/data/meta/cc12m.tsv out=/data/ycd/cc
"""

from bias.cli import download

if __name__ == "__main__":
    download()
