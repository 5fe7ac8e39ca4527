"""ImageNet class-folder loader on tiny JPEG files in the standard train/ and val/ layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from torch_impl.data import ImageNetFolder, build_dataset
from tiny_run import CLASSES, write_imagenet, write_jpeg

def test_loads_class_folders(tmp_path):
    write_imagenet(tmp_path)
    train = ImageNetFolder(tmp_path, "train")
    assert train.classes == list(CLASSES) and len(train) == 6
    image, label = train[3]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 1
    assert abs(int(np.asarray(image)[0, 0, 0]) - 80) <= 3  # class 1's red channel (JPEG rounding)


def test_val_labels_follow_train_classes(tmp_path):
    # A val/ with only some classes must still label them by the training split's index.
    write_imagenet(tmp_path, val_classes=CLASSES[2:])
    val = build_dataset("imagenet", "val", data_dir=tmp_path, image_size=32)
    assert val.classes == list(CLASSES) and {label for _, label in val.samples} == {2}
    x, label = val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == 2


def test_paper_transforms_give_224(tmp_path):
    write_imagenet(tmp_path, per_class=1)
    train = build_dataset("imagenet", "train", data_dir=tmp_path)
    val = build_dataset("imagenet", "val", data_dir=tmp_path)
    assert train[0][0].shape == val[0][0].shape == (3, 224, 224)


def test_missing_split_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected .*train with one sub-folder per class"):
        ImageNetFolder(tmp_path, "train")


def test_flat_val_folder_gets_a_hint(tmp_path):
    write_imagenet(tmp_path)
    flat = tmp_path / "flat"
    write_jpeg(flat / "val" / "ILSVRC2012_val_00000001.JPEG", (1, 2, 3))
    with pytest.raises(FileNotFoundError, match="1 loose images: sort them into class folders"):
        ImageNetFolder(flat, "val")


def test_empty_class_folder_is_refused(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "train" / "n09999999").mkdir()
    with pytest.raises(FileNotFoundError, match="n09999999"):
        ImageNetFolder(tmp_path, "train")


def test_val_class_unknown_to_train_is_refused(tmp_path):
    write_imagenet(tmp_path)
    write_jpeg(tmp_path / "val" / "n00000001" / "x.JPEG", (0, 0, 0))
    with pytest.raises(ValueError, match=r"class folders that the training split lacks: \['n00000001'\]"):
        build_dataset("imagenet", "val", data_dir=tmp_path)


def test_corrupt_image_is_named(tmp_path):
    write_imagenet(tmp_path)
    bad = tmp_path / "train" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    train = ImageNetFolder(tmp_path, "train")
    with pytest.raises(ValueError, match=r"cannot read image .*n01440764_0\.JPEG"):
        train[0]


def test_bad_split_name(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        ImageNetFolder(tmp_path, "test")
