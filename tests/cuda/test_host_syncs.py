"""The host syncs of the pieces a training step repeats, counted on the fake GPU: each is one the
result needs (a size known only from the data), none is an accident of how it is computed."""
import pytest
import torch

from d2mask.layers import bincount_bounded
from d2mask.modeling.poolers import ROIPooler
from d2mask.modeling.proposal_generator.proposal_utils import find_top_rpn_proposals
from d2mask.structures import Boxes, Instances

from tests.cuda.fake_cuda import CUDA, FakeCuda


def test_bincount_bounded_is_bincount():
    values = torch.tensor([3, 0, 3, 1, 3])
    assert bincount_bounded(values, 5).tolist() == [1, 1, 0, 3, 0]
    weights = torch.tensor([1, 0, 1, 1, 0])
    assert bincount_bounded(values, 4, weights=weights).tolist() == torch.bincount(values, weights, minlength=4).long().tolist()
    assert bincount_bounded(values[:0], 2).tolist() == [0, 0]


def test_multilevel_pooler_syncs_once():
    pooler = ROIPooler(2, scales=(1 / 4, 1 / 8, 1 / 16), sampling_ratio=1, pooler_type="ROIAlignV2")
    with FakeCuda() as cuda:
        features = [torch.randn(2, 3, 64 // s, 64 // s, device="cuda") for s in (4, 8, 16)]
        boxes = [Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 60.0, 60.0]], device="cuda"))] * 2
        cuda.reset()
        pooled = pooler(features, boxes)
        assert cuda.num_syncs == 1  # the boxes per level, to split them
    assert pooled.shape == (4, 3, 2, 2) and pooled.device == CUDA


def test_proposal_selection_syncs_for_nms_and_the_boxes_per_image():
    # Level 0 of two 20 x 20 images: four boxes each, one with a NaN score, one smaller than the
    # minimum size; the two valid boxes of image 0 overlap and NMS keeps the higher-scoring.
    boxes = torch.tensor([
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [5.0, 5.0, 5.5, 5.5], [1.0, 1.0, 6.0, 6.0]],
        [[2.0, 2.0, 8.0, 8.0], [10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 4.0, 4.0], [12.0, 0.0, 19.0, 5.0]],
    ])
    logits = torch.tensor([[0.2, 0.9, 3.0, float("nan")], [0.1, 0.3, 0.2, 0.05]])
    expected = find_top_rpn_proposals([boxes], [logits], [(20, 20)] * 2, 0.5, 4, 3, min_box_size=1.0)
    with FakeCuda() as cuda:
        proposals = find_top_rpn_proposals(
            [boxes.to("cuda")], [logits.to("cuda")], [(20, 20)] * 2, 0.5, 4, 3, min_box_size=1.0
        )
        assert cuda.num_syncs == 2
    for on_gpu, on_cpu, scores in zip(proposals, expected, ([0.9], [0.3, 0.2, 0.1])):
        torch.testing.assert_close(on_gpu.objectness_logits.elem, torch.tensor(scores))
        torch.testing.assert_close(on_cpu.objectness_logits, torch.tensor(scores))
    # image 1: clipped to the image, and the 4th box (score 0.05) cut by post_nms_topk = 3
    assert proposals[1].proposal_boxes.tensor.elem.tolist() == [[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]]


def test_masking_instances_syncs_once_for_all_fields():
    with FakeCuda() as cuda:
        instances = Instances((10, 10), a=torch.arange(4, device="cuda"), b=torch.zeros(4, 2, device="cuda"))
        instances.c = Boxes(torch.zeros(4, 4, device="cuda"))
        cuda.reset()
        selected = instances[instances.a % 2 == 1]
        assert cuda.num_syncs == 1
    assert selected.a.elem.tolist() == [1, 3] and len(selected.c) == 2


def test_masking_instances_with_a_mask_of_another_length_is_an_error():
    instances = Instances((10, 10), a=torch.arange(4), b=torch.arange(4))
    with pytest.raises(IndexError, match="length 4 indexed with a mask of length 3"):
        instances[torch.tensor([True, False, True])]

