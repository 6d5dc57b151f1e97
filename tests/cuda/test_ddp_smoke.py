"""Two training steps of each backbone, meta-architecture and project under DistributedDataParallel with
find_unused_parameters=False (two gloo processes on the CPU): a parameter that gets no gradient stops
DDP at the second step, as it would stop a multi-GPU run."""
import json
import os

import pytest
import torch
import torch.distributed as dist

from d2mask.engine import create_ddp_model, launch
from d2mask.modeling import build_model
from d2mask.layers import ShapeSpec
from d2mask.modeling.backbone.resnet import build_resnet_backbone
from d2mask.utils import comm
from d2mask.utils.events import EventStorage

from projects.ConvNeXt.convnext import ConvNeXt
from tests.cuda.tiny_configs import batch, tiny_config

CONFIGS = {
    "ResNet-18 FPN": "configs/Shapes/mask_rcnn_R_18_FPN_shapes.yaml",
    "ResNet-50 FPN": "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "ResNet-50 C4": "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml",
    "RetinaNet ResNet-50 FPN": "configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml",
    "Cascade ResNet-50 FPN": "configs/Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml",
    "ConvNeXt FPN": "projects/ConvNeXt/configs/mask_rcnn_ConvNeXt_FPN_shapes.yaml",
    "DenseText (ATSS)": "projects/DenseText/configs/faster_rcnn_R_18_FPN_dense_atss.yaml",
    "PortExample (SE-ResNet-18 FPN)": "projects/PortExample/configs/mask_rcnn_SE_R_18_FPN_shapes.yaml",
}
# A backbone asked for fewer stages than it has: the others must not be built.
BACKBONES = {
    "ConvNeXt res2-res4": lambda: ConvNeXt(depths=[1] * 4, dims=[8] * 4, out_features=["res2", "res3", "res4"]),
    "ResNet-50 res2-res3": lambda: build_resnet_backbone(
        tiny_config(CONFIGS["ResNet-50 FPN"], "cpu", ["MODEL.RESNETS.OUT_FEATURES", ["res2", "res3"]]), ShapeSpec(channels=3)
    ),
}


def _detector_loss(model) -> torch.Tensor:
    return sum(model(batch()).values())


def _backbone_loss(model) -> torch.Tensor:
    return sum(x.sum() for x in model(torch.randn(2, 3, 64, 64)).values())


def _train_two_steps(out_dir: str) -> None:
    torch.set_num_threads(1)  # as in the test process (conftest.py): two processes share the cores
    cases = {name: (lambda path=path: build_model(tiny_config(path, "cpu")), _detector_loss) for name, path in CONFIGS.items()}
    cases.update({name: (build, _backbone_loss) for name, build in BACKBONES.items()})
    results = {}
    for name, (build, loss_of) in cases.items():
        # a group per case, so that a case failing mid-step leaves nothing pending for the next
        group = dist.new_group(backend="gloo")
        try:
            torch.manual_seed(0)
            model = create_ddp_model(build(), find_unused_parameters=False, process_group=group)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            for step in range(2):
                with EventStorage(step):
                    loss = loss_of(model)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            results[name] = "ok"
        except Exception as e:  # reported by the test of this case
            results[name] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(results, f)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("ddp"))
    launch(_train_two_steps, 2, args=(out_dir,))
    return [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(2)]


@pytest.mark.parametrize("name", list(CONFIGS) + list(BACKBONES))
def test_two_ddp_steps_without_find_unused_parameters(ddp_results, name):
    assert [results[name] for results in ddp_results] == ["ok", "ok"]
