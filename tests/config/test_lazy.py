"""Python configs: LazyCall/instantiate, LazyConfig load/save/overrides, relative imports."""
import collections
import functools
import os
import re
import sys
import textwrap

import pytest
import torch
from omegaconf import DictConfig

from d2mask.config import ConfigError, LazyCall as L, LazyConfig, instantiate
from d2mask.config.instantiate import InstantiationError, locate, target_name
from d2mask.layers import ShapeSpec
from d2mask.modeling.backbone.vit import get_vit_lr_decay_rate
from tests.common import REPO


class Pair:
    def __init__(self, *, left, right=0):
        self.left, self.right = left, right


def add(*, a, b):
    return a + b


def explode(*, why):
    raise ValueError(why)


def collect(**kwargs):
    return kwargs


HERE = __name__  # how pytest imported this file, so that config strings can name its callables


def _write(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("HERE", HERE))


# --- LazyCall and instantiate -------------------------------------------------------------------

def test_lazycall_records_and_instantiate_builds_nested_calls_lists_and_dicts():
    cfg = L(Pair)(
        left=L(Pair)(left=L(add)(a=1, b=2), right=[L(add)(a=10, b=5), 7]),
        right={"shape": L("d2mask.layers.ShapeSpec")(channels=3), "raw": (1, 2)},
    )
    assert isinstance(cfg, DictConfig) and cfg._target_ is Pair and cfg.left.left.b == 2
    built = instantiate(cfg)
    assert isinstance(built, Pair) and isinstance(built.left, Pair)
    assert built.left.left == 3 and built.left.right == [15, 7]
    assert built.right == {"shape": ShapeSpec(channels=3), "raw": [1, 2]}
    assert type(built.right) is dict  # containers come back plain, not as omegaconf nodes


def test_instantiate_passes_objects_and_plain_values_through():
    marker = object()
    cfg = L(Pair)(left=None)
    cfg.left = marker  # e.g. the model handed to an optimizer's param-group helper
    assert instantiate(cfg).left is marker
    assert instantiate([1, {"a": L(add)(a=1, b=1)}]) == [1, {"a": 2}]
    assert instantiate(5) == 5
    # omegaconf stores a dataclass as a structured node; it must come back as the dataclass
    assert instantiate(L(Pair)(left=ShapeSpec(channels=3))).left == ShapeSpec(channels=3)
    assert instantiate(L(ShapeSpec)(channels=5)) == ShapeSpec(channels=5)  # a dataclass as the target


def test_instantiate_resolves_interpolations():
    cfg = DictConfig({"n": 4, "x": {"_target_": f"{HERE}.add", "a": "${n}", "b": 1}})
    assert instantiate(cfg).get("x") == 5


def test_lazycall_rejects_positional_arguments_and_non_callables():
    with pytest.raises(TypeError, match="keyword arguments only"):
        L(add)(1, 2)
    with pytest.raises(TypeError, match="callable"):
        L(3)


def test_unknown_argument_names_the_path_and_nearest_parameter():
    cfg = DictConfig({"model": {"head": L(Pair)(left=1, rigth=2)}}, flags={"allow_objects": True})
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg.model)
    msg = str(e.value)
    assert "'model.head'" in msg and "rigth" in msg and "Did you mean 'right'" in msg


def test_failure_inside_target_names_target_path_and_cause():
    cfg = L(Pair)(left=[0, L(explode)(why="bad anchors")])
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg)
    msg = str(e.value)
    assert "'left.1'" in msg and f"{HERE}.explode" in msg and "ValueError: bad anchors" in msg
    assert isinstance(e.value.__cause__, ValueError)


def test_string_targets_locate_and_misspellings_suggest():
    assert locate("collections.OrderedDict") is collections.OrderedDict
    assert locate("d2mask.layers.ShapeSpec") is ShapeSpec
    with pytest.raises(InstantiationError, match="Did you mean 'ShapeSpec'"):
        instantiate({"_target_": "d2mask.layers.ShapeSpek", "channels": 1})
    with pytest.raises(ConfigError, match="no module named 'no_such_pkg_xyz'"):
        locate("no_such_pkg_xyz.thing")
    assert target_name(ShapeSpec) == "d2mask.layers.shape_spec.ShapeSpec"
    with pytest.raises(ConfigError, match="importable"):
        target_name(lambda: 0)


# --- load / save --------------------------------------------------------------------------------

CONFIG_TREE = {
    "common/optim.py": """
        from d2mask.config import LazyCall as L
        SGD = L("HERE.Pair")(left=0.02, right=[0.9, 1e-4])
    """,
    "common/models/toy.py": """
        from d2mask.config import LazyCall as L
        from HERE import Pair, add
        model = L(Pair)(left=L(add)(a=1, b=2), right={"depth": 18, "features": ("res4", "res5")})
    """,
    "common/train.py": """
        train = dict(max_iter=100, output_dir="./output", amp=dict(enabled=False))
    """,
    "exp/run.py": """
        from ..common.optim import SGD as optimizer
        from ..common.models.toy import model
        from ..common import train as _train_file
        from . import helper

        train = _train_file.train
        train.max_iter = helper.ITERS  # a dict in train.py, a DictConfig once imported
        model.left.b = 5
        _private = {"not": "a key"}
        NUMBER = 3   # not a mapping or list: not a key
    """,
    "exp/helper.py": """
        ITERS = 7
    """,
}


def test_load_follows_relative_imports_between_config_files(tmp_path):
    _write(tmp_path, CONFIG_TREE)
    cfg = LazyConfig.load(str(tmp_path / "exp/run.py"))
    assert set(cfg.keys()) == {"optimizer", "model", "train"}
    assert cfg.train.max_iter == 7 and cfg.model.left.b == 5
    assert list(cfg.model.right.features) == ["res4", "res5"]
    assert instantiate(cfg.model).left == 6
    assert instantiate(cfg.optimizer).right == [0.9, 1e-4]


def test_load_keys_and_load_rel_as_detectron2(tmp_path):
    _write(tmp_path, {**CONFIG_TREE, "exp/rel.py": """
        from d2mask.config import LazyConfig
        model = LazyConfig.load_rel("../common/models/toy.py", "model")
        model.left.b = 9
        (optimizer,) = LazyConfig.load_rel("../common/optim.py", ("SGD",))
    """})
    run = str(tmp_path / "exp/run.py")
    assert LazyConfig.load(run, "model").left.b == 5
    optimizer, train = LazyConfig.load(run, ("optimizer", "train"))
    assert optimizer.left == 0.02 and train.max_iter == 7
    with pytest.raises(ConfigError, match="run.py has no key 'trian'. Did you mean 'train'"):
        LazyConfig.load(run, "trian")
    cfg = LazyConfig.load(str(tmp_path / "exp/rel.py"))
    assert set(cfg) == {"model", "optimizer"} and instantiate(cfg.model).left == 10
    assert cfg.optimizer.right == [0.9, 1e-4]
    with pytest.raises(ConfigError, match="needs a calling file"):
        exec("from d2mask.config import LazyConfig; LazyConfig.load_rel('x.py')")


def test_each_load_executes_the_files_afresh(tmp_path):
    _write(tmp_path, CONFIG_TREE)
    run = LazyConfig.load(str(tmp_path / "exp/run.py"))
    base = LazyConfig.load(str(tmp_path / "common/models/toy.py"))
    assert run.model.left.b == 5 and base.model.left.b == 2  # run.py's edit did not leak


def test_save_then_load_gives_an_equal_config(tmp_path):
    _write(tmp_path, CONFIG_TREE)
    cfg = LazyConfig.load(str(tmp_path / "exp/run.py"))
    LazyConfig.save(cfg, str(tmp_path / "dump.yaml"))
    text = (tmp_path / "dump.yaml").read_text()
    assert f"_target_: {HERE}.Pair" in text and f"_target_: {HERE}.add" in text
    again = LazyConfig.load(str(tmp_path / "dump.yaml"))
    expected = cfg.copy()
    expected.model._target_, expected.model.left._target_ = f"{HERE}.Pair", f"{HERE}.add"
    assert again == expected
    LazyConfig.save(again, str(tmp_path / "dump2.yaml"))
    assert (tmp_path / "dump2.yaml").read_text() == text
    assert instantiate(again.model).right == {"depth": 18, "features": ["res4", "res5"]}


def test_save_rejects_values_without_a_yaml_form(tmp_path):
    cfg = DictConfig({"model": L(Pair)(left=1)}, flags={"allow_objects": True})
    cfg.model.right = ShapeSpec(channels=3)
    with pytest.raises(ConfigError, match="model.right"):
        LazyConfig.save(cfg, str(tmp_path / "x.yaml"))
    cfg = DictConfig({"model": L(lambda: 0)()}, flags={"allow_objects": True})
    with pytest.raises(ConfigError, match="model._target_"):
        LazyConfig.save(cfg, str(tmp_path / "y.yaml"))


def test_partials_and_callables_as_values_save_and_build_again(tmp_path):
    cfg = DictConfig({"model": L(collect)(make=functools.partial(Pair, 1, right=[2, 3]), kind=Pair, fn=add)},
                     flags={"allow_objects": True})
    LazyConfig.save(cfg, str(tmp_path / "dump.yaml"))
    built = instantiate(LazyConfig.load(str(tmp_path / "dump.yaml")).model)
    assert isinstance(built["make"], functools.partial)
    assert (built["make"].func, built["make"].args, built["make"].keywords) == (Pair, (1,), {"right": [2, 3]})
    assert built["kind"] is Pair and built["fn"] is add
    with pytest.raises(InstantiationError, match="Building 'model.make': _args_ must be a list"):
        instantiate(DictConfig({"model": {"make": {"_target_": "functools.partial", "_args_": 3}}}).model)


def test_save_may_leave_out_values_without_a_yaml_form_and_name_them(tmp_path):
    cfg = DictConfig({"model": L(Pair)(left=1, right=ShapeSpec(channels=3)), "other": L(lambda: 0)(), "n": 5},
                     flags={"allow_objects": True})
    dropped = []
    LazyConfig.save(cfg, str(tmp_path / "x.yaml"), dropped=dropped)
    assert [d.split(" ")[0] for d in dropped] == ["model.right", "other"]  # a node whose target has no name: whole
    assert "ShapeSpec" in dropped[0] and "no importable" in dropped[1]
    text = (tmp_path / "x.yaml").read_text()
    assert text.startswith("# Not saved (no YAML form): model.right (ShapeSpec")
    again = LazyConfig.load(str(tmp_path / "x.yaml"))
    assert set(again) == {"model", "n"} and instantiate(again.model).right == 0


def test_a_vitdet_config_saves_and_reloads_to_the_same_model(tmp_path):
    """ViTDet's config holds `partial(nn.LayerNorm, eps=1e-6)` and `partial(get_vit_lr_decay_rate, ...)`;
    its dump builds the same (shrunk) model, weight for weight, and the same decay function."""
    cfg = LazyConfig.load(os.path.join(REPO, "projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py"))
    LazyConfig.apply_overrides(cfg, [
        "model.backbone.net.img_size=64", "model.backbone.net.embed_dim=16", "model.backbone.net.depth=2",
        "model.backbone.net.num_heads=2", "model.backbone.net.window_size=2", "model.backbone.net.window_block_indexes=[0]",
        "model.backbone.square_pad=64", "model.backbone.out_channels=16", "model.roi_heads.box_head.conv_dims=[16]",
        "model.roi_heads.box_head.fc_dims=[32]", "model.roi_heads.mask_head.conv_dims=[16]",
    ])
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    models = []
    for c in (cfg, again):
        torch.manual_seed(0)
        models.append(instantiate(c.model))
    assert str(models[0]) == str(models[1]) and "LayerNorm((16,), eps=1e-06" in str(models[1])
    state, reloaded = models[0].state_dict(), models[1].state_dict()
    assert list(state) == list(reloaded) and all(torch.equal(state[k], reloaded[k]) for k in state)
    decay = instantiate(again.optimizer.params.lr_factor_func)
    assert decay.func is get_vit_lr_decay_rate and decay.keywords == {"num_layers": 12, "lr_decay_rate": 0.7}
    assert LazyConfig.to_yaml(again) == (tmp_path / "config.yaml").read_text()


def test_load_errors_name_the_file(tmp_path):
    _write(tmp_path, {
        "a.py": "from .missng import x\n", "missing_one.py": "x = {}\n",
        "c1.py": "from .c2 import y\nx = {}\n", "c2.py": "from .c1 import x\ny = {}\n",
    })
    with pytest.raises(ImportError, match=r"missng\.py.*Did you mean 'missing_one'"):
        LazyConfig.load(str(tmp_path / "a.py"))
    with pytest.raises(ImportError, match="cycle"):
        LazyConfig.load(str(tmp_path / "c1.py"))
    with pytest.raises(ConfigError, match="not found"):
        LazyConfig.load(str(tmp_path / "nope.py"))
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(ConfigError, match="'.json'"):
        LazyConfig.load(str(tmp_path / "cfg.json"))


# --- overrides ----------------------------------------------------------------------------------

def _cfg():
    return DictConfig({
        "model": L(Pair)(left=L(add)(a=1, b=2), right={"features": ["res4", "res5"]}),
        "train": {"max_iter": 100, "output_dir": "./output"},
    }, flags={"allow_objects": True})


def test_overrides_set_nested_values_lists_and_strings():
    cfg = LazyConfig.apply_overrides(_cfg(), [
        "model.left.a=3", "train.max_iter=500", "train.output_dir=out/run1",
        "model.right.features=['p2', 'p3']", "model.right.features.1=p6", f"model.left._target_={HERE}.Pair",
    ])
    assert cfg.model.left.a == 3 and cfg.train.max_iter == 500 and cfg.train.output_dir == "out/run1"
    assert list(cfg.model.right.features) == ["p2", "p6"]
    assert cfg.model.left._target_ == f"{HERE}.Pair"
    assert LazyConfig.apply_overrides(_cfg(), ["model.right.features=(1, 2)"]).model.right.features == [1, 2]


def test_unknown_override_key_names_the_nearest_and_adds_nothing():
    cfg = _cfg()
    with pytest.raises(ConfigError) as e:
        LazyConfig.apply_overrides(cfg, ["train.max_iters=5"])
    assert "Did you mean 'train.max_iter'" in str(e.value) and "output_dir" in str(e.value)
    assert "max_iters" not in cfg.train
    with pytest.raises(ConfigError, match="model.right.features"):
        LazyConfig.apply_overrides(cfg, ["model.right.feature.0=1"])
    with pytest.raises(ConfigError, match="Unknown config key 'model.right.features.2'"):
        LazyConfig.apply_overrides(cfg, ["model.right.features.2=x"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        LazyConfig.apply_overrides(cfg, ["train.max_iter"])


# --- project modules ----------------------------------------------------------------------------

PROJECT = {
    "lazyproj/__init__.py": "",
    "lazyproj/samplers.py": """
        from d2mask.modeling import SAMPLER_REGISTRY, RandomSampler

        @SAMPLER_REGISTRY.register()
        class LazyTestRegisteredSampler(RandomSampler):
            pass

        class LazyTestPlainSampler(RandomSampler):  # in no registry
            pass
    """,
    "configs/proj/sampler_swap.py": """
        import lazyproj.samplers  # registers LazyTestRegisteredSampler
        from d2mask.config import LazyCall as L
        from d2mask.modeling import SAMPLER_REGISTRY
        from lazyproj.samplers import LazyTestPlainSampler
        from ..Shapes.mask_rcnn_R_18_FPN_shapes import model

        model.proposal_generator.sampler = L(LazyTestPlainSampler)(batch_size_per_image=64, positive_fraction=0.5)
        model.roi_heads.proposal_sampler = L(SAMPLER_REGISTRY.get("LazyTestRegisteredSampler"))(
            batch_size_per_image=32, positive_fraction=0.25
        )
    """,
}


def test_project_module_through_target_and_through_registry(tmp_path, monkeypatch):
    from d2mask.modeling import SAMPLER_REGISTRY

    _write(tmp_path, PROJECT)
    for folder in ("common", "Shapes"):
        (tmp_path / "configs" / folder).symlink_to(os.path.join(REPO, "configs", folder))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        cfg = LazyConfig.load(str(tmp_path / "configs/proj/sampler_swap.py"))
        model = instantiate(cfg.model)
        rpn_sampler, roi_sampler = model.proposal_generator.sampler, model.roi_heads.proposal_sampler
        assert type(rpn_sampler).__name__ == "LazyTestPlainSampler" and rpn_sampler.batch_size_per_image == 64
        assert type(roi_sampler).__name__ == "LazyTestRegisteredSampler" and roi_sampler.batch_size_per_image == 32

        # the saved config names both classes by module, so a fresh process finds them by import alone
        LazyConfig.save(cfg, str(tmp_path / "swap.yaml"))
        again = LazyConfig.load(str(tmp_path / "swap.yaml"))
        assert again.model.roi_heads.proposal_sampler._target_ == "lazyproj.samplers.LazyTestRegisteredSampler"
        swap = "model.roi_heads.proposal_sampler._target_=lazyproj.samplers.LazyTestPlainSampler"
        LazyConfig.apply_overrides(again, [swap])
        assert type(instantiate(again.model.roi_heads.proposal_sampler)).__name__ == "LazyTestPlainSampler"
    finally:
        SAMPLER_REGISTRY._obj_map.pop("LazyTestRegisteredSampler", None)
        for name in [m for m in sys.modules if m.startswith("lazyproj")]:
            del sys.modules[name]


# --- docs/configs.md ----------------------------------------------------------------------------


def _docs_python_blocks():
    text = open(os.path.join(REPO, "docs", "configs.md"), encoding="utf-8").read()
    section = text.split("## Python configs (LazyConfig)", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_docs_snippets_run(tmp_path, monkeypatch):
    abridged, usage = _docs_python_blocks()
    (tmp_path / "configs" / "Shapes").mkdir(parents=True)
    (tmp_path / "configs" / "common").symlink_to(os.path.join(REPO, "configs", "common"))
    (tmp_path / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_shapes.py").write_text(abridged)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(usage, namespace)
    assert type(namespace["model"]).__name__ == "GeneralizedRCNN"
    assert namespace["model"].roi_heads.num_classes == 5
    again = LazyConfig.load("shapes_config.yaml")
    # 500 from the usage block's override; 64 from the abridged file, as in the real one.
    assert again.train.max_iter == 500 and again.model.backbone.out_channels == 64


def test_a_key_misspelt_in_a_file_is_an_error_naming_file_key_and_nearest(tmp_path):
    _write(tmp_path, {**CONFIG_TREE, "exp/typo.py": """
        from .run import train, model
        train.max_iterr = 3
    """})
    with pytest.raises(ConfigError) as e:
        LazyConfig.load(str(tmp_path / "exp/typo.py"))
    assert str(e.value).startswith(
        f"{tmp_path / 'exp/typo.py'} sets 'train.max_iterr', a key that 'train' (from "
        f"{tmp_path / 'common/train.py'}) does not have. Did you mean 'max_iter'?"
    )
    # also a nested mapping, also before the file imports another one
    _write(tmp_path, {"exp/nested.py": """
        from ..common.train import train
        train.amp.enabeld = True
        from ..common.optim import SGD
    """})
    with pytest.raises(ConfigError, match=r"sets 'train.amp.enabeld'.* Did you mean 'enabled'\?"):
        LazyConfig.load(str(tmp_path / "exp/nested.py"))


def test_a_file_may_add_arguments_its_lazycall_accepts_and_mappings_of_its_own(tmp_path):
    _write(tmp_path, {**CONFIG_TREE, "exp/extend.py": """
        from ..common.train import train
        from ..common.models.toy import model
        model.left.c = 1       # `add` has no argument c
    """, "exp/fine.py": """
        from d2mask.config import LazyCall as L
        from HERE import add
        from ..common.train import train
        from ..common.models.toy import model
        model.left = L(add)(a=1)
        model.left.b = 2       # a node this file made
        model.right = L("HERE.collect")()
        model.right.anything = 1   # collect takes **kwargs
        train = dict(train, my_setting=2)
        mine = dict(a=1)
        mine["b"] = 2
        call = L(add)(a=1)
        call.b = 2
    """})
    with pytest.raises(ConfigError, match=r"sets 'model.left.c'"):
        LazyConfig.load(str(tmp_path / "exp/extend.py"))
    cfg = LazyConfig.load(str(tmp_path / "exp/fine.py"))
    assert cfg.train.my_setting == 2 and cfg.mine.b == 2 and instantiate(cfg.call) == 3
    assert instantiate(cfg.model.right) == {"anything": 1} and instantiate(cfg.model.left) == 3


def test_syntax_errors_and_non_utf8_files_are_config_errors_naming_file_and_line(tmp_path):
    (tmp_path / "broken.py").write_text("train = dict(\n    max_iter=(3,\n")
    with pytest.raises(ConfigError, match=r"Syntax error in .*broken.py, line 2: '\(' was never closed"):
        LazyConfig.load(str(tmp_path / "broken.py"))
    (tmp_path / "latin.py").write_bytes("# café\ntrain = dict(a=1)\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.py is not UTF-8 text \(byte 5"):
        LazyConfig.load(str(tmp_path / "latin.py"))
