"""`python -m d2mask.registry` lists every registry, and a config's IMPORTS add their names."""
import subprocess
import sys
import textwrap

from d2mask.registry import all_registries


def test_every_extension_point_has_a_registry():
    names = set(all_registries())
    assert names == {
        "ANCHOR_GENERATOR", "ANCHOR_MATCHER", "BACKBONE", "META_ARCH", "PROPOSAL_GENERATOR",
        "ROI_BOX_HEAD", "ROI_HEADS", "ROI_KEYPOINT_HEAD", "ROI_MASK_HEAD", "RPN_HEAD", "SAMPLER", "SEM_SEG_HEADS",
    }


def test_cli_lists_builtins_and_config_imports(tmp_path):
    (tmp_path / "cli_proj_matchers.py").write_text(textwrap.dedent('''
        from d2mask.modeling.matcher import ANCHOR_MATCHER_REGISTRY, Matcher

        @ANCHOR_MATCHER_REGISTRY.register()
        class CliTestMatcher(Matcher):
            """A matcher that exists only for this test."""
        '''))
    config = tmp_path / "c.yaml"
    config.write_text('IMPORTS: ["cli_proj_matchers"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "d2mask.registry", "--config-file", str(config)],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout
    assert "ANCHOR_MATCHER:" in out and "  Matcher  - " in out
    assert "CliTestMatcher  - A matcher that exists only for this test." in out
    assert "build_resnet_fpn_backbone" in out and "StandardROIHeads" in out
    assert "ROI_KEYPOINT_HEAD:" in out and "  KRCNNConvDeconvUpsampleHead  - " in out
    assert "build_retinanet_resnet_fpn_backbone" in out and "CascadeROIHeads" in out and "  RetinaNet  - " in out
    assert "  PanopticFPN  - " in out and "  SemanticSegmentor  - " in out and "  SemSegFPNHead  - " in out
