import pytest
import torch

from d2mask.structures import ImageList


def test_padding_to_size_divisibility_keeps_true_sizes():
    a = torch.rand(3, 30, 45)
    b = torch.rand(3, 50, 20)
    images = ImageList.from_tensors([a, b], size_divisibility=32, pad_value=-1.0)
    # Largest height 50 and width 45, each rounded up to 64.
    assert images.tensor.shape == (2, 3, 64, 64)
    assert images.image_sizes == [(30, 45), (50, 20)]
    assert len(images) == 2
    assert torch.equal(images[0], a) and torch.equal(images[1], b)
    assert (images.tensor[0, :, 30:, :] == -1).all() and (images.tensor[0, :, :, 45:] == -1).all()
    assert (images.tensor[1, :, :, 20:] == -1).all()


def test_without_divisibility_pads_to_the_largest_image():
    images = ImageList.from_tensors([torch.ones(1, 30, 45), torch.ones(1, 50, 20)])
    assert images.tensor.shape == (2, 1, 50, 45)
    assert images.tensor.sum() == 30 * 45 + 50 * 20


def test_single_image_is_padded_too():
    image = torch.rand(3, 33, 64)
    images = ImageList.from_tensors([image], size_divisibility=32)
    assert images.tensor.shape == (1, 3, 64, 64)
    assert torch.equal(images[0], image)
    assert images.to("cpu").image_sizes == [(33, 64)] and images.device == torch.device("cpu")


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match="image 1"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="2 image sizes"):
        ImageList(torch.zeros(1, 3, 4, 4), [(4, 4), (4, 4)])


def test_padding_constraints_as_in_detectron2():
    a, b = torch.ones(1, 30, 45), torch.ones(1, 50, 20)
    # square_size pads every image to S x S; size_divisibility from the constraints replaces the argument
    square = ImageList.from_tensors([a, b], size_divisibility=32, padding_constraints={"square_size": 60})
    assert square.tensor.shape == (2, 1, 64, 64) and square.image_sizes == [(30, 45), (50, 20)]
    exact = ImageList.from_tensors([a, b], 32, padding_constraints={"square_size": 60, "size_divisibility": 0})
    assert exact.tensor.shape == (2, 1, 60, 60) and exact.tensor.sum() == 30 * 45 + 50 * 20
    divisible = ImageList.from_tensors([a], 32, padding_constraints={"size_divisibility": 7})
    assert divisible.tensor.shape == (1, 1, 35, 49)
    assert ImageList.from_tensors([a, b], 32, padding_constraints={}).tensor.shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="does not fit the backbone's padding_constraints square_size 40"):
        ImageList.from_tensors([a, b], padding_constraints={"square_size": 40})
