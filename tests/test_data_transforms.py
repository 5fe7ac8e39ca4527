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
