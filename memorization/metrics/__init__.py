"""Novelty and quality metrics of generated weights against a training zoo.

* `error_iou`, `max_similarity` (behaviour: IoU of test error sets), `min_l2` (weight space),
  in `memorization.metrics.similarity`;
* `align_mlp`, `aligned_min_l2` (hidden-unit permutation alignment) in `.alignment`;
* `evaluate_params` (accuracy and error masks of many parameter vectors at once) in `.evaluation`;
* Chamfer distance for neural fields lives in `memorization.metrics.fields` (generators helper).
"""

from memorization.metrics.alignment import align_mlp, aligned_min_l2, mlp_layers, permute_hidden
from memorization.metrics.evaluation import evaluate_params
from memorization.metrics.similarity import error_iou, max_similarity, min_l2

__all__ = ["error_iou", "max_similarity", "min_l2", "align_mlp", "aligned_min_l2", "mlp_layers", "permute_hidden",
           "evaluate_params"]
