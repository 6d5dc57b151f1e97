import pytest

from d2mask.data import DatasetCatalog, MetadataCatalog
from d2mask.data.catalog import Metadata, check_dataset_names


def test_get_calls_the_registered_function_each_time(register):
    calls = []
    name = register(lambda: calls.append(1) or [{"image_id": len(calls)}])
    assert DatasetCatalog.get(name) == [{"image_id": 1}]
    assert DatasetCatalog.get(name) == [{"image_id": 2}]


def test_unknown_name_lists_registered_names_and_nearest():
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get("shapes_trian")
    assert "Did you mean 'shapes_train'?" in str(e.value)
    assert "shapes_val" in str(e.value)


def test_duplicate_registration_is_an_error(register):
    name = register([])
    with pytest.raises(KeyError, match="already registered"):
        DatasetCatalog.register(name, lambda: [])


def test_function_must_return_a_list(register):
    name = register(lambda: {"not": "a list"})
    with pytest.raises(TypeError, match="must return a list of dicts"):
        DatasetCatalog.get(name)


def test_metadata_attributes_are_set_once():
    meta = Metadata("m", thing_classes=["a"])
    meta.thing_classes = ["a"]  # the same value again is fine
    with pytest.raises(ValueError, match="thing_classes"):
        meta.thing_classes = ["b"]
    with pytest.raises(AttributeError, match="Did you mean 'thing_classes'"):
        meta.thing_clases
    assert meta.get("missing", 5) == 5


def test_metadata_catalog_creates_on_first_get():
    meta = MetadataCatalog.get("test_metadata_new")
    try:
        assert meta is MetadataCatalog.get("test_metadata_new") and meta.name == "test_metadata_new"
    finally:
        MetadataCatalog.remove("test_metadata_new")


def test_builtin_shapes_are_registered():
    assert {"shapes_train", "shapes_val"} <= set(DatasetCatalog.list())
    meta = MetadataCatalog.get("shapes_val")
    assert meta.thing_classes == ["circle", "square", "triangle"] and meta.evaluator_type == "coco"


def test_a_string_instead_of_a_tuple_is_explained():
    with pytest.raises(TypeError) as e:
        check_dataset_names("shapes_train", "DATASETS.TRAIN")
    assert "DATASETS.TRAIN" in str(e.value) and "('shapes_train',)" in str(e.value)
    assert check_dataset_names(("a", "b")) == ["a", "b"]
