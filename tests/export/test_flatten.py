"""Flattening rich structures to tuples of tensors and back, and TracingAdapter on a small module whose
inputs and outputs are Instances."""
import pytest
import torch
from torch import nn

from d2mask.export import TracingAdapter, flatten_to_tuple
from d2mask.export.flatten import DictSchema, IdentitySchema, InstancesSchema, ListSchema, TensorWrapSchema
from d2mask.structures import BitMasks, Boxes, Instances


def _instances():
    inst = Instances((6, 8))
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 1.0, 4.0, 5.0], [2.0, 2.0, 7.0, 6.0]]))
    inst.scores = torch.tensor([0.9, 0.4])
    inst.pred_masks = BitMasks(torch.zeros(2, 6, 8, dtype=torch.bool))
    return inst


def test_nested_structure_round_trip():
    inst = _instances()
    obj = [{"instances": inst, "name": "a"}, (torch.tensor(3),)]
    values, schema = flatten_to_tuple(obj)
    # dict keys sorted: "instances" (fields sorted: pred_boxes, pred_masks, scores; then the image size), "name"
    assert len(values) == 4 + 1 + 1
    assert values[0] is inst.pred_boxes.tensor and values[1] is inst.pred_masks.tensor and values[2] is inst.scores
    assert values[3].tolist() == [6, 8] and values[4] == "a" and values[5].item() == 3
    assert isinstance(schema, ListSchema) and isinstance(schema.schemas[0], DictSchema)
    assert schema.schemas[0].schemas[0] == InstancesSchema(
        [
            TensorWrapSchema("d2mask.structures.boxes.Boxes"),
            TensorWrapSchema("d2mask.structures.masks.BitMasks"),
            IdentitySchema(),
        ],
        [1, 1, 1],
        ["pred_boxes", "pred_masks", "scores"],
    )

    rebuilt = schema(values)
    assert rebuilt[0]["name"] == "a" and isinstance(rebuilt[1], tuple) and rebuilt[1][0].item() == 3
    new = rebuilt[0]["instances"]
    assert new.image_size == (6, 8) and sorted(new.get_fields()) == ["pred_boxes", "pred_masks", "scores"]
    assert isinstance(new.pred_boxes, Boxes) and torch.equal(new.pred_boxes.tensor, inst.pred_boxes.tensor)
    assert isinstance(new.pred_masks, BitMasks)


def test_schema_rejects_wrong_number_of_values():
    _, schema = flatten_to_tuple([torch.zeros(1), torch.zeros(2)])
    with pytest.raises(ValueError, match="expects 2 flat values, got 3"):
        schema((torch.zeros(1),) * 3)
    with pytest.raises(KeyError, match="str keys"):
        flatten_to_tuple({1: torch.zeros(1)})


class _TopBoxes(nn.Module):
    """Instances(proposal_boxes, objectness_logits) -> Instances(pred_boxes, scores) of the boxes
    scoring above a learned threshold, boxes shifted by a parameter: a data-dependent output count."""

    def __init__(self):
        super().__init__()
        self.shift = nn.Parameter(torch.tensor(1.0))
        self.threshold = nn.Parameter(torch.tensor(0.0))

    def forward(self, proposals: Instances):
        keep = proposals.objectness_logits > self.threshold
        out = Instances(proposals.image_size)
        out.pred_boxes = Boxes(proposals.proposal_boxes.tensor[keep] + self.shift)
        out.scores = proposals.objectness_logits[keep].sigmoid()
        return {"instances": out}


def _proposals(logits):
    inst = Instances((10, 10))
    inst.proposal_boxes = Boxes(torch.arange(4.0 * len(logits)).view(-1, 4))
    inst.objectness_logits = torch.tensor(logits)
    return inst


def test_tracing_adapter_traces_and_generalises_to_other_inputs():
    model = _TopBoxes()
    adapter = TracingAdapter(model, _proposals([1.0, -1.0, 2.0]))
    traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    other = _proposals([-3.0, 0.5, 0.5, 4.0, -1.0])
    new_inputs, _ = flatten_to_tuple(other)
    result = adapter.outputs_schema(traced(*new_inputs))["instances"]
    expected = model(other)["instances"]
    assert len(result) == 3
    assert torch.equal(result.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(result.scores, expected.scores)
    # the same through the wrapper with the model's own interface
    wrapped = adapter._create_wrapper(traced)(other)["instances"]
    assert torch.equal(wrapped.scores, expected.scores)


def test_tracing_adapter_takes_the_model_mode():
    # An exporter that sets eval mode and then restores the adapter's must not leave the model training.
    assert TracingAdapter(nn.Identity().eval(), torch.zeros(1)).training is False
    assert TracingAdapter(nn.Identity().train(), torch.zeros(1)).training is True


def test_tracing_adapter_refuses_non_tensor_inputs_and_outputs():
    with pytest.raises(ValueError, match=r"tensors only; they include \['str'\]"):
        TracingAdapter(nn.Identity(), (torch.zeros(1), "text"))
    adapter = TracingAdapter(nn.Identity(), torch.zeros(1), inference_func=lambda model, x: [x, "label"])
    with pytest.raises(ValueError, match=r"outputs cannot be traced: they include \['str'\]"):
        adapter(*adapter.flattened_inputs)


def test_tracing_adapter_allow_non_tensor_keeps_only_tensors():
    x = torch.ones(2)
    def double(model, x, text):
        return model(x) * 2, text

    adapter = TracingAdapter(nn.Identity(), (x, "text"), inference_func=double, allow_non_tensor=True)
    assert adapter.inputs_schema is None and adapter.flattened_inputs == (x,)
    (out,) = adapter(x)
    assert torch.equal(out, x * 2) and adapter.outputs_schema is None
    with pytest.raises(ValueError, match="runs only on its own `flattened_inputs`"):
        adapter(torch.ones(2))
