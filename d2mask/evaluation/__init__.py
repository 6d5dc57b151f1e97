"""Evaluating a model over a dataset: the evaluator protocol, the inference loop and COCO AP."""
from .coco_evaluation import COCOEvaluator, instances_to_coco_json
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .testing import verify_results

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "inference_context",
    "COCOEvaluator",
    "instances_to_coco_json",
    "verify_results",
]
