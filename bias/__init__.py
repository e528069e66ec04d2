"""understand-bias: measure and explain bias in visual datasets by dataset classification.

Layers, lowest first (a module imports only from its own layer or below; `tests/test_architecture.py`
checks it): `bias.core` (shared tools) -> `bias.data` (images, indexes, splits, sources) ->
`bias.inference` (model loading, the batched runner, the output store) -> `transforms` ->
`classifiers` -> `bias.experiment` (classify runs, baselines, verdict, the bias table) and the
sibling `memorization` study -> `describe` -> `bias.cli` (the console commands).
"""
