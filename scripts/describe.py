"""Natural-language dataset reports: object statistics, topics, LLM themes, tested differences, one HTML file.

python scripts/describe.py                       # planted data, ground-truth captions -> runs/planted/describe/
python scripts/describe.py data=planted_objects images_per_dataset=100
"""

import sys
from pathlib import Path

# This file's folder comes first on sys.path and this file is named like the `describe` package: drop the folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from bias.cli import describe  # noqa: E402  (after the sys.path fix above)

if __name__ == "__main__":
    describe()
