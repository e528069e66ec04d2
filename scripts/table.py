"""The bias table: one classify run per transform (and seed), reused when present.

python scripts/table.py                               # the classical transforms on planted data
python scripts/table.py table=patch_sweep seeds=[0,1,2]
python scripts/table.py data=folders data.paths='{a: /data/a, b: /data/b}' recipe=paper
"""

from bias.cli import table

if __name__ == "__main__":
    table()
