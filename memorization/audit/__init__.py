"""Audit any weight generator: the user's training and generated checkpoints in, the study's measures and verdict out.

    python scripts/audit.py train=ckpts/train generated=ckpts/generated model=zoo task=zoo ...

* `memorization.audit.checkpoints`: folders of ``.safetensors`` / ``.pt`` files or stacked tensor files,
  checked from their headers before any work, read lazily;
* `memorization.audit.models`: the network the parameters belong to (zoo architecture, timm name,
  ``module:function``), the audited parameter patterns and the base checkpoint for the rest;
* `memorization.audit.tasks`: the evaluation data (our zoo tasks, an image folder per class, a Hugging
  Face dataset, ``module:function``);
* `memorization.audit.run`: `run_audit`, the study's measures (`memorization.study`, `memorization.metrics`,
  `memorization.report`) on those checkpoints, written to ``audit.json``, ``report.md`` and figures.
"""
