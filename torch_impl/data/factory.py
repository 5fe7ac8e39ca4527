"""Data set by name: ``build_dataset("shapes" | "cifar100" | "imagenet", "train" | "val", ...)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from .cifar import CIFAR100
from .imagenet import ImageNetFolder
from .shapes import ShapesClassification
from .transforms import build_transform

DATASET_NAMES = ("shapes", "cifar100", "imagenet")


def build_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
    samples: int | None = None,
    data_seed: int = 0,
    transform: Callable | str | None = "default",
) -> Dataset:
    """One split of a data set, with the paper's transform for it unless ``transform`` is given.

    Args:
        name: ``"shapes"`` (built in), ``"cifar100"`` or ``"imagenet"``.
        split: ``"train"`` or ``"val"`` (CIFAR-100's test set; ImageNet's val/ folder).
        data_dir: where the CIFAR-100 / ImageNet files are (not used by shapes).
        download: CIFAR-100 only: fetch it when missing.
        image_size: shapes image side (default 32) / ImageNet crop (default 224); CIFAR is always 32.
        samples, data_seed: shapes only: number of images and generator seed.
        transform: ``"default"`` (the recipe's), a callable, or None (raw images).
    Every returned data set has ``.classes`` (the class names, index = label).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if transform == "default":
        transform = build_transform(name, split == "train", image_size)
    if name == "shapes":
        return ShapesClassification(split, size=image_size or 32, length=samples, seed=data_seed, transform=transform)
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}: expected one of {DATASET_NAMES}")
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir (the folder with its files)")
    if name == "cifar100":
        return CIFAR100(data_dir, split, transform=transform, download=download)
    classes = None
    if split == "val" and (Path(data_dir).expanduser() / "train").is_dir():
        # Labels are the training split's class indices, whatever subset of classes val/ holds.
        classes = sorted(p.name for p in (Path(data_dir).expanduser() / "train").iterdir() if p.is_dir())
    return ImageNetFolder(data_dir, split, transform=transform, classes=classes or None)
