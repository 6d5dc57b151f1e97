"""Evaluating a model over a dataset: the evaluator protocol, the inference loop, COCO, LVIS and PASCAL
VOC AP, semantic-segmentation IoU, panoptic quality and Cityscapes' metrics."""
from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .coco_evaluation import COCOEvaluator, encode_masks, instances_to_coco_json
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .lvis_evaluation import LVISEvaluator
from .panoptic_evaluation import COCOPanopticEvaluator
from .pascal_voc_evaluation import PascalVOCDetectionEvaluator
from .sem_seg_evaluation import SemSegEvaluator
from .testing import print_csv_format, verify_results

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "inference_context",
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "SemSegEvaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "LVISEvaluator",
    "PascalVOCDetectionEvaluator",
    "instances_to_coco_json",
    "encode_masks",
    "print_csv_format",
    "verify_results",
]
