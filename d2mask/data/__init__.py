"""Datasets, augmentations, dataset mappers and data loaders.

Importing this package registers the built-in datasets ("shapes_coco_train", "shapes_train", ...).
"""
from . import transforms
from .build import (
    build_batch_data_loader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from .catalog import DatasetCatalog, DatasetError, Metadata, MetadataCatalog
from .common import AspectRatioGroupedDataset, DatasetFromList, MapDataset, ToIterableDataset
from .dataset_mapper import DatasetMapper
from .datasets.builtin import register_all_builtins

__all__ = [
    "DatasetCatalog",
    "MetadataCatalog",
    "Metadata",
    "DatasetError",
    "DatasetMapper",
    "DatasetFromList",
    "MapDataset",
    "ToIterableDataset",
    "AspectRatioGroupedDataset",
    "get_detection_dataset_dicts",
    "build_batch_data_loader",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "transforms",
]

register_all_builtins()
