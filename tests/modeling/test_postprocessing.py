import torch

from d2mask.modeling.postprocessing import detector_postprocess
from d2mask.structures import Boxes, Instances


def test_rescales_clips_drops_empty_and_pastes_masks():
    results = Instances((50, 60))
    results.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 30.0, 20.0], [55.0, 45.0, 70.0, 60.0], [61.0, 0.0, 70.0, 10.0]]))
    results.scores = torch.tensor([0.9, 0.8, 0.7])
    results.pred_classes = torch.tensor([0, 1, 2])
    results.pred_masks = torch.ones(3, 1, 4, 4)
    out = detector_postprocess(results, 100, 120)

    assert out.image_size == (100, 120)
    # x2 on both axes, then clipped; the third box lies outside the image and is dropped.
    assert out.pred_boxes.tensor.tolist() == [[20.0, 20.0, 60.0, 40.0], [110.0, 90.0, 120.0, 100.0]]
    assert torch.equal(out.scores, results.scores[:2]) and out.pred_classes.tolist() == [0, 1]
    assert out.pred_masks.shape == (2, 100, 120) and out.pred_masks.dtype == torch.bool
    # A full 4 x 4 mask fills its 40 x 20 box except at the corners, where bilinear sampling mixes in
    # the zeros beyond the mask on both axes. Per-axis weights of the mask on the first pixels:
    # x (10 px per cell): 0.55, 0.65, 0.75, 0.85; y (5 px per cell): 0.6, 0.8, 1.0. Products below 0.5:
    # (y, x) offsets (0, 0), (0, 1), (0, 2), (1, 0) in each corner.
    expected = torch.zeros(100, 120, dtype=torch.bool)
    expected[20:40, 20:60] = True
    for dy, dx in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        expected[[20 + dy, 20 + dy, 39 - dy, 39 - dy], [20 + dx, 59 - dx, 20 + dx, 59 - dx]] = False
    assert torch.equal(out.pred_masks[0], expected)
    # The input is left as it was.
    assert results.pred_boxes.tensor[0].tolist() == [10.0, 10.0, 30.0, 20.0] and results.image_size == (50, 60)


def test_proposals_and_non_uniform_scaling():
    proposals = Instances((40, 40))
    proposals.proposal_boxes = Boxes(torch.tensor([[4.0, 8.0, 20.0, 40.0]]))
    proposals.objectness_logits = torch.tensor([1.0])
    out = detector_postprocess(proposals, 20, 80)
    assert out.proposal_boxes.tensor.tolist() == [[8.0, 4.0, 40.0, 20.0]]


def test_keypoints_scale_like_the_boxes_and_keep_their_scores():
    results = Instances((40, 40))
    results.pred_boxes = Boxes(torch.tensor([[4.0, 8.0, 20.0, 40.0]]))
    results.pred_keypoints = torch.tensor([[[5.0, 10.0, 0.75], [19.0, 39.0, 0.25]]])
    out = detector_postprocess(results, 20, 80)  # x2 in x, x0.5 in y
    assert out.pred_keypoints.tolist() == [[[10.0, 5.0, 0.75], [38.0, 19.5, 0.25]]]
    assert results.pred_keypoints[0, 0].tolist() == [5.0, 10.0, 0.75]  # the input is left as it was
