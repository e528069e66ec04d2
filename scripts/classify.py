"""Dataset classification: train a classifier to tell which dataset an image came from.

accelerate launch scripts/classify.py transform=canny
accelerate launch scripts/classify.py data=folders data.paths='{a: /data/a, b: /data/b}' recipe=paper
"""

from bias.cli import classify

if __name__ == "__main__":
    classify()
