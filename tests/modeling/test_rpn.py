"""RPN: head layout, hand-computed losses, anchor labelling, proposals, config assembly and a project's parts."""
import math

import pytest
import torch
from torch import nn

from d2mask.config import ConfigError, get_cfg
from d2mask.layers import ShapeSpec, nonzero_tuple
from d2mask.modeling import (
    ANCHOR_MATCHER_REGISTRY,
    RPN,
    SAMPLER_REGISTRY,
    Box2BoxTransform,
    DefaultAnchorGenerator,
    Matcher,
    RandomSampler,
    StandardRPNHead,
    build_backbone,
    build_proposal_generator,
)
from d2mask.modeling.proposal_generator import add_ground_truth_to_proposals, find_top_rpn_proposals, proposal_utils
from d2mask.structures import Boxes, ImageList, Instances, pairwise_iou


class FixedHead(nn.Module):
    """An RPN head whose one-level outputs are given tensors (parameters, so gradients can be read)."""

    def __init__(self, logits, deltas):
        super().__init__()
        self.logits = nn.Parameter(logits)
        self.deltas = nn.Parameter(deltas)

    def forward(self, features):
        return [self.logits], [self.deltas]


def make_rpn(head, anchor_generator, **kwargs):
    args = dict(
        in_features=["p"],
        head=head,
        anchor_generator=anchor_generator,
        anchor_matcher=Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
        sampler=RandomSampler(batch_size_per_image=256, positive_fraction=0.5),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=256,
        pre_nms_topk=(100, 100),
        post_nms_topk=(100, 100),
    )
    args.update(kwargs)
    return RPN(**args)


def gt(image_size, boxes):
    return Instances(image_size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)))


def test_one_image_one_level_losses_by_hand():
    # Two cell anchors (10 and 20 px squares) at two locations of stride 10, offset 0.5. In anchor order
    # (location, cell anchor): a0 [0,0,10,10], a1 [-5,-5,15,15], a2 [10,0,20,10], a3 [5,-5,25,15].
    # The GT equals a3 (IoU 1, positive); a1 has IoU 1/3 (ignored); a0 1/9 and a2 1/4 (negatives).
    generator = DefaultAnchorGenerator(sizes=[[10, 20]], aspect_ratios=[[1.0]], strides=[10], offset=0.5)
    logits = torch.tensor([[[[0.5, -0.5]], [[3.0, 1.5]]]])  # (N=1, A=2, H=1, W=2): [a][w]
    deltas = torch.full((1, 8, 1, 2), 9.0)  # (N, A*4, H, W): channel a*4 + coordinate
    deltas[0, 4:8, 0, 1] = torch.tensor([0.1, -0.2, 0.3, 0.0])  # cell anchor 1 at location 1 = a3
    head = FixedHead(logits, deltas)
    rpn = make_rpn(head, generator, loss_weight={"loss_rpn_cls": 2.0, "loss_rpn_loc": 0.5}).train()
    images = ImageList(torch.zeros(1, 3, 10, 20), [(10, 20)])
    proposals, losses = rpn(images, {"p": torch.zeros(1, 1, 1, 2)}, [gt((10, 20), [5, -5, 25, 15])])

    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE of logit x with label 0
    # a0 (logit 0.5, label 0), a2 (-0.5, 0), a3 (1.5, 1); a1 (3.0) is ignored.
    expected_cls = (softplus(0.5) + softplus(-0.5) + softplus(-1.5)) / 256 * 2.0
    expected_loc = (0.1 + 0.2 + 0.3 + 0.0) / 256 * 0.5  # L1 against zero deltas (the GT is the anchor)
    assert losses["loss_rpn_cls"].item() == pytest.approx(expected_cls, rel=1e-6)
    assert losses["loss_rpn_loc"].item() == pytest.approx(expected_loc, rel=1e-6)
    (losses["loss_rpn_cls"] + losses["loss_rpn_loc"]).backward()
    # Only sampled anchors get gradients: a1's logit and every delta but a3's get none.
    assert head.logits.grad[0, 1, 0, 0] == 0 and (head.logits.grad[0, 0, 0] != 0).all()
    assert (head.deltas.grad[0, 4:8, 0, 1] != 0).sum() == 3 and head.deltas.grad[0, :4].abs().sum() == 0
    assert len(proposals) == 1 and not proposals[0].objectness_logits.requires_grad


def test_two_images_several_gt_boxes_losses_by_hand():
    # The anchors of the test above. Image 0 has GT G0 = a0 and G1 = a3: a0 and a3 are positives, each
    # matched to its own GT box; a1 (IoU 1/4 with G0, 1/3 with G1) is ignored; a2 (1/4 with G1) is
    # negative. Image 1 has one GT equal to a2: a2 positive, a0 (0), a1 (1/9), a3 (1/4) negatives.
    generator = DefaultAnchorGenerator(sizes=[[10, 20]], aspect_ratios=[[1.0]], strides=[10], offset=0.5)
    logits = torch.tensor([
        [[[0.2, -0.4]], [[3.0, 1.0]]],  # image 0: [a][w] -> a0 0.2, a2 -0.4, a1 3.0, a3 1.0
        [[[-1.0, 2.0]], [[0.5, 0.3]]],  # image 1: a0 -1.0, a2 2.0, a1 0.5, a3 0.3
    ])
    deltas = torch.full((2, 8, 1, 2), 9.0)  # only the positives' deltas enter the loss
    deltas[0, 0:4, 0, 0] = torch.tensor([0.1, 0.2, -0.1, 0.05])  # image 0, a0
    deltas[0, 4:8, 0, 1] = torch.tensor([-0.3, 0.1, 0.2, 0.0])  # image 0, a3
    deltas[1, 0:4, 0, 1] = torch.tensor([0.05, -0.05, 0.1, 0.2])  # image 1, a2
    rpn = make_rpn(FixedHead(logits, deltas), generator).train()
    targets = [gt((10, 20), [[0, 0, 10, 10], [5, -5, 25, 15]]), gt((10, 20), [10, 0, 20, 10])]

    anchors = generator([torch.zeros(2, 1, 1, 2)])
    labels, boxes = rpn.label_and_sample_anchors(anchors, targets)
    assert [lab.tolist() for lab in labels] == [[1, -1, 0, 1], [0, 0, 1, 0]]
    assert boxes[0][0].tolist() == [0, 0, 10, 10] and boxes[0][3].tolist() == [5, -5, 25, 15]
    assert boxes[1][2].tolist() == [10, 0, 20, 10]

    images = ImageList(torch.zeros(2, 3, 10, 20), [(10, 20), (10, 20)])
    _, losses = rpn(images, {"p": torch.zeros(2, 1, 1, 2)}, targets)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE of logit x with label 0; label 1: softplus(-x)
    cls_sum = (softplus(-0.2) + softplus(-0.4) + softplus(-1.0)  # image 0: a0 +, a2 -, a3 +
               + softplus(-1.0) + softplus(0.5) + softplus(-2.0) + softplus(0.3))  # image 1: a0 -, a1 -, a2 +, a3 -
    loc_sum = (0.1 + 0.2 + 0.1 + 0.05) + (0.3 + 0.1 + 0.2) + (0.05 + 0.05 + 0.1 + 0.2)  # L1; each GT is its anchor
    # both losses are divided by batch_size_per_image x the number of images
    assert losses["loss_rpn_cls"].item() == pytest.approx(cls_sum / (256 * 2), rel=1e-6)
    assert losses["loss_rpn_loc"].item() == pytest.approx(loc_sum / (256 * 2), rel=1e-6)


def labelling_rpn(**kwargs):
    # One 10 px anchor per location of a 2x2 map, stride 10, offset 0: [-5,-5,5,5], [5,-5,15,5],
    # [-5,5,5,15], [5,5,15,15]; only the last lies inside a 20x20 image.
    generator = DefaultAnchorGenerator(sizes=[[10]], aspect_ratios=[[1.0]], strides=[10], offset=0.0)
    head = FixedHead(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4, 2, 2))
    return make_rpn(head, generator, **kwargs), generator([torch.zeros(1, 1, 2, 2)])


@pytest.mark.parametrize("boundary_thresh, expected", [(-1, [0, 0, 0, 1]), (0, [-1, -1, -1, 1]), (5, [0, 0, 0, 1])])
def test_boundary_thresh_ignores_anchors_reaching_outside(boundary_thresh, expected):
    rpn, anchors = labelling_rpn(anchor_boundary_thresh=boundary_thresh)
    labels, boxes = rpn.label_and_sample_anchors(anchors, [gt((20, 20), [5, 5, 15, 15])])
    assert labels[0].tolist() == expected
    assert boxes[0].shape == (4, 4) and boxes[0][3].tolist() == [5, 5, 15, 15]


def test_detectron2_sampler_arguments_build_a_random_sampler():
    rpn, _ = labelling_rpn(sampler=None, batch_size_per_image=64, positive_fraction=0.25)
    assert isinstance(rpn.sampler, RandomSampler)
    assert (rpn.sampler.batch_size_per_image, rpn.sampler.positive_fraction, rpn.batch_size_per_image) == (64, 0.25, 64)
    with pytest.raises(ValueError, match="RPN got a sampler object and positive_fraction"):
        labelling_rpn(positive_fraction=0.25)
    with pytest.raises(ValueError, match="RPN needs a sampler object, or both"):
        labelling_rpn(sampler=None)


def test_image_without_gt_is_all_negative_then_sampled():
    rpn, anchors = labelling_rpn(sampler=RandomSampler(batch_size_per_image=3, positive_fraction=0.5))
    labels, boxes = rpn.label_and_sample_anchors(anchors, [gt((20, 20), []), gt((20, 20), [5, 5, 15, 15])])
    assert sorted(labels[0].tolist()) == [-1, 0, 0, 0]
    assert torch.equal(boxes[0], torch.zeros(4, 4))
    # The second image: its positive plus two of its three negatives.
    assert labels[1][3] == 1 and sorted(labels[1].tolist()) == [-1, 0, 0, 1]


def test_find_top_rpn_proposals_by_hand():
    nan = float("nan")
    level0 = torch.tensor([[[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]]], dtype=torch.float32)
    scores0 = torch.tensor([[3.0, 2.0, 1.0]])
    level1 = torch.tensor([[[0, 0, 10, 10], [30, 30, 30.5, 40], [nan, 0, 5, 5], [-10, -10, 5, 5]]])
    scores1 = torch.tensor([[2.5, 5.0, 4.0, 0.5]])

    def run(pre, post):
        (out,) = find_top_rpn_proposals([level0, level1], [scores0, scores1], [(100, 100)], 0.7, pre, post, 1.0)
        return out.proposal_boxes.tensor.tolist(), out.objectness_logits.tolist()

    # Level 0: [1,0,11,10] overlaps [0,0,10,10] with IoU 0.82 and goes; level 1: the thin box and the
    # NaN box go, the clipped box is outside the top 3. The same box on two levels survives twice.
    boxes, scores = run(pre=3, post=10)
    assert boxes == [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]] and scores == [3.0, 2.5, 1.0]
    boxes, scores = run(pre=4, post=10)
    assert boxes[-1] == [0, 0, 5, 5] and scores == [3.0, 2.5, 1.0, 0.5]
    boxes, scores = run(pre=4, post=2)
    assert scores == [3.0, 2.5]


def test_find_top_rpn_proposals_batch_equals_one_image_at_a_time():
    g = torch.Generator().manual_seed(0)
    sizes = [(60, 80), (80, 50), (70, 70)]

    def level(n):
        xy = torch.rand(3, n, 2, generator=g) * 70 - 5
        return torch.cat([xy, xy + torch.rand(3, n, 2, generator=g) * 30], dim=2), torch.randn(3, n, generator=g)

    (b0, s0), (b1, s1) = level(200), level(50)
    batch = find_top_rpn_proposals([b0, b1], [s0, s1], sizes, 0.5, 100, 40, 2.0)
    for i, size in enumerate(sizes):
        (single,) = find_top_rpn_proposals([b0[i:i + 1], b1[i:i + 1]], [s0[i:i + 1], s1[i:i + 1]], [size], 0.5, 100, 40, 2.0)
        assert torch.equal(batch[i].proposal_boxes.tensor, single.proposal_boxes.tensor)
        assert torch.equal(batch[i].objectness_logits, single.objectness_logits)
        assert batch[i].image_size == size and 0 < len(single) <= 40
        assert torch.all(single.objectness_logits[:-1] >= single.objectness_logits[1:])


def test_proposal_selection_per_image_equals_the_accelerators_one_nms_for_all():
    # On the CPU each image's NMS stops at its post_nms_topk survivors; on an accelerator one NMS
    # covers every image and level. Crowded boxes (NMS drops many), some invalid.
    g = torch.Generator().manual_seed(1)
    num_images, num_levels, per_level = 3, 4, 700
    centres = torch.rand(num_images, num_levels * per_level // 5, 2, generator=g) * 150
    xy = centres.repeat_interleave(5, dim=1) + torch.randn(num_images, num_levels * per_level, 2, generator=g)
    boxes = torch.cat([xy, xy + 8 + torch.rand(num_images, num_levels * per_level, 2, generator=g) * 30], dim=2)
    scores = torch.randn(num_images, num_levels * per_level, generator=g)
    valid = torch.rand(num_images, num_levels * per_level, generator=g) > 0.1
    level_ids = torch.arange(num_levels).repeat_interleave(per_level)
    for post_nms_topk in (50, 400, 3000):
        per_image = [
            proposal_utils._nms_one_image(boxes[i], scores[i], valid[i], level_ids, 0.6, num_levels, post_nms_topk)
            + i * num_levels * per_level
            for i in range(num_images)
        ]
        all_at_once = proposal_utils._nms_all_images(boxes, scores, valid, level_ids, 0.6, num_levels, post_nms_topk)
        for one, other in zip(per_image, all_at_once):
            assert torch.equal(one, other) and 0 < len(one) <= post_nms_topk


def small_rpn_cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.RPN.IN_FEATURES", "['p3']",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[16]]",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]",
        *overrides,
    ])
    return cfg


SMALL_SHAPES = {"p3": ShapeSpec(channels=4, stride=8)}


def test_train_and_test_topk_come_from_config():
    cfg = small_rpn_cfg("MODEL.RPN.NMS_THRESH", "1.0", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "50",
                        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "40", "MODEL.RPN.PRE_NMS_TOPK_TEST", "30",
                        "MODEL.RPN.POST_NMS_TOPK_TEST", "20")
    rpn = build_proposal_generator(cfg, SMALL_SHAPES)
    assert isinstance(rpn, RPN) and isinstance(rpn.rpn_head, StandardRPNHead)
    features = {"p3": torch.randn(1, 4, 8, 8)}  # 64 anchors
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    proposals, losses = rpn.train()(images, features, [gt((64, 64), [10, 10, 30, 30])])
    assert len(proposals[0]) == 40 and set(losses) == {"loss_rpn_cls", "loss_rpn_loc"}
    proposals, losses = rpn.eval()(images, features)
    assert len(proposals[0]) == 20 and losses == {}


@pytest.mark.parametrize("nms_thresh, kept", [(0.3, False), (0.5, True)])
def test_nms_thresh_from_config_decides_whether_an_overlapping_proposal_survives(nms_thresh, kept):
    rpn = build_proposal_generator(small_rpn_cfg("MODEL.RPN.NMS_THRESH", str(nms_thresh)), SMALL_SHAPES).eval()
    anchors = rpn.anchor_generator([torch.zeros(1, 4, 8, 8)])  # 16 px squares centred every 8 px
    logits = torch.full((1, 64), -5.0)
    logits[0, 27], logits[0, 28] = 5.0, 4.0  # neighbours [16,16,32,32] and [24,16,40,32]: IoU 1/3
    (proposals,) = rpn.predict_proposals(anchors, [logits], [torch.zeros(1, 64, 4)], [(64, 64)])
    boxes = proposals.proposal_boxes.tensor.tolist()
    assert boxes[0] == [16, 16, 32, 32]
    assert ([24, 16, 40, 32] in boxes) == kept


def test_training_without_gt_is_an_error():
    rpn = build_proposal_generator(small_rpn_cfg(), SMALL_SHAPES).train()
    with pytest.raises(ValueError, match="needs gt_instances"):
        rpn(ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)]), {"p3": torch.randn(1, 4, 8, 8)})


def test_head_conv_names_and_output_shapes():
    head = StandardRPNHead(in_channels=4, num_anchors=3, conv_dims=[8, 6])
    assert [n for n, _ in head.named_parameters()] == [
        "conv.conv0.weight", "conv.conv0.bias", "conv.conv1.weight", "conv.conv1.bias",
        "objectness_logits.weight", "objectness_logits.bias", "anchor_deltas.weight", "anchor_deltas.bias",
    ]
    logits, deltas = head([torch.zeros(2, 4, 5, 7), torch.zeros(2, 4, 3, 4)])
    assert [tuple(t.shape) for t in logits] == [(2, 3, 5, 7), (2, 3, 3, 4)]
    assert [tuple(t.shape) for t in deltas] == [(2, 12, 5, 7), (2, 12, 3, 4)]


def test_conv_dims_minus_one_is_the_previous_layers_channels():
    """Detectron2's meaning: [8, -1] on 4 input channels is 4 -> 8 -> 8, not 4 -> 8 -> 4."""
    head = StandardRPNHead(in_channels=4, num_anchors=3, conv_dims=[8, -1])
    assert tuple(head.conv.conv0.weight.shape) == (8, 4, 3, 3)
    assert tuple(head.conv.conv1.weight.shape) == (8, 8, 3, 3)
    assert tuple(head.objectness_logits.weight.shape) == (3, 8, 1, 1)
    assert tuple(StandardRPNHead(in_channels=4, num_anchors=3, conv_dims=[-1]).conv.weight.shape) == (4, 4, 3, 3)


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.RPN.IN_FEATURES", "['p4']"], "MODEL.RPN.IN_FEATURES"),
    (["MODEL.RPN.BBOX_REG_LOSS_TYPE", "l2"], "MODEL.RPN.BBOX_REG_LOSS_TYPE"),
    (["MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32]]"], "MODEL.ANCHOR_GENERATOR.SIZES"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        build_proposal_generator(small_rpn_cfg(*overrides), SMALL_SHAPES)


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou", "diou", "ciou"])
def test_every_box_loss_type_trains(loss_type):
    rpn = build_proposal_generator(small_rpn_cfg("MODEL.RPN.BBOX_REG_LOSS_TYPE", loss_type), SMALL_SHAPES).train()
    _, losses = rpn(ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)]), {"p3": torch.randn(1, 4, 8, 8)},
                    [gt((64, 64), [[10, 10, 30, 30], [30, 20, 60, 44]])])
    total = losses["loss_rpn_cls"] + losses["loss_rpn_loc"]
    total.backward()
    assert losses["loss_rpn_loc"] > 0 and torch.isfinite(total)
    assert rpn.rpn_head.anchor_deltas.weight.grad.abs().sum() > 0


def test_rpn_learns_to_propose_the_gt_box():
    torch.manual_seed(0)
    rpn = build_proposal_generator(small_rpn_cfg("MODEL.ANCHOR_GENERATOR.SIZES", "[[12, 24]]"), SMALL_SHAPES).train()
    features = {"p3": torch.randn(1, 4, 8, 8)}
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    targets = [gt((64, 64), [13, 17, 43, 39])]
    optimizer = torch.optim.Adam(rpn.parameters(), lr=0.02)
    for _ in range(60):
        _, losses = rpn(images, features, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    proposals, _ = rpn.eval()(images, features)
    best = proposals[0].proposal_boxes[0]
    assert pairwise_iou(best, targets[0].gt_boxes).item() > 0.8


def test_r18_fpn_backbone_and_rpn_train_end_to_end():
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']", "MODEL.FPN.OUT_CHANNELS", "16",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]",
        "MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
    ])
    backbone = build_backbone(cfg)
    rpn = build_proposal_generator(cfg, backbone.output_shape()).train()
    images = ImageList(torch.randn(2, 3, 64, 96), [(64, 96), (50, 70)])
    proposals, losses = rpn(images, backbone(images.tensor), [gt((64, 96), [4, 4, 40, 50]), gt((50, 70), [])])
    sum(losses.values()).backward()
    assert backbone.bottom_up.res3[0].conv1.weight.grad.abs().sum() > 0
    assert backbone.bottom_up.stem.conv1.weight.grad is None  # FREEZE_AT 2
    for p, (h, w) in zip(proposals, images.image_sizes):
        assert 0 < len(p) <= 50
        t = p.proposal_boxes.tensor
        assert (t[:, 0] >= 0).all() and (t[:, 2] <= w).all() and (t[:, 1] >= 0).all() and (t[:, 3] <= h).all()


# A project's own matcher and sampler, registered here and selected by name through the config.
@ANCHOR_MATCHER_REGISTRY.register()
class TestRPNCentreInsideMatcher:
    """Positive when the anchor's centre lies inside a GT box (the first such box), else negative."""

    __test__ = False

    def __init__(self, cfg, stage_cfg):
        self.stage = stage_cfg

    def __call__(self, gt_boxes, boxes, num_per_level=None):
        centres = boxes.get_centers()  # (N, 2)
        g = gt_boxes.tensor  # (M, 4)
        inside = ((centres[None] > g[:, None, :2]) & (centres[None] < g[:, None, 2:])).all(dim=2)  # (M, N)
        hit, idx = inside.to(torch.uint8).max(dim=0)
        return idx, hit.to(torch.int8)


@SAMPLER_REGISTRY.register()
class TestRPNKeepEverythingSampler(RandomSampler):
    """Keeps every positive and negative: a project subclass overriding one method."""

    __test__ = False

    def __call__(self, match_labels):
        return nonzero_tuple(match_labels == 1)[0], nonzero_tuple(match_labels == 0)[0]


def test_project_matcher_and_sampler_are_selected_through_config():
    cfg = small_rpn_cfg("MODEL.RPN.MATCHER.NAME", "TestRPNCentreInsideMatcher",
                        "MODEL.RPN.SAMPLER.NAME", "TestRPNKeepEverythingSampler",
                        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "4")
    rpn = build_proposal_generator(cfg, SMALL_SHAPES)
    assert isinstance(rpn.anchor_matcher, TestRPNCentreInsideMatcher) and rpn.anchor_matcher.stage is cfg.MODEL.RPN
    assert isinstance(rpn.sampler, TestRPNKeepEverythingSampler)
    anchors = rpn.anchor_generator([torch.zeros(1, 4, 8, 8)])  # centres at multiples of 8
    labels, boxes = rpn.label_and_sample_anchors(anchors, [gt((64, 64), [1, 1, 17, 9])])
    # Centres (8, 8) and (16, 8) are inside the GT box; all 62 others are kept as negatives.
    assert nonzero_tuple(labels[0] == 1)[0].tolist() == [9, 10]
    assert (labels[0] == 0).sum() == 62
    assert boxes[0][9].tolist() == [1, 1, 17, 9]


def test_add_ground_truth_to_proposals():
    proposals = Instances((20, 20), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]])),
                          objectness_logits=torch.tensor([0.3]))
    targets = gt((20, 20), [[1, 1, 9, 9], [2, 2, 4, 4]])
    (out,) = add_ground_truth_to_proposals([targets], [proposals])
    assert out.proposal_boxes.tensor.tolist() == [[0, 0, 5, 5], [1, 1, 9, 9], [2, 2, 4, 4]]
    assert out.objectness_logits[0] == pytest.approx(0.3)
    assert torch.sigmoid(out.objectness_logits[1:]).tolist() == pytest.approx([1.0, 1.0])
    proposals.extra = torch.zeros(1)
    with pytest.raises(ValueError, match="field 'extra'"):
        add_ground_truth_to_proposals([targets], [proposals])
