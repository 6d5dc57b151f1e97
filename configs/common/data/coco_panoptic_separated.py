"""Loaders of COCO panoptic in Detectron2's "separated" form (Panoptic FPN's): COCO's loaders and
augmentations on `coco_2017_{train,val}_panoptic_separated`, images without instances kept (their
label maps still train the semantic head), evaluated for box and mask AP, mIoU and PQ.
"""
from d2mask.config import LazyCall as L
from d2mask.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator

from .coco import dataloader

dataloader.train.dataset.names = ["coco_2017_train_panoptic_separated"]
dataloader.train.dataset.filter_empty = False
dataloader.test.dataset.names = ["coco_2017_val_panoptic_separated"]

dataloader.evaluator = [
    L(COCOEvaluator)(dataset_name="${...test.dataset.names[0]}", output_dir="${train.output_dir}/inference"),
    L(SemSegEvaluator)(dataset_name="${...test.dataset.names[0]}", output_dir="${train.output_dir}/inference"),
    L(COCOPanopticEvaluator)(dataset_name="${...test.dataset.names[0]}", output_dir="${train.output_dir}/inference"),
]
