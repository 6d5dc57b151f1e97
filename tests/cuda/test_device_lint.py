"""Model code creates its tensors on the device of its inputs: a lint over d2mask/modeling,
d2mask/structures and d2mask/layers for what works on a CPU and breaks on a GPU.

- A tensor factory (torch.zeros, torch.tensor, torch.arange, ...) without `device=` makes a CPU
  tensor, which a GPU op then refuses; allowed inside `register_buffer(...)` / `Parameter(...)`
  (moved with the module) and in the host-side functions of `ALLOWED`.
- `.numpy()` fails for a GPU tensor; allowed of an explicit `.cpu()` / `.to("cpu")` copy.
- `torch.Generator()` without a device draws on the CPU.
- `torch.cuda.synchronize()` without a device waits on the current GPU, not necessarily the model's.
"""
import ast
import os

import pytest

from tests.common import REPO as ROOT

PACKAGES = ("d2mask/modeling", "d2mask/structures", "d2mask/layers")
FACTORIES = {
    "arange", "as_tensor", "empty", "eye", "full", "linspace", "ones", "rand", "randint", "randn",
    "randperm", "tensor", "zeros",
}
# Calls whose arguments become part of the module, and move with it.
_MOVED_WITH_MODULE = {"register_buffer", "Parameter"}


def _name(func: ast.AST) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_torch_attr(func: ast.AST, names) -> bool:
    return isinstance(func, ast.Attribute) and func.attr in names and isinstance(func.value, ast.Name) and func.value.id == "torch"


# Host-side by design, with the reason.
ALLOWED = {
    ("d2mask/modeling/anchor_generator.py", "DefaultAnchorGenerator.generate_cell_anchors"):
        "Detectron2's static method; the constructor registers its result as a buffer",
    ("d2mask/modeling/backbone/swin.py", "_relative_position_index"):
        "at construction; the constructor registers its result as a buffer",
    ("d2mask/modeling/roi_heads/fast_rcnn.py", "FastRCNNOutputLayers.__init__"):
        "the federated loss's class weights, checked, then registered as a buffer",
    ("d2mask/structures/boxes.py", "BoxMode.convert"): "converts lists and arrays too, returning the same type",
    ("d2mask/structures/boxes.py", "Boxes.cat"): "of no Boxes at all, whose device is unknown",
    ("d2mask/structures/masks.py", "BitMasks.from_polygon_masks"): "polygons are host data, as in Detectron2",
    ("d2mask/structures/masks.py", "PolygonMasks.nonempty"): "polygons are host data",
    ("d2mask/structures/masks.py", "PolygonMasks.area"): "polygons are host data",
    ("d2mask/structures/masks.py", "PolygonMasks.get_bounding_boxes"): "polygons are host data",
}


def _is_host_copy(node: ast.AST) -> bool:
    """`x.cpu()` or `x.to("cpu", ...)`: `.numpy()` of it is explicit."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    if node.func.attr == "cpu":
        return True
    return node.func.attr == "to" and any(isinstance(a, ast.Constant) and a.value == "cpu" for a in node.args)


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, with its class."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = prefix + node.name
            if isinstance(node, ast.FunctionDef):
                yield name, node
            yield from _functions(node, name + ".")


def _violations(path: str):
    tree = ast.parse(open(path).read(), path)
    relpath = os.path.relpath(path, ROOT)
    exempt = set()
    for name, function in _functions(tree):
        if (relpath, name) in ALLOWED:
            exempt.update(id(n) for n in ast.walk(function))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in _MOVED_WITH_MODULE:
            exempt.update(id(n) for arg in node.args + [k.value for k in node.keywords] for n in ast.walk(arg))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in exempt:
            continue
        keywords = {k.arg for k in node.keywords}
        where = f"{relpath}:{node.lineno}"
        if _is_torch_attr(node.func, FACTORIES) and "device" not in keywords:
            yield f"{where}: torch.{node.func.attr}(...) without device="
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "numpy" and not _is_host_copy(node.func.value):
            yield f"{where}: .numpy() of a tensor not copied to the host"
        elif _is_torch_attr(node.func, {"Generator"}) and not node.args and "device" not in keywords:
            yield f"{where}: torch.Generator() without a device"
        elif (
            isinstance(node.func, ast.Attribute) and node.func.attr == "synchronize"
            and ast.unparse(node.func.value) == "torch.cuda" and not node.args and not node.keywords
        ):
            yield f"{where}: torch.cuda.synchronize() without a device"


def _files():
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))


def test_model_code_creates_tensors_on_its_inputs_device():
    found = [v for path in _files() for v in _violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("x = torch.zeros(3)", "torch.zeros(...) without device="),
    ("x = torch.zeros(3, device=y.device)", None),
    ("self.register_buffer('b', torch.zeros(3))", None),
    ("w = nn.Parameter(torch.ones(2, 2))", None),
    ("a = y.numpy()", ".numpy() of a tensor not copied to the host"),
    ("a = y.cpu().numpy()", None),
    ("a = y.detach().to('cpu', torch.float64).numpy()", None),
    ("g = torch.Generator()", "torch.Generator() without a device"),
    ("g = torch.Generator(device=y.device)", None),
    ("torch.cuda.synchronize()", "torch.cuda.synchronize() without a device"),
    ("torch.cuda.synchronize(y.device)", None),
])
def test_lint_rules(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    found = list(_violations(str(path)))
    assert [f.split(": ", 1)[1] for f in found] == ([expected] if expected else [])


def test_every_allowed_function_exists():
    functions = {
        (os.path.relpath(path, ROOT), name) for path in _files() for name, _ in _functions(ast.parse(open(path).read()))
    }
    assert set(ALLOWED) <= functions, set(ALLOWED) - functions
