"""`DetectionCheckpointer`: saves d2mask checkpoints atomically and loads d2mask, Detectron2 and
Caffe2-era weights safely."""
import logging
import os
import zipfile
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from d2mask.utils import comm
from d2mask.utils.atomic_write import atomic_write
from d2mask.utils.file_io import PathManager

from .c2_model_loading import align_and_update_state_dicts, convert_c2_resnet_names
from .safe_pickle import UnsafePickleError, load_numpy_pickle

__all__ = ["CheckpointError", "DetectionCheckpointer", "read_pth"]

# How many names of each kind (missing, unexpected, mismatched) a load report lists in full.
_MAX_REPORTED = 30


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or whose content is not a set of named tensors."""


class _NothingFits(CheckpointError):
    """Raised by `_load_model`, which does not know the file's name; `load` adds it."""


def _group_names(names: Iterable[str]) -> str:
    """Names grouped by their module, one module per line: `roi_heads.box_predictor.{bias, weight}`."""
    groups: Dict[str, List[str]] = defaultdict(list)
    for name in names:
        module, _, leaf = name.rpartition(".")
        groups[module].append(leaf)
    lines = [
        f"  {module}.{{{', '.join(sorted(leaves))}}}" if module else f"  {', '.join(sorted(leaves))}"
        for module, leaves in sorted(groups.items())
    ]
    if len(lines) > _MAX_REPORTED:
        lines = lines[:_MAX_REPORTED] + [f"  ... and {len(lines) - _MAX_REPORTED} more modules"]
    return "\n".join(lines)


def _split_matching_heuristics(path: str) -> Tuple[str, bool]:
    """`path` without Detectron2's `?matching_heuristics=True` query, and whether it had it: the
    way a config asks for names matched by suffix (e.g. `train.init_checkpoint` of an MAE-pretrained
    ViT, whose names lack the model's `backbone.net.` prefix)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path, False
    queries = parse_qs(query)
    heuristics = queries.pop("matching_heuristics", ["False"]) == ["True"]
    if queries:
        raise CheckpointError(
            f"{path}: unsupported query {sorted(queries)}; only matching_heuristics=True is understood"
        )
    return base, heuristics


class DetectionCheckpointer(Checkpointer):
    """fvcore's Checkpointer for detection models.

    Loads, by file name:
    - `.pth`: d2mask and Detectron2 checkpoints (a dict with "model", or a bare state dict), read
      with `torch.load(weights_only=True)`, which rebuilds tensors and containers but runs no code;
    - `.pkl`: Detectron2 model-zoo files (a dict with "model" of numpy arrays), converted
      torchvision backbones, and Caffe2 ImageNet backbones (a dict of arrays in Caffe2 naming), read
      with an unpickler that allows numpy arrays and plain containers only.
    Names are Detectron2's throughout, so those files load with nothing missing or unexpected. Tensors
    whose shape differs from the model's (e.g. predictors trained with another NUM_CLASSES) are
    skipped, and every skipped, missing or unexpected name is logged.

    `save` writes atomically: a crash leaves the previous checkpoint and `last_checkpoint` intact.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: Optional[bool] = None, **checkpointables: Any):
        """
        Args:
            model: the model (a DistributedDataParallel wrapper is unwrapped).
            save_dir: where `save` writes and `resume_or_load` looks for `last_checkpoint`.
            save_to_disk: whether `save` writes; by default only the main process does.
            checkpointables: other objects with state_dict/load_state_dict (optimizer=..., scheduler=...).
        """
        super().__init__(
            model,
            save_dir,
            save_to_disk=comm.is_main_process() if save_to_disk is None else save_to_disk,
            **checkpointables,
        )
        self.logger = logging.getLogger(__name__)
        self.path_manager = PathManager  # d2mask's, which also resolves detectron2:// paths
        self._matching_heuristics_requested = False  # by the query of the path being loaded

    def save(self, name: str, **kwargs: Any) -> None:
        """Writes the model and checkpointables to `<save_dir>/<name>.pth` (with `kwargs` as extra
        entries), then points `last_checkpoint` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.path_manager.get_local_path(self.save_dir), basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_write(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically records `last_filename_basename` as the latest checkpoint of `save_dir`."""
        path = os.path.join(self.path_manager.get_local_path(self.save_dir), "last_checkpoint")
        with atomic_write(path) as f:
            f.write(last_filename_basename)

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Loads the model (and the named checkpointables, default all) from `path`, a file or URL
        (including Detectron2's `detectron2://`); "" loads nothing. A URL is downloaded once, with a
        logged line, by `d2mask.utils.download.get_local_path` (https only). A path ending in
        `?matching_heuristics=True` has its names matched to the model's by suffix, as in Detectron2.

        Returns:
            The checkpoint's entries not consumed (e.g. {"iteration": ...}).

        Raises:
            FileNotFoundError: `path` does not exist.
            DownloadError: a URL that is not https or cannot be downloaded.
            CheckpointError: the file is corrupt, truncated, not a set of named tensors, holds NaN
                values, or not one of its tensors fits the model (a checkpoint of another
                architecture).
        """
        path, self._matching_heuristics_requested = _split_matching_heuristics(path)
        if path:
            local_path = self.path_manager.get_local_path(path)
            if not os.path.isfile(local_path):
                raise FileNotFoundError(f"Checkpoint file not found: {path}")
            path = local_path
        try:
            return super().load(path, checkpointables)
        except _NothingFits as e:
            raise CheckpointError(f"Cannot load {path}: {e}") from None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            checkpoint = self._load_pkl(filename)
        else:
            checkpoint = self._load_pth(filename)
        model = checkpoint.get("model")
        if not isinstance(model, dict):
            raise CheckpointError(f"{filename}: 'model' must map names to tensors, got {type(model).__name__}")
        for key, value in model.items():
            if not isinstance(key, str) or not isinstance(value, (np.ndarray, torch.Tensor)):
                raise CheckpointError(
                    f"{filename}: model entry {key!r} is a {type(value).__name__}; expected a tensor or numpy array"
                )
        # weights of a run that diverged: training from them would only give NaN losses, much later
        with_nan = [key for key, value in model.items() if _has_nan(value)]
        if with_nan:
            raise CheckpointError(
                f"{filename}: {len(with_nan)} of its {len(model)} tensors hold NaN values (e.g. {with_nan[:3]}); the "
                f"run that saved it diverged or the file is damaged; load an earlier checkpoint"
            )
        if self._matching_heuristics_requested:
            checkpoint["matching_heuristics"] = True
        return checkpoint

    def _load_pth(self, filename: str) -> Dict[str, Any]:
        loaded = read_pth(filename)
        return loaded if "model" in loaded else {"model": loaded}

    def _load_pkl(self, filename: str) -> Dict[str, Any]:
        try:
            with open(filename, "rb") as f:
                data = load_numpy_pickle(f, filename)
        except UnsafePickleError as e:
            raise CheckpointError(str(e)) from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{filename}: expected a dict of arrays, got {type(data).__name__}")
        if isinstance(data.get("model"), dict):
            # Detectron2 model-zoo format; converted backbones also set "matching_heuristics".
            author = data.get("__author__")
            author = author if isinstance(author, str) and len(author) <= 100 else "unknown"
            self.logger.info(f"Reading {filename}, a file from '{author}'")
            return data
        # A bare dict of arrays (Caffe2 detection models keep them under "blobs"). Names may lack the
        # model's prefix, so they are matched by suffix; momenta of the Caffe2 optimizer are dropped.
        blobs = data.get("blobs", data)
        blobs = {k: v for k, v in blobs.items() if not k.endswith("_momentum")}
        return {"model": blobs, "__author__": "Caffe2" if _is_caffe2_naming(blobs) else "unknown", "matching_heuristics": True}

    def _load_model(self, checkpoint: Dict[str, Any]):
        names = list(checkpoint["model"])
        if checkpoint.get("matching_heuristics", False):
            state = {k: torch.as_tensor(v) for k, v in checkpoint["model"].items()}
            if checkpoint.get("__author__") == "Caffe2":
                state = convert_c2_resnet_names(state)
            checkpoint["model"] = align_and_update_state_dicts(self.model.state_dict(), state)
        incompatible = super()._load_model(checkpoint)
        model_names = list(self.model.state_dict())
        # Training on with every weight freshly initialised is never what loading weights meant.
        if names and model_names and set(incompatible.missing_keys) >= set(model_names):
            raise _NothingFits(
                f"none of its {len(names)} tensors fits the model ({len(incompatible.incorrect_shapes)} have "
                f"another shape, the others another name). The checkpoint has e.g. {names[:3]}, the model "
                f"{model_names[:3]}: it holds another architecture, or names without the model's prefixes"
            )
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        skipped = {name for name, _, _ in incompatible.incorrect_shapes}
        if incompatible.incorrect_shapes:
            lines = [
                f"  {name}: {tuple(ckpt_shape)} in the checkpoint, {tuple(model_shape)} in the model"
                for name, ckpt_shape, model_shape in incompatible.incorrect_shapes[:_MAX_REPORTED]
            ]
            self.logger.warning(
                f"Skipped {len(skipped)} checkpoint tensors whose shapes differ from the model's; they keep "
                f"their fresh initialisation. This is expected when fine-tuning with another "
                f"MODEL.ROI_HEADS.NUM_CLASSES (the class-specific predictors change shape):\n" + "\n".join(lines)
            )
        missing = [k for k in incompatible.missing_keys if k not in skipped]
        if missing:
            self.logger.warning(
                f"{len(missing)} model tensors are not in the checkpoint and keep their fresh "
                f"initialisation:\n{_group_names(missing)}"
            )
        if incompatible.unexpected_keys:
            self.logger.warning(
                f"{len(incompatible.unexpected_keys)} checkpoint tensors are not used by the model:\n"
                f"{_group_names(incompatible.unexpected_keys)}"
            )


def read_pth(filename: str) -> Dict[str, Any]:
    """The dict in a `.pth` file (a state dict or a checkpoint), read without running code and
    within the file's size; anything else is one CheckpointError line."""
    _check_zip_records(filename)
    try:
        with open(filename, "rb") as f:
            loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"Cannot read checkpoint {filename}: the file is corrupt, truncated or holds more than "
            f"tensors and plain containers ({type(e).__name__}: {_torch_load_reason(e)})"
        ) from e
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{filename}: expected a dict (a state dict or a checkpoint), got {type(loaded).__name__}")
    return loaded


def _check_zip_records(filename: str) -> None:
    """Refuses a zip-format `.pth` whose records could expand beyond the file: `torch.save` stores
    them uncompressed, but `torch.load` also inflates compressed ones (a 66 KB file can hold 64 MB of
    zeros), and records that share their bytes are read once each. Legacy (non-zip) files check
    each storage's size against the bytes that follow it."""
    if not zipfile.is_zipfile(filename):
        return
    try:
        with zipfile.ZipFile(filename) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"Cannot read checkpoint {filename}: a damaged zip archive ({e})") from None
    compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(
            f"Refusing to load {filename}: its record {compressed[0]!r} is compressed, which torch.save never "
            f"does; a compressed record can expand far beyond the file's size"
        )
    if sum(r.file_size for r in records) > os.path.getsize(filename):
        raise CheckpointError(f"Refusing to load {filename}: its zip records claim more bytes than the file holds "
                              f"(records sharing their bytes)")


def _has_nan(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return np.issubdtype(value.dtype, np.floating) and bool(np.isnan(value).any())
    return value.is_floating_point() and bool(value.isnan().any())


def _torch_load_reason(error: Exception) -> str:
    """The specific part of a `torch.load` error, without its generic advice (which suggests
    `weights_only=False`, exactly what must not be done with an untrusted file)."""
    generic = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    specific = [line for line in lines if line and not line.startswith(generic)]
    return " ".join(specific) or str(error)


def _is_caffe2_naming(blobs: Dict[str, Any]) -> bool:
    """Caffe2 blob names use underscores only (`res2_0_branch2a_w`); PyTorch names have dots."""
    return len(blobs) > 0 and not any("." in k for k in blobs)
