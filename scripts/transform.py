"""Precompute a transform for a run's images, split across processes, resumable.

accelerate launch scripts/transform.py transform=canny data=planted
"""

from bias.cli import transform

if __name__ == "__main__":
    transform()
