"""Detectron2's `!!python/object/apply:eval` YAML tag: Base-RetinaNet.yaml loads unchanged, its
expression evaluated by a restricted evaluator that refuses everything but literals, arithmetic and
list comprehensions; every other Python tag is still refused."""
import os
import textwrap

import pytest

from d2mask.config import ConfigError, get_cfg
from d2mask.config.safe_eval import RestrictedEvalError, restricted_eval
from tests.common import REPO


def test_base_retinanet_yaml_loads_unchanged_with_its_eval_tag():
    path = os.path.join(REPO, "configs", "COCO-Detection", "retinanet_R_50_FPN_1x.yaml")
    with open(os.path.join(REPO, "configs", "Base-RetinaNet.yaml")) as f:
        assert 'SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] for x in [32, 64, 128, 256, 512 ]]"]' in f.read()
    cfg = get_cfg()
    cfg.merge_from_file(path)
    # three sizes per octave: 32 * 2^(k/3) = 32, 40.3175, 50.7968 (2^(1/3) = 1.259921)
    sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES
    assert len(sizes) == 5
    for level, base in zip(sizes, (32, 64, 128, 256, 512)):
        assert level == pytest.approx([base * 2 ** (k / 3) for k in range(3)])
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES[0] == pytest.approx([32.0, 40.3175, 50.7968], abs=1e-4)
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNet" and cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA == 0.0


@pytest.mark.parametrize(
    "expression, value",
    [
        ("[1, 2.5, -3]", [1, 2.5, -3]),
        ("(2 + 3) * 4 - 6 / 3", 18.0),
        ("2 ** 10 // 3 % 7", 341 % 7),
        ("[[a, b] for a in [1, 2] for b in (3, 4)]", [[1, 3], [1, 4], [2, 3], [2, 4]]),
        ("[[x * y for x in [1, 2]] for y in [10, 100]]", [[10, 20], [100, 200]]),
        ("[(a, b * 2) for a, b in [(1, 2), (3, 4)]]", [(1, 4), (3, 8)]),
        ("['p' for _ in [0, 0]]", ["p", "p"]),
    ],
)
def test_restricted_eval_computes_literals_arithmetic_and_comprehensions(expression, value):
    assert restricted_eval(expression) == value


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os').system('true')", "Call"),
        ("open('/etc/passwd')", "Call"),
        ("(1).__class__", "Attribute"),
        ("[x for x in range(3)]", "Call"),
        ("[1, 2][0]", "Subscript"),
        ("lambda: 0", "Lambda"),
        ("x", "the name 'x' is not allowed"),
        ("[x for x in [1, 2] if x > 1]", "conditions"),
        ("{1: 2}", "Dict"),
        ("[0] * 10", "arithmetic is allowed on numbers only"),
        ("'a' * 10", "arithmetic is allowed on numbers only"),
        ("2 ** 10 ** 10", "too large"),
        ("(2 ** 2000) * (2 ** 2000) * (2 ** 2000)", "exceeds 4096 bits"),
        ("[[a, b, c] for a in [" + ", ".join(["0"] * 100) + "] for b in [" + ", ".join(["0"] * 100)
         + "] for c in [" + ", ".join(["0"] * 100) + "]]", "more than 100000 list elements"),
        ("1 / 0", "ZeroDivisionError"),
        ("1 +", "not a Python expression"),
        ("None", "the literal None is not allowed"),
    ],
)
def test_restricted_eval_refuses_everything_else(expression, message):
    with pytest.raises(RestrictedEvalError) as info:
        restricted_eval(expression)
    assert message in str(info.value)


def _merge(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    return cfg


def test_eval_tag_in_a_user_config(tmp_path):
    cfg = _merge(tmp_path, """\
        MODEL:
          ANCHOR_GENERATOR:
            SIZES: !!python/object/apply:eval ["[[s] for s in [16, 32 * 2]]"]
        """)
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[16], [64]]


@pytest.mark.parametrize(
    "text, message",
    [
        # code in the expression: refused, nothing runs
        ("""OUTPUT_DIR: !!python/object/apply:eval ["__import__('os').system('touch {tmp}/pwned')"]\n""", "is not allowed"),
        # the tag's other forms
        ("""OUTPUT_DIR: !!python/object/apply:eval {{args: ["1"]}}\n""", "takes one expression string"),
        ("""OUTPUT_DIR: !!python/object/apply:eval ["1", "2"]\n""", "takes one expression string"),
        # any other Python tag is still unknown to the safe loader
        ("""OUTPUT_DIR: !!python/object/apply:builtins.eval ["1"]\n""", "python/object/apply:builtins.eval"),
        ("""OUTPUT_DIR: !!python/name:os.system\n""", "python/name:os.system"),
    ],
)
def test_code_and_other_python_tags_are_one_config_error(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        _merge(tmp_path, text.format(tmp=tmp_path))
    text = str(info.value)
    assert text.startswith(f"Malformed YAML in {tmp_path / 'c.yaml'} at line 1") and message in text
    assert "\n" not in text
    assert not (tmp_path / "pwned").exists()
