"""A project for the reliability tests, loaded through IMPORTS like a user's: a toy
meta-architecture and a tiny generated shapes dataset.

`tools/train_net.py` trains it at hundreds of iterations a second, and a checkpoint of it holds a
few MB (its "ballast"), so that with SOLVER.CHECKPOINT_PERIOD 1 writing checkpoints takes most of
the run's time and a kill at a random moment usually lands inside a save.
"""
from typing import Dict, List

import torch
from torch import nn

from d2mask.data.datasets.shapes import register_shapes
from d2mask.modeling import META_ARCH_REGISTRY

TRAIN = "reliability_toy_train"

# Enough images that generating them takes a moment, so a test can kill the generation midway.
SHAPES_PARAMS = dict(num_images=400, seed=3, image_size=40, object_size=(10, 20), min_objects=1, max_objects=2)
register_shapes(TRAIN, **SHAPES_PARAMS)


@META_ARCH_REGISTRY.register()
class ReliabilityToyModel(nn.Module):
    """Regresses the number of objects in an image from its mean colours; training only."""

    def __init__(self, cfg):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 1)
        self.ballast = nn.Parameter(torch.randn(2**19))  # 2 MB, and as much again of SGD momentum

    def forward(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        # (N, 4): each image's mean conv response
        features = torch.cat([self.conv(d["image"][None].float() / 255).mean(dim=(2, 3)) for d in batched_inputs])
        pred = self.head(features).squeeze(1)
        target = torch.tensor([float(len(d["instances"])) for d in batched_inputs])
        # a random weighting, so that the losses depend on the random generators a resume restores
        weight = 1.0 + 0.1 * torch.rand(len(batched_inputs))
        return {"loss_count": ((pred - target) ** 2 * weight).mean(), "loss_ballast": 1e-4 * self.ballast.square().mean()}
