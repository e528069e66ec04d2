"""Turning images and captions into words (object statistics, topics, reports). Filled by its own issue."""
