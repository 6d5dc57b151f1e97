import copy
import pickle

import pytest
import torch

from d2mask.structures import Boxes, Instances


def make(n=3, image_size=(20, 30)):
    return Instances(
        image_size,
        gt_boxes=Boxes(torch.arange(n * 4, dtype=torch.float32).view(n, 4)),
        gt_classes=torch.arange(n),
        names=[f"obj{i}" for i in range(n)],
    )


def test_fields_as_attributes_and_accessors():
    inst = make()
    assert inst.image_size == (20, 30)
    assert len(inst) == 3
    assert inst.has("gt_classes") and inst.get("gt_classes").tolist() == [0, 1, 2]
    inst.scores = torch.tensor([0.1, 0.2, 0.3])
    assert set(inst.get_fields()) == {"gt_boxes", "gt_classes", "names", "scores"}
    inst.remove("scores")
    assert not inst.has("scores")
    with pytest.raises(AttributeError, match="scores"):
        inst.scores
    with pytest.raises(KeyError, match="scores"):
        inst.remove("scores")


def test_setting_a_field_of_another_length_names_field_and_lengths():
    inst = make(3)
    with pytest.raises(ValueError, match=r"'scores' has length 2 .* length 3"):
        inst.scores = torch.zeros(2)
    with pytest.raises(ValueError, match="'scores'"):
        Instances((1, 1), a=torch.zeros(3), scores=torch.zeros(4))


def test_empty_instances_has_no_length():
    with pytest.raises(TypeError, match="no fields"):
        len(Instances((5, 5)))


def test_indexing_selects_every_field():
    inst = make(4)
    one = inst[2]
    assert len(one) == 1
    assert one.gt_classes.tolist() == [2]
    assert one.names == ["obj2"]
    assert one.gt_boxes.tensor.tolist() == [[8, 9, 10, 11]]
    assert inst[-1].gt_classes.tolist() == [3]
    with pytest.raises(IndexError):
        inst[4]

    masked = inst[torch.tensor([True, False, True, False])]
    assert masked.gt_classes.tolist() == [0, 2]
    assert masked.names == ["obj0", "obj2"]
    assert masked.gt_boxes.tensor[:, 0].tolist() == [0, 8]

    picked = inst[torch.tensor([3, 1])]
    assert picked.gt_classes.tolist() == [3, 1] and picked.names == ["obj3", "obj1"]
    assert inst[1:3].names == ["obj1", "obj2"]
    assert inst[1:3].image_size == (20, 30)


def test_cat_joins_every_field_in_order():
    a, b = make(2), make(3)
    joined = Instances.cat([a, b])
    assert len(joined) == 5
    assert joined.gt_classes.tolist() == [0, 1, 0, 1, 2]
    assert joined.names == ["obj0", "obj1", "obj0", "obj1", "obj2"]
    assert isinstance(joined.gt_boxes, Boxes) and joined.gt_boxes.tensor[:, 0].tolist() == [0, 4, 0, 4, 8]
    assert Instances.cat([a]) is a


def test_cat_rejects_mismatched_instances():
    with pytest.raises(ValueError, match="image size"):
        Instances.cat([make(image_size=(1, 2)), make(image_size=(2, 1))])
    other = make()
    other.remove("names")
    with pytest.raises(ValueError, match="same fields"):
        Instances.cat([make(), other])
    with pytest.raises(ValueError, match="at least one"):
        Instances.cat([])


def test_to_and_repr():
    inst = make(2)
    moved = inst.to("cpu")
    assert moved is not inst and moved.gt_boxes.device == torch.device("cpu") and moved.names == inst.names
    text = repr(inst)
    assert "num_instances=2" in text and "image_height=20" in text and "gt_classes" in text


def test_instances_survive_pickling_and_deepcopy():
    # DataLoader workers pickle the Instances of each dataset dict.
    inst = make(2)
    for restored in (pickle.loads(pickle.dumps(inst)), copy.deepcopy(inst)):
        assert restored.image_size == (20, 30)
        assert restored.gt_classes.tolist() == [0, 1] and restored.names == ["obj0", "obj1"]
