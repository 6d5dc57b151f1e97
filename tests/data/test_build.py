import itertools

import pytest
import torch

from d2mask.config import get_cfg
from d2mask.data import DatasetError
from d2mask.data import build as build_module
from d2mask.data.build import min_keypoints_of
from d2mask.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from d2mask.data.samplers import TrainingSampler


def fake_items(shapes):
    """Already-mapped items (no mapper needed): an image tensor of each (h, w) and an id."""
    return [{"image": torch.zeros(3, h, w), "image_id": i} for i, (h, w) in enumerate(shapes)]


def test_aspect_ratio_grouping_batches_one_orientation():
    items = fake_items([(10, 20), (20, 10)] * 6)
    loader = build_detection_train_loader(
        items, mapper=None, sampler=TrainingSampler(len(items), seed=0), total_batch_size=3,
        aspect_ratio_grouping=True,
    )
    for batch in itertools.islice(iter(loader), 8):
        assert len(batch) == 3
        assert len({b["image"].shape[1] >= b["image"].shape[2] for b in batch}) == 1


def test_two_ranks_get_disjoint_batches_of_half_the_total(monkeypatch):
    monkeypatch.setattr(build_module.comm, "get_world_size", lambda: 2)
    items = fake_items([(10, 20)] * 8)
    seen = []
    for rank in range(2):
        sampler = TrainingSampler(len(items), seed=5, rank=rank, world_size=2)
        loader = build_detection_train_loader(items, mapper=None, sampler=sampler, total_batch_size=4,
                                              aspect_ratio_grouping=False)
        batches = list(itertools.islice(iter(loader), 2))  # one epoch of this rank's shard
        assert [len(b) for b in batches] == [2, 2]
        seen.append({b["image_id"] for batch in batches for b in batch})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8))


def test_batch_size_must_divide_over_ranks(monkeypatch):
    monkeypatch.setattr(build_module.comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"IMS_PER_BATCH \(3\) must be a positive multiple .* \(2\)"):
        build_detection_train_loader(fake_items([(4, 4)]), mapper=None, total_batch_size=3,
                                     sampler=TrainingSampler(1, seed=0, rank=0, world_size=2))


def test_loader_with_workers_maps_items():
    items = [{"value": i} for i in range(6)]
    loader = build_detection_train_loader(
        items, mapper=lambda d: {"image": torch.zeros(3, 2, 2), "value": d["value"] * 10},
        sampler=TrainingSampler(6, seed=0, shuffle=False), total_batch_size=2, aspect_ratio_grouping=False,
        num_workers=2,
    )
    # Worker k reads sampler positions k, k + 2, ...: six batches are two passes over the dataset.
    values = [d["value"] for batch in itertools.islice(iter(loader), 6) for d in batch]
    assert sorted(values) == sorted([0, 10, 20, 30, 40, 50] * 2)


def with_annotations(n_empty, n_crowd_only, n_good):
    empty = [{"file_name": f"e{i}", "annotations": []} for i in range(n_empty)]
    crowd = [{"file_name": f"c{i}", "annotations": [{"category_id": 0, "iscrowd": 1}]} for i in range(n_crowd_only)]
    good = [{"file_name": f"g{i}", "annotations": [{"category_id": 0, "iscrowd": 0}]} for i in range(n_good)]
    return empty + crowd + good


def test_filter_empty_annotations(register):
    name = register(with_annotations(2, 1, 3), thing_classes=["a"])
    assert len(get_detection_dataset_dicts([name])) == 3
    assert len(get_detection_dataset_dicts([name], filter_empty=False)) == 6


def test_images_with_too_few_labelled_keypoints_are_dropped_for_a_keypoint_model(register):
    def image(*visibilities):
        return {"file_name": "k", "annotations": [
            {"category_id": 0, "iscrowd": 0, "keypoints": [v for vis in visibilities for v in (1, 1, vis)]}
        ]}

    # labelled keypoints per image: 0, 1 (one occluded), 2
    name = register([image(0, 0), image(1, 0), image(2, 2)], thing_classes=["a"])
    assert [len(get_detection_dataset_dicts([name], min_keypoints=k)) for k in (0, 1, 2)] == [3, 2, 1]
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE = 2
    assert min_keypoints_of(cfg) == 0  # a model without keypoints keeps every image
    cfg.MODEL.KEYPOINT_ON = True
    assert min_keypoints_of(cfg) == 2
    with pytest.raises(ValueError, match="no image with at least 3 labelled keypoints"):
        get_detection_dataset_dicts([name], min_keypoints=3)


def test_empty_after_filtering_is_an_error(register):
    name = register(with_annotations(2, 1, 0), thing_classes=["a"])
    with pytest.raises(ValueError, match="empty after filtering"):
        get_detection_dataset_dicts([name])
    empty = register([], thing_classes=["a"])
    with pytest.raises(ValueError, match=f"Dataset '{empty}' is empty"):
        get_detection_dataset_dicts((empty,))


def test_string_for_dataset_tuple_is_a_clear_error():
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = "shapes_train"
    with pytest.raises(TypeError, match=r"DATASETS.TRAIN must be a tuple or list .* \('shapes_train',\)"):
        build_detection_train_loader(cfg)


def test_one_dataset_name_as_a_string_in_python(register):
    """Detectron2's Python configs write `names="coco_2017_train"`: one name, not its letters."""
    name = register(with_annotations(0, 0, 2), thing_classes=["a"])
    assert get_detection_dataset_dicts(name, filter_empty=False) == get_detection_dataset_dicts((name,), filter_empty=False)


def test_unknown_sampler_name(register):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (register(with_annotations(0, 0, 2), thing_classes=["a"]),)
    cfg.DATALOADER.SAMPLER_TRAIN = "RandomSampler"
    with pytest.raises(ValueError, match="SAMPLER_TRAIN 'RandomSampler'"):
        build_detection_train_loader(cfg, mapper=lambda d: d)


def test_test_loader_yields_each_image_once_in_order(register):
    name = register(with_annotations(2, 0, 3), thing_classes=["a"])
    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 0
    loader = build_detection_test_loader(cfg, name, mapper=lambda d: d["file_name"])
    assert list(loader) == [["e0"], ["e1"], ["g0"], ["g1"], ["g2"]]


def test_mask_model_with_an_instance_without_mask_is_an_error_when_the_loader_is_built(register):
    polygon = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    dicts = [
        {"file_name": "a.png", "image_id": 1, "annotations": [{"category_id": 0, "segmentation": polygon}]},
        {"file_name": "b.png", "image_id": 2, "annotations": [
            {"category_id": 0, "segmentation": polygon},
            {"category_id": 0, "iscrowd": 1},  # crowd annotations are not trained on: no mask needed
            {"category_id": 0},
        ]},
    ]
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (register(dicts, thing_classes=["a"]),)
    cfg.MODEL.MASK_ON = True
    cfg.DATALOADER.NUM_WORKERS = 0
    with pytest.raises(DatasetError) as e:
        build_detection_train_loader(cfg)
    assert "1 of the 3 instances of the training set have no 'segmentation', e.g. annotation 2 of image b.png " \
           "(image_id 2)" in str(e.value)
    cfg.MODEL.MASK_ON = False
    build_detection_train_loader(cfg)
