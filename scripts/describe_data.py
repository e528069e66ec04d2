"""Natural-language dataset reports: object statistics, topics, LLM themes, tested differences, one HTML file.

python scripts/describe_data.py                       # planted data, ground-truth captions -> runs/planted/describe/
python scripts/describe_data.py data=planted_objects images_per_dataset=100

(Named describe_data.py, not describe.py: a script named like the `describe` package would shadow it, as
Python looks for imports in the script's own folder first.)
"""

from bias.cli import describe

if __name__ == "__main__":
    describe()
