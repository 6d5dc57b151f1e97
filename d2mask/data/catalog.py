"""Named datasets: `DatasetCatalog` maps a name to a function returning its dataset dicts,
`MetadataCatalog` maps the same name to a `Metadata` (class names, category id mapping, files).

A dataset dict (Detectron2's format) describes one image:
    {"file_name": str, "height": int, "width": int, "image_id": int | str,
     "annotations": [{"bbox": [4 floats], "bbox_mode": BoxMode, "category_id": int (contiguous,
                      0..K-1), "segmentation": polygons (list of flat lists) or a COCO RLE dict,
                      "iscrowd": 0 | 1}, ...]}
"""
from collections import UserDict
from typing import Any, Callable, Dict, List, Sequence

from ..utils.registry import RegistryError, did_you_mean

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "DatasetError", "check_dataset_names"]


class DatasetError(ValueError):
    """A dataset that cannot be used as it is: a file or record that breaks the format above, an
    unreadable image, or datasets that contradict each other. The message names the file or record."""


def _unknown_name_message(kind: str, name: str, names: Sequence[str]) -> str:
    names = sorted(names)
    return (
        f"No {kind} named '{name}'.{did_you_mean(name, names)} Registered: {', '.join(names) or '(none)'}. "
        f"A dataset of your own must be registered (e.g. with register_coco_instances) before it is used."
    )


def check_dataset_names(names: Any, key: str = "dataset names") -> List[str]:
    """Returns `names` as a list of str, or explains why it is not a sequence of dataset names.

    Catches the common slip of giving one name as a string where a tuple is expected
    (`DATASETS.TRAIN = "shapes_train"`), which would otherwise be read letter by letter.

    Args:
        names: a list or tuple of registered dataset names.
        key: what `names` is called in the error (e.g. the config key "DATASETS.TRAIN").
    """
    if isinstance(names, str):
        raise TypeError(
            f"{key} must be a tuple or list of dataset names, got the string {names!r}. "
            f"Write ({names!r},) in Python or [{names}] in YAML."
        )
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{key} must be a tuple or list of dataset names (str), got {names!r}")
    return list(names)


class _DatasetCatalog(UserDict):
    """Name -> zero-argument function returning `list[dict]`. Functions run on every `get`, so a
    dataset is only read (or generated) when it is used."""

    def register(self, name: str, func: Callable[[], List[Dict]]) -> None:
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a function, got {type(func).__name__}")
        if name in self:
            raise KeyError(f"Dataset '{name}' is already registered; remove it first or pick another name")
        self[name] = func

    def get(self, name: str) -> List[Dict]:
        """Calls the function registered as `name` and returns its dataset dicts."""
        if name not in self:
            raise RegistryError(_unknown_name_message("dataset", name, list(self.keys())))
        dicts = self[name]()
        if not isinstance(dicts, list):
            raise TypeError(f"The function registered as dataset '{name}' must return a list of dicts, "
                            f"got {type(dicts).__name__}")
        return dicts

    def list(self) -> List[str]:
        """The registered names, sorted."""
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        if name not in self:
            raise RegistryError(_unknown_name_message("dataset", name, list(self.keys())))
        del self[name]

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.list())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata:
    """Attributes of one dataset, e.g. `thing_classes`, `thing_dataset_id_to_contiguous_id`,
    `evaluator_type`, `json_file`, `image_root`.

    An attribute, once set, can only be set again to an equal value: two pieces of code disagreeing
    about a dataset's classes is a bug to report, not to resolve silently.
    """

    def __init__(self, name: str, **kwargs: Any):
        object.__setattr__(self, "name", name)
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        # Only called for attributes that do not exist.
        if key.startswith("__"):
            raise AttributeError(key)
        known = sorted(self.as_dict())
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'.{did_you_mean(key, known)} "
            f"Available: {', '.join(known)}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "name":
            raise AttributeError(f"The name of Metadata '{self.name}' cannot be changed")
        old = self.__dict__.get(key, value)
        if old != value:
            raise ValueError(
                f"Metadata '{key}' of dataset '{self.name}' is already {old!r:.200}; refusing to change it "
                f"to {value!r:.200}"
            )
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> "Metadata":
        """Sets several attributes; returns self so calls can be chained."""
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r:.80}" for k, v in self.__dict__.items())
        return f"Metadata({fields})"


class _MetadataCatalog(UserDict):
    """Name -> `Metadata`. `get` creates an empty Metadata for a new name, so metadata can be
    filled in before or after the dataset itself is registered."""

    def get(self, name: str) -> Metadata:
        if name not in self:
            self[name] = Metadata(name)
        return self[name]

    def list(self) -> List[str]:
        return sorted(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name, None)


MetadataCatalog = _MetadataCatalog()
