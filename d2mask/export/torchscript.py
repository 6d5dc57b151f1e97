"""TorchScript helpers at Detectron2's names: inspecting a traced model's code and graphs, and the
scripting entry point d2mask does not offer."""
import os
from typing import Dict, Union

import torch
from torch import nn

from .exporters import ExportError

__all__ = ["dump_torchscript_IR", "scripting_with_instances"]


def scripting_with_instances(model: nn.Module, fields: Dict[str, type]) -> torch.jit.ScriptModule:
    """Detectron2's `torch.jit.script` export, which d2mask does not support: its models are exported
    by tracing or torch.export (`export_torchscript`, `export_torch_export`; docs/deployment.md).

    Raises:
        ExportError: always, saying so.
    """
    raise ExportError(
        "scripting_with_instances (export by torch.jit.script) is not supported by d2mask; export by tracing "
        "(d2mask.export.export_torchscript, --export-method tracing) or torch.export (export_torch_export)"
    )


def dump_torchscript_IR(model: Union[torch.jit.ScriptModule, torch.jit.ScriptFunction], dir: str) -> None:
    """Writes a traced or scripted model's IR to `dir`, for debugging an export:

    - model_ts_code.txt: the TorchScript code of the module and of each submodule;
    - model_ts_IR.txt: the graph of the module, submodules as calls;
    - model_ts_IR_inlined.txt: the whole graph with every submodule inlined;
    - model.txt: the module tree, as `print(model)` shows it (not for a function).
    """
    dir = os.path.expanduser(dir)
    os.makedirs(dir, exist_ok=True)
    files = {"model_ts_code.txt": _code(model), "model_ts_IR_inlined.txt": str(model.inlined_graph)}
    if isinstance(model, torch.jit.ScriptFunction):
        files["model_ts_IR.txt"] = str(model.graph)
    else:
        # A traced module keeps its compiled counterpart aside; that one can print submodule graphs.
        compiled = getattr(model, "_actual_script_module", model)
        files["model_ts_IR.txt"] = compiled._c.dump_to_str(True, False, False)
        files["model.txt"] = str(model)
    for name, text in files.items():
        with open(os.path.join(dir, name), "w") as f:
            f.write(text)


def _code(model: Union[torch.jit.ScriptModule, torch.jit.ScriptFunction]) -> str:
    """The TorchScript code of `model` and, after it, of each submodule by its dotted name."""
    if isinstance(model, torch.jit.ScriptFunction):
        return model.code
    parts = []
    for name, module in model.named_modules():
        kind = getattr(module, "original_name", type(module).__name__)
        code = getattr(module, "code", None) or "(no code)"
        parts.append(f"Code for {name or 'root model'}, type={kind}:\n{code}\n{'-' * 80}\n")
    return "".join(parts)
