"""Loaders of COCO-format datasets, with Detectron2's COCO augmentations.

The dataset names must be registered before the loaders are built, e.g. with
`d2mask.data.datasets.register_coco_instances("coco_2017_train", {}, json_file, image_root)` in a
module the config imports. Other datasets: override `dataloader.train.dataset.names` and
`dataloader.test.dataset.names`.
"""
from d2mask.config import LazyCall as L
from d2mask.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from d2mask.data import transforms as T
from d2mask.evaluation import COCOEvaluator

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=["coco_2017_train"], filter_empty=True),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=[
                L(T.ResizeShortestEdge)(
                    short_edge_length=[640, 672, 704, 736, 768, 800], max_size=1333, sample_style="choice"
                ),
                L(T.RandomFlip)(horizontal=True),
            ],
            image_format="BGR",
            use_instance_mask=True,
            instance_mask_format="polygon",
            recompute_boxes=False,
        ),
        total_batch_size=16,  # summed over all processes
        aspect_ratio_grouping=True,
        num_workers=4,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=["coco_2017_val"], filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333, sample_style="choice")],
            image_format="${...train.mapper.image_format}",
        ),
        num_workers=4,
    ),
    # Evaluates on the first test dataset and writes its predictions under the run's output dir.
    evaluator=L(COCOEvaluator)(
        dataset_name="${..test.dataset.names[0]}", output_dir="${train.output_dir}/inference"
    ),
)
