"""Defaults of the input pipeline: transforms, datasets and data loaders."""
from ..key_docs import define


def add_data_defaults(cfg) -> None:
    define(cfg, "INPUT.MIN_SIZE_TRAIN", (800,), "Shortest-edge sizes in training (choices, or a [min, max] range).")
    define(cfg, "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice", "How MIN_SIZE_TRAIN is read: choice or range.")
    define(cfg, "INPUT.MAX_SIZE_TRAIN", 1333, "Longest edge allowed after resizing, in training.")
    define(cfg, "INPUT.MIN_SIZE_TEST", 800, "Shortest-edge size in inference; 0 disables resizing.")
    define(cfg, "INPUT.MAX_SIZE_TEST", 1333, "Longest edge allowed after resizing, in inference.")
    define(cfg, "INPUT.RANDOM_FLIP", "horizontal", "Random flip in training: horizontal, vertical or none.")
    define(cfg, "INPUT.CROP.ENABLED", False, "Randomly crop training images.")
    define(cfg, "INPUT.CROP.TYPE", "relative_range", "Crop size kind: relative, relative_range, absolute or absolute_range.")
    define(cfg, "INPUT.CROP.SIZE", [0.9, 0.9], "Crop size (h, w), read according to INPUT.CROP.TYPE.")
    define(cfg, "INPUT.FORMAT", "BGR", "Channel order the model receives: BGR, RGB or L.")
    define(cfg, "INPUT.MASK_FORMAT", "polygon", "How GT masks are kept: polygon or bitmask.")
    define(cfg, "INPUT.MAX_IMAGE_PIXELS", 100_000_000, "Largest image read (width x height, checked in its header before "
           "decoding); a larger one is an error naming the file. Bounds the memory of a decompression bomb (a 100 KB PNG "
           "can declare 30000x30000 pixels, 2.7 GB decoded).")

    define(cfg, "DATASETS.TRAIN", (), "Registered dataset names to train on.")
    define(cfg, "DATASETS.TEST", (), "Registered dataset names to evaluate on.")
    define(cfg, "DATASETS.ROOT", "", "Directory of built-in datasets (generated shapes; COCO, LVIS, VOC in Detectron2's layout); empty means $D2MASK_DATASETS, else $DETECTRON2_DATASETS, else ~/.cache/d2mask.")

    define(cfg, "DATALOADER.NUM_WORKERS", 4, "Data loading worker processes per training process.")
    define(cfg, "DATALOADER.ASPECT_RATIO_GROUPING", True, "Batch landscape and portrait images separately.")
    define(cfg, "DATALOADER.SAMPLER_TRAIN", "TrainingSampler", "TrainingSampler or RepeatFactorTrainingSampler.")
    define(cfg, "DATALOADER.REPEAT_THRESHOLD", 0.0, "Frequency threshold of RepeatFactorTrainingSampler.")
    define(cfg, "DATALOADER.FILTER_EMPTY_ANNOTATIONS", True, "Drop training images without (non-crowd) annotations.")
