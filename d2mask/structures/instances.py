"""`Instances`: the per-image bundle of equally long fields (boxes, classes, scores, masks...)."""
import itertools
from typing import Any, Dict, List, Tuple, Union

import torch
from torch import Tensor

__all__ = ["Instances"]


class Instances:
    """The instances (GT objects, proposals or detections) of one image, as named fields of equal length.

    Fields are set and read as attributes (`inst.gt_boxes = Boxes(...)`, `inst.scores`) or with
    `set/get/has/remove`. A field may be a Tensor, a list, or any object with `__len__` and
    `__getitem__` (Boxes, BitMasks, PolygonMasks); `cat` additionally needs a `cat` classmethod and
    `to` a `to(device)` method where the field has one. Indexing an `Instances` indexes every field:

        keep = inst.scores > 0.5
        confident = inst[keep]
    """

    def __init__(self, image_size: Tuple[int, int], **fields: Any):
        """
        Args:
            image_size: (height, width) of the image the instances belong to.
            fields: initial fields, all of the same length.
        """
        self._image_size = tuple(image_size)
        self._fields: Dict[str, Any] = {}
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> Tuple[int, int]:
        """(height, width) of the image."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; reading `_fields` itself here would recurse during
        # unpickling, before __init__ has run.
        if name == "_fields" or name not in self._fields:
            fields = list(self.__dict__.get("_fields", {}))
            raise AttributeError(f"Instances has no field '{name}'. Fields: {fields}")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Sets field `name`; its length must equal that of the fields already present."""
        if self._fields:
            expected = len(self)
            if len(value) != expected:
                raise ValueError(
                    f"Field '{name}' has length {len(value)} but this Instances has length {expected} "
                    f"(fields: {list(self._fields)}); every field must have the same length."
                )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        if name not in self._fields:
            raise KeyError(f"Instances has no field '{name}' to remove. Fields: {list(self._fields)}")
        del self._fields[name]

    def get(self, name: str) -> Any:
        return getattr(self, name)

    def get_fields(self) -> Dict[str, Any]:
        """The name -> value dict of all fields (the live dict, not a copy)."""
        return self._fields

    def to(self, device: Union[torch.device, str]) -> "Instances":
        """A new Instances whose fields that have a `to` method are moved to `device`."""
        moved = Instances(self._image_size)
        for name, value in self._fields.items():
            moved.set(name, value.to(device) if hasattr(value, "to") else value)
        return moved

    def __getitem__(self, item: Union[int, slice, Tensor, List[int]]) -> "Instances":
        """Selects the same entries of every field.

        Args:
            item: an int (gives a length-1 Instances), a slice, a bool mask `Tensor[len]`, or an index
                `Tensor[K]` / list of ints.
        """
        if isinstance(item, int):
            n = len(self)
            if not -n <= item < n:
                raise IndexError(f"Instances index {item} out of range for length {n}")
            start = item % n
            item = slice(start, start + 1)
        elif isinstance(item, Tensor) and item.dtype == torch.bool and item.dim() == 1 and len(self._fields) > 1:
            if len(item) != len(self):
                raise IndexError(f"Instances of length {len(self)} indexed with a mask of length {len(item)}")
            # A mask becomes indices once, not once per field: each conversion is a host sync on a GPU.
            item = item.nonzero().squeeze(1)
        selected = Instances(self._image_size)
        for name, value in self._fields.items():
            selected.set(name, _index_list(value, item) if isinstance(value, list) else value[item])
        return selected

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        raise TypeError("An Instances with no fields has no length; set a field first.")

    @staticmethod
    def cat(instance_lists: List["Instances"]) -> "Instances":
        """Concatenates Instances of the same image size and field names, field by field."""
        if not instance_lists:
            raise ValueError("Instances.cat needs at least one Instances, got an empty list")
        if not all(isinstance(i, Instances) for i in instance_lists):
            types = [type(i).__name__ for i in instance_lists]
            raise TypeError(f"Instances.cat expects Instances only, got {types}")
        if len(instance_lists) == 1:
            return instance_lists[0]
        first = instance_lists[0]
        for other in instance_lists[1:]:
            if other.image_size != first.image_size:
                raise ValueError(
                    f"Instances.cat needs one image size, got {first.image_size} and {other.image_size}"
                )
            if other._fields.keys() != first._fields.keys():
                raise ValueError(
                    f"Instances.cat needs the same fields, got {list(first._fields)} and "
                    f"{list(other._fields)}"
                )

        result = Instances(first.image_size)
        for name, value in first._fields.items():
            values = [i._fields[name] for i in instance_lists]
            if isinstance(value, Tensor):
                joined = torch.cat(values, dim=0)
            elif isinstance(value, list):
                joined = list(itertools.chain(*values))
            elif hasattr(type(value), "cat"):
                joined = type(value).cat(values)
            else:
                raise TypeError(f"Instances.cat cannot concatenate field '{name}' of type {type(value)}")
            result.set(name, joined)
        return result

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}: {value}" for name, value in self._fields.items())
        n = len(self) if self._fields else 0
        h, w = self._image_size
        return f"Instances(num_instances={n}, image_height={h}, image_width={w}, fields=[{fields}])"


def _index_list(values: list, item: Union[slice, Tensor, List[int]]) -> list:
    """Indexes a plain list like a tensor: by slice, bool mask, or indices."""
    if isinstance(item, slice):
        return values[item]
    if isinstance(item, Tensor):
        if item.dtype == torch.bool:
            if item.shape != (len(values),):
                raise IndexError(
                    f"A bool mask of shape {tuple(item.shape)} cannot index a list of length {len(values)}"
                )
            item = item.nonzero().flatten()
        item = item.tolist()
    return [values[i] for i in item]
