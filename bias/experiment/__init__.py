"""The experiment layer: classify runs, their baselines and verdict, results, the bias table and the
known-answer check."""
