"""PASCAL VOC detection annotations (one XML file per image) as dataset dicts.

The layout is the devkit's: `<dirname>/ImageSets/Main/<split>.txt` lists image ids,
`<dirname>/Annotations/<id>.xml` holds each image's size and objects, `<dirname>/JPEGImages/<id>.jpg`
the image. "difficult" objects are kept, as in Detectron2 (VOC's evaluation ignores them).
"""
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Sequence, Tuple

from ...structures import BoxMode
from ..catalog import DatasetCatalog, DatasetError, MetadataCatalog
from .builtin_meta import PASCAL_VOC_CLASSES

__all__ = ["load_voc_instances", "register_pascal_voc", "parse_voc_objects"]

CLASS_NAMES = PASCAL_VOC_CLASSES


def _text(node: ET.Element, path: str, xml_file: str) -> str:
    found = node.find(path)
    if found is None or found.text is None:
        raise DatasetError(f"{xml_file}: no <{path}> in an <{node.tag}> element")
    return found.text.strip()


def parse_voc_objects(xml_file: str, class_names: Sequence[str]) -> Tuple[int, int, List[Dict]]:
    """The image size and objects of one VOC annotation file.

    Returns:
        (height, width, objects), each object {"category_id": index in `class_names`, "bbox": XYXY in
        continuous coordinates, "difficult": bool}.
    """
    try:
        tree = ET.parse(xml_file)
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{xml_file}: not a readable VOC annotation ({e})") from None
    root = tree.getroot()
    try:
        height, width = int(_text(root, "size/height", xml_file)), int(_text(root, "size/width", xml_file))
    except ValueError:
        raise DatasetError(f"{xml_file}: <size> must hold integer <height> and <width>") from None
    objects = []
    for obj in root.findall("object"):
        name = _text(obj, "name", xml_file)
        if name not in class_names:
            raise DatasetError(f"{xml_file}: object class '{name}' is not one of the {len(class_names)} "
                               f"class names ({', '.join(class_names[:5])}, ...)")
        try:
            box = [float(_text(obj, f"bndbox/{key}", xml_file)) for key in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise DatasetError(f"{xml_file}: a <bndbox> of '{name}' has a coordinate that is not a number") from None
        # VOC's pixel indices start at 1 and its boxes include their last pixel: the corner at index
        # x covers [x - 1, x] in continuous coordinates, so only the top-left corner moves.
        box[0] -= 1.0
        box[1] -= 1.0
        difficult = obj.find("difficult")
        objects.append({"category_id": class_names.index(name), "bbox": box,
                        "difficult": difficult is not None and (difficult.text or "0").strip() == "1"})
    return height, width, objects


def _load_one(xml_file: str, image_file: str, image_id: str, class_names: Sequence[str]) -> Dict:
    height, width, objects = parse_voc_objects(xml_file, class_names)
    annotations = [{"category_id": o["category_id"], "bbox": o["bbox"], "bbox_mode": BoxMode.XYXY_ABS}
                   for o in objects]
    return {"file_name": image_file, "image_id": image_id, "height": height, "width": width,
            "annotations": annotations}


def load_voc_instances(dirname: str, split: str, class_names: Sequence[str] = CLASS_NAMES) -> List[Dict]:
    """The images of one split of a VOC-layout directory, with their boxes.

    Args:
        dirname: the directory holding Annotations/, ImageSets/ and JPEGImages/ (e.g. ".../VOC2007").
        split: "train", "val", "trainval" or "test": the id list ImageSets/Main/<split>.txt.
        class_names: the classes in contiguous-id order; an object of another class is an error.

    Returns:
        One dict per image id, in the order of the list; boxes in `BoxMode.XYXY_ABS`.
    """
    class_names = list(class_names)
    list_file = os.path.join(dirname, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(list_file):
        raise DatasetError(f"VOC split file {list_file} does not exist; expected the devkit layout "
                           f"(Annotations/, ImageSets/Main/, JPEGImages/) under {dirname}")
    with open(list_file, "r", encoding="utf-8") as f:
        image_ids = [line.strip() for line in f if line.strip()]
    return [
        _load_one(os.path.join(dirname, "Annotations", f"{image_id}.xml"),
                  os.path.join(dirname, "JPEGImages", f"{image_id}.jpg"), image_id, class_names)
        for image_id in image_ids
    ]


def register_pascal_voc(name: str, dirname: str, split: str, year: int,
                        class_names: Sequence[str] = CLASS_NAMES) -> None:
    """Registers one split of a VOC-layout directory as dataset `name` (read at each `DatasetCatalog.get`)."""
    DatasetCatalog.register(name, lambda: load_voc_instances(dirname, split, class_names))
    MetadataCatalog.get(name).set(thing_classes=list(class_names), dirname=dirname, year=year, split=split,
                                  evaluator_type="pascal_voc")
