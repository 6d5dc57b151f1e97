"""Property tests of config merging on random YAML files and command-line overrides: the config
is merged, or ConfigError (ImportError for IMPORTS) says why; no other exception ever escapes. A
merged file gives each key it names its value and leaves every other key at its default."""
import ast
import math
import tracemalloc

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d2mask.config import ConfigError, get_cfg
from d2mask.config.config import _all_keys

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DOCUMENTED = (ConfigError, ImportError)

KEYS = sorted(k for k in _all_keys(get_cfg()) if k != "IMPORTS")
# IMPORTS is fuzzed with names that cannot exist: random text could name a real module with side effects.
_missing_modules = st.text("abcxyz_", min_size=1, max_size=6).map(lambda s: f"no_such_module_{s}")
_imports = st.one_of(
    _missing_modules, st.lists(st.one_of(_missing_modules, st.integers(), st.none()), max_size=3),
    st.integers(), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
    st.sampled_from(["(1, 2)", "[1, 2]", "True", "1e-3", "'x'", "{}", "((", "None"]),
)
values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=10,
)
_keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k.rsplit(".", 1)[0]), st.text(max_size=12))


def _nest(flat):
    """{"A.B.C": v} -> {"A": {"B": {"C": v}}} where possible; other keys stay dotted."""
    nested = {}
    for key, value in flat.items():
        node, parts = nested, key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = value
    return nested


config_dicts = st.one_of(
    st.dictionaries(_keys, values, max_size=5).map(_nest),
    st.dictionaries(_keys, values, max_size=5),
    st.fixed_dictionaries({"IMPORTS": _imports}),
    st.dictionaries(st.one_of(st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)), values, max_size=2),
    values,
)


def _leaves(data, prefix=""):
    """{"A.B": v} for every value of a nested dict that is not itself a non-empty dict."""
    found = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            found.update(_leaves(value, f"{prefix}{key}."))
        elif not isinstance(value, dict):
            found[f"{prefix}{key}"] = value
    return found


def _same(merged, given):
    """Whether a merged config value is what the file gave: numbers compare as numbers, lists as
    tuples, and a string given for a non-string key is read as a Python literal."""
    if isinstance(given, str) and not isinstance(merged, str):
        given = ast.literal_eval(given)
    if isinstance(merged, (list, tuple)):
        return isinstance(given, (list, tuple)) and len(merged) == len(given) and all(map(_same, merged, given))
    if isinstance(merged, float) and math.isnan(merged):
        return isinstance(given, float) and math.isnan(given)
    return merged == given


def _merge_file(path, text, given=None):
    """Merges the file; on success, each key of `given` ({dotted key: value}) holds its value and
    every other key its default (not checked without `given`)."""
    path.write_text(text)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(str(path))
    except DOCUMENTED:
        return
    if given is None:
        return
    default = get_cfg()
    for key in _all_keys(default):
        if isinstance(_get(default, key), dict):
            continue  # a node: its keys are checked one by one
        if key in given:
            assert _same(_get(cfg, key), given[key]), (key, _get(cfg, key), given[key])
        else:
            assert _same(_get(cfg, key), _get(default, key)), key


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


@SETTINGS
@given(data=config_dicts)
def test_random_config_files_merge_or_raise_config_error(tmp_path, data):
    _merge_file(tmp_path / "fuzz.yaml", yaml.safe_dump(data, allow_unicode=True), _leaves(data) if isinstance(data, dict) else {})


@SETTINGS
@given(base=config_dicts, child=config_dicts, base_name=st.one_of(st.just("base.yaml"), st.text(max_size=10), values))
def test_random_base_chains_merge_or_raise_config_error(tmp_path, base, child, base_name):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    given = {}
    if isinstance(child, dict):  # only a mapping can name a base; the base's values are then merged first
        if isinstance(base, dict) and base_name == "base.yaml":
            given = _leaves(base)
        child = dict(child, _BASE_=base_name)
        given.update(_leaves(child))
        given.pop("_BASE_", None)
    _merge_file(tmp_path / "child.yaml", yaml.safe_dump(child), given)


@SETTINGS
@given(text=st.text(max_size=80))
def test_random_text_files_merge_or_raise_config_error(tmp_path, text):
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    _merge_file(tmp_path / "fuzz.yaml", text, _leaves(data) if isinstance(data, dict) else {})


@SETTINGS
@given(items=st.lists(st.one_of(_keys, st.text(max_size=10), _keys.map(lambda k: f"{k}=1"),
                                 st.sampled_from(["--resume", "=", "a=b=c", "MODEL.DEVICE=cuda"])), max_size=6))
def test_random_command_line_overrides_merge_or_raise_config_error(items):
    try:
        get_cfg().merge_from_list(items)
    except DOCUMENTED:
        pass


@SETTINGS
@given(key=st.sampled_from(KEYS), value=values)
def test_a_merged_value_has_the_type_of_its_default(key, value):
    cfg = get_cfg()
    default = cfg
    for part in key.split("."):
        default = default[part]
    try:
        cfg.merge_from_list([key, value if isinstance(value, str) else repr(value)])
    except DOCUMENTED:
        return
    merged = cfg
    for part in key.split("."):
        merged = merged[part]
    if default is not None and merged is not None and not isinstance(default, dict):
        expected = (int, float) if isinstance(default, float) else (type(default),)
        assert isinstance(merged, expected) and (not isinstance(merged, bool) or isinstance(default, bool))


_yaml_pieces = st.sampled_from([
    "&a ", "&b ", "*a", "*b", "[", "]", "{", "}", ", ", ": ", "\n", "  ", "- ", "x", "1", "2.5", "VERSION",
    "MODEL", "PIXEL_MEAN", "IMPORTS", "<<: *a", "? ", "'", '"', "!!python/object/apply:os.system ['true']", "!!str ",
])


@st.composite
def alias_documents(draw):
    """Lists of aliases of lists: up to fanout**(levels + 1) values in a few hundred bytes."""
    levels, fanout = draw(st.integers(1, 7)), draw(st.integers(1, 12))
    lists = ["&a0 [" + ", ".join(["1"] * fanout) + "]"]
    lists += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]" for i in range(1, levels + 1)]
    key = draw(st.sampled_from(["VERSION", "MODEL.PIXEL_MEAN", "SOLVER.STEPS", "UNKNOWN"]))
    return f"{key}: [" + ", ".join(lists) + "]\n" if "." not in key else f"{key.split('.')[0]}:\n  {key.split('.')[1]}: [" + ", ".join(lists) + "]\n"


def _merge_in_bounded_memory(path, text):
    tracemalloc.start()
    try:
        _merge_file(path, text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20


@SETTINGS
@given(text=st.one_of(alias_documents(), st.lists(_yaml_pieces, max_size=60).map("".join)))
def test_yaml_with_anchors_and_aliases_merges_or_raises_in_bounded_memory(tmp_path, text):
    _merge_in_bounded_memory(tmp_path / "fuzz.yaml", text)
