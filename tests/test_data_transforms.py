"""The recipes' transforms: output sizes, the CIFAR pad-and-crop, normalisation constants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from torch_impl.data import ShapesClassification
from torch_impl.data import transforms as T


def test_imagenet_train_and_eval_sizes():
    image = Image.new("RGB", (300, 200), (120, 30, 200))
    assert T.imagenet_train()(image).shape == (3, 224, 224)
    assert T.imagenet_eval()(image).shape == (3, 224, 224)
    assert T.build_transform("imagenet", False, 160)(image).shape == (3, 160, 160)


def test_imagenet_eval_is_resize_256_centre_crop_224():
    # A 512 x 256 gradient: resizing the short side to 256 keeps it, the centre crop takes columns 144..367.
    x = np.tile(np.arange(512, dtype=np.float64)[None, :, None] / 511 * 255, (256, 1, 3)).astype(np.uint8)
    out = T.imagenet_eval()(Image.fromarray(x))
    mean, std = torch.tensor(T.IMAGENET_MEAN)[:, None, None], torch.tensor(T.IMAGENET_STD)[:, None, None]
    pixels = (out * std + mean) * 255
    expected = torch.from_numpy(x[16:240, 144:368].astype(np.float32)).permute(2, 0, 1)
    assert torch.allclose(pixels, expected, atol=0.5)


def test_cifar_train_pads_4_and_crops_32():
    torch.manual_seed(0)
    image = Image.fromarray(np.full((32, 32, 3), 255, np.uint8))
    t = T.cifar_train()
    zero_level = (0 - torch.tensor(T.CIFAR100_MEAN)) / torch.tensor(T.CIFAR100_STD)
    shifts = set()
    for _ in range(40):
        out = t(image)
        assert out.shape == (3, 32, 32)
        padded_cols = torch.isclose(out[0], zero_level[0]).all(dim=0)  # columns of zero padding
        padded_rows = torch.isclose(out[0], zero_level[0]).all(dim=1)
        assert int(padded_cols.sum()) <= 4 and int(padded_rows.sum()) <= 4
        shifts.add((int(padded_rows.sum()), int(padded_cols.sum())))
    assert len(shifts) > 3  # the crop position varies


def test_cifar_eval_is_normalisation_only():
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = T.cifar_eval()(Image.fromarray(x))
    back = out * torch.tensor(T.CIFAR100_STD)[:, None, None] + torch.tensor(T.CIFAR100_MEAN)[:, None, None]
    assert torch.allclose(back * 255, torch.from_numpy(x).permute(2, 0, 1).float(), atol=1e-3)


def test_shapes_statistics_match_the_data():
    ds = ShapesClassification("train", size=32, length=1000, seed=0)
    pixels = np.stack([ds.sample(i)[0] for i in range(len(ds))]).astype(np.float64) / 255
    np.testing.assert_allclose(pixels.mean(axis=(0, 1, 2)), T.SHAPES_MEAN, atol=0.01)
    np.testing.assert_allclose(pixels.std(axis=(0, 1, 2)), T.SHAPES_STD, atol=0.01)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        T.build_transform("mnist", True)


@pytest.mark.parametrize("train", [True, False])
def test_shapes_transform_is_torchvisions_pil_pipeline_to_the_bit(train):
    """The built-in transform skips PIL; torchvision's Compose on PIL images gives the same floats and draws the
    same random numbers (the flips fall on the same images), so runs train on the same tensors either way."""
    from torchvision import transforms as tv

    steps = [tv.RandomHorizontalFlip()] if train else []
    pil = tv.Compose([*steps, tv.ToTensor(), tv.Normalize(T.SHAPES_MEAN, T.SHAPES_STD)])
    ds = ShapesClassification("train", size=16, length=64, seed=3)
    images = [ds.sample(i)[0] for i in range(len(ds))]
    torch.manual_seed(0)
    want = [pil(Image.fromarray(x)) for x in images]
    after_want = torch.rand(1)
    torch.manual_seed(0)
    got = [T.build_transform("shapes", train)(x) for x in images]
    assert torch.equal(torch.rand(1), after_want)  # one draw per training image, as RandomHorizontalFlip
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    flipped = [not torch.equal(a, T.shapes_eval()(x)) for a, x in zip(got, images)]
    assert (0 < sum(flipped) < len(images)) == train  # training flips some images, evaluation none
    torch.manual_seed(0)
    assert torch.equal(T.build_transform("shapes", train)(Image.fromarray(images[0])), want[0])  # a PIL image too


def test_shapes_data_set_hands_its_array_to_the_built_in_transform_and_pil_to_others():
    ds = ShapesClassification("val", size=16, length=4, seed=0, transform=T.shapes_eval())
    pil = ShapesClassification("val", size=16, length=4, seed=0, transform=lambda im: (type(im).__name__, im.size))
    assert torch.equal(ds[2][0], T.shapes_eval()(ds.sample(2)[0])) and ds[2][0].shape == (3, 16, 16)
    assert pil[2][0] == ("Image", (16, 16))
