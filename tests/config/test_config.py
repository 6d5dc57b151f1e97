"""The YAML config: overrides, types, unknown keys, _BASE_ chains, IMPORTS, dump/reload."""
import textwrap

import pytest

from d2mask.config import CfgNode, ConfigError, get_cfg


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_get_cfg_returns_independent_copies_with_detectron2_defaults():
    a, b = get_cfg(), get_cfg()
    a.MODEL.RPN.NMS_THRESH = 0.1
    assert b.MODEL.RPN.NMS_THRESH == 0.7
    assert b.MODEL.RPN.IOU_THRESHOLDS == [0.3, 0.7] and b.MODEL.RPN.IOU_LABELS == [0, -1, 1]
    assert b.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS == (10.0, 10.0, 5.0, 5.0)
    assert b.MODEL.RPN.MATCHER.NAME == "Matcher" and b.MODEL.ROI_HEADS.SAMPLER.NAME == "RandomSampler"


def test_merge_from_list_accepts_pairs_and_key_equals_value():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RPN.SMOOTH_L1_BETA", "0.5", "SOLVER.STEPS=(10, 20)", "MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.RPN.SMOOTH_L1_BETA == 0.5
    assert cfg.SOLVER.STEPS == (10, 20)
    assert cfg.MODEL.DEVICE == "cpu"


def test_int_where_float_expected_becomes_float():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("MODEL.RPN.IN_FEATURES", "p2", "expected a list"),
        ("SOLVER.MAX_ITER", "1.5", "expected a int"),
        ("MODEL.MASK_ON", "1", "expected a bool"),
        ("SOLVER.BASE_LR", "fast", "expected a float"),
    ],
)
def test_wrong_type_names_key_value_and_type(key, value, expected):
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_list([key, value])
    assert key in str(e.value) and expected in str(e.value) and value in str(e.value)


def test_unknown_key_on_command_line_suggests_nearest():
    with pytest.raises(ConfigError, match=r"MODEL\.RPN\.SMOTH_L1_BETA.*Did you mean MODEL\.RPN\.SMOOTH_L1_BETA"):
        get_cfg().merge_from_list(["MODEL.RPN.SMOTH_L1_BETA", "0.1"])


def test_unknown_key_in_file_names_the_file(tmp_path):
    f = write(tmp_path / "bad.yaml", """
        MODEL:
          RPN:
            NMS_TRESH: 0.5
        """)
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(f)
    assert "MODEL.RPN.NMS_TRESH" in str(e.value) and f in str(e.value) and "MODEL.RPN.NMS_THRESH" in str(e.value)


def test_override_missing_value_and_flag_among_overrides_are_errors():
    with pytest.raises(ConfigError, match="has no value"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="--resume"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR", "0.1", "--resume"])


def test_group_key_cannot_be_set_to_a_value():
    with pytest.raises(ConfigError, match="group of keys"):
        get_cfg().merge_from_list(["MODEL.RPN", "1"])


def test_three_level_base_chain_with_relative_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    write(tmp_path / "root.yaml", """
        SOLVER:
          BASE_LR: 0.1
          MAX_ITER: 100
        IMPORTS: []
        """)
    write(tmp_path / "a" / "mid.yaml", """
        _BASE_: "../root.yaml"
        SOLVER:
          MAX_ITER: 200
        MODEL:
          MASK_ON: True
        """)
    leaf = write(tmp_path / "a" / "b" / "leaf.yaml", """
        _BASE_: "../mid.yaml"
        SOLVER:
          STEPS: (50, 150)
        """)
    cfg = get_cfg()
    cfg.merge_from_file(leaf)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (0.1, 200, (50, 150))
    assert cfg.MODEL.MASK_ON is True


def test_missing_and_cyclic_base_are_errors(tmp_path):
    missing = write(tmp_path / "m.yaml", '_BASE_: "nope.yaml"\n')
    with pytest.raises(ConfigError, match="nope.yaml.*not found"):
        get_cfg().merge_from_file(missing)
    write(tmp_path / "x.yaml", '_BASE_: "y.yaml"\n')
    y = write(tmp_path / "y.yaml", '_BASE_: "x.yaml"\n')
    with pytest.raises(ConfigError, match="Cyclic _BASE_"):
        get_cfg().merge_from_file(y)


def test_malformed_yaml_reports_the_line(tmp_path):
    f = write(tmp_path / "broken.yaml", "SOLVER:\n  BASE_LR: 0.1\n  STEPS: [1, 2\nMODEL: {}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml at line \d+"):
        get_cfg().merge_from_file(f)


def test_a_non_utf8_file_or_a_directory_is_a_config_error(tmp_path):
    (tmp_path / "latin.yaml").write_bytes("SOLVER:\n  BASE_LR: 0.1  # café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.yaml is not UTF-8 text \(byte 29: invalid continuation byte\)"):
        get_cfg().merge_from_file(str(tmp_path / "latin.yaml"))
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match="folder.yaml is a directory"):
        get_cfg().merge_from_file(str(tmp_path / "folder.yaml"))


def test_dump_reloads_to_an_equal_config(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    cfg.merge_from_list(["SOLVER.WEIGHT_DECAY_BIAS", "0.0"])
    f = tmp_path / "dumped.yaml"
    f.write_text(cfg.dump())
    again = get_cfg()
    again.merge_from_file(str(f))
    assert again == cfg


@pytest.mark.parametrize(
    "path,roi_heads",
    [
        ("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", "StandardROIHeads"),
        ("configs/COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", "Res5ROIHeads"),
        ("configs/COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", "StandardROIHeads"),
    ],
)
def test_detectron2_style_configs_load(path, roi_heads):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.ROI_HEADS.NAME == roi_heads
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)


def test_imports_are_imported_and_may_add_config_keys(tmp_path, monkeypatch):
    pkg = tmp_path / "myproj"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ext.py").write_text(textwrap.dedent("""
        from d2mask.config import CfgNode
        def add_config(cfg):
            cfg.MODEL.MY_HEAD = CfgNode({"DEPTH": 3})
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    f = write(tmp_path / "c.yaml", """
        IMPORTS: ["myproj.ext"]
        MODEL:
          MY_HEAD:
            DEPTH: 5
        """)
    cfg = get_cfg()
    cfg.merge_from_file(f)
    assert cfg.MODEL.MY_HEAD.DEPTH == 5 and cfg.IMPORTS == ["myproj.ext"]


def test_unknown_import_lists_siblings_and_nearest(tmp_path, monkeypatch):
    pkg = tmp_path / "proj2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "dense_text.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    f = write(tmp_path / "c.yaml", 'IMPORTS: ["proj2.dense_txt"]\n')
    with pytest.raises(ImportError) as e:
        get_cfg().merge_from_file(f)
    assert "proj2.dense_txt" in str(e.value) and "Did you mean 'proj2.dense_text'" in str(e.value)


def test_import_that_raises_reports_its_own_error(tmp_path, monkeypatch):
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('boom from the module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="broken_mod.*RuntimeError: boom from the module"):
        get_cfg().merge_from_list(["IMPORTS", "['broken_mod']"])


def test_cfgnode_is_d2mask_class_everywhere():
    assert isinstance(get_cfg().MODEL.RPN, CfgNode)


def test_imports_on_the_command_line_add_to_the_files(tmp_path, monkeypatch):
    for name in ("cmd_mod_a", "cmd_mod_b"):
        (tmp_path / f"{name}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    f = write(tmp_path / "c.yaml", 'IMPORTS: ["cmd_mod_a"]\n')
    cfg = get_cfg()
    cfg.merge_from_file(f)
    cfg.merge_from_list(["IMPORTS", "['cmd_mod_b', 'cmd_mod_a']"])
    assert cfg.IMPORTS == ["cmd_mod_a", "cmd_mod_b"]
