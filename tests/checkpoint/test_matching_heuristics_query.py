"""`DetectionCheckpointer.load("...?matching_heuristics=True")`, Detectron2's way (ViTDet's
`train.init_checkpoint`) to load a backbone whose names lack the model's prefixes, here an
MAE-style ViT checkpoint into a ViTDet backbone."""
import pytest
import torch
from torch import nn

from d2mask.checkpoint import CheckpointError, DetectionCheckpointer
from d2mask.modeling import SimpleFeaturePyramid, ViT


def _vitdet_and_mae_checkpoint(tmp_path):
    vit = ViT(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, use_rel_pos=True, pretrain_img_size=32)
    model = nn.Module()
    model.backbone = SimpleFeaturePyramid(vit, "last_feat", 16, (1.0,))
    # MAE's names are the bare ViT's; it has a class token and a final norm, no relative positions.
    weights = {k: torch.randn_like(v) for k, v in vit.state_dict().items() if "rel_pos" not in k}
    weights.update({"cls_token": torch.zeros(1, 1, 32), "norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)})
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": weights}, path)
    return model, weights, str(path)


def test_query_matches_the_names_by_suffix(tmp_path):
    model, weights, path = _vitdet_and_mae_checkpoint(tmp_path)
    DetectionCheckpointer(model).load(path + "?matching_heuristics=True")
    state = model.state_dict()
    for name in ("pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias"):
        assert torch.equal(state[f"backbone.net.{name}"], weights[name]), name


def test_without_the_query_nothing_fits_and_other_queries_are_refused(tmp_path):
    model, _, path = _vitdet_and_mae_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="none of its .* tensors fits the model"):
        DetectionCheckpointer(model).load(path)
    with pytest.raises(CheckpointError, match=r"unsupported query \['strict'\]; only matching_heuristics=True"):
        DetectionCheckpointer(model).load(path + "?matching_heuristics=True&strict=1")
