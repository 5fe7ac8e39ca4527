"""ImageNet 2012 from the standard class-folder layout (the one torchvision's reference scripts use)::

    <data-dir>/
        train/n01440764/n01440764_10026.JPEG ...   1000 class folders, 1.28 M images
        val/n01440764/ILSVRC2012_val_00000293.JPEG ... the same 1000 folders, 50,000 images

The validation images ship as one flat folder; sort them into class folders first (the devkit's
ground truth gives each image's class). Class indices are the sorted folder names of ``train/``, and
``val/`` must use the same names, so that a label means the same class in both splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

SPLITS = ("train", "val")


def _read_rgb(path: str) -> Image.Image:
    """Open an image as RGB, naming the file when it cannot be decoded."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")
    except Exception as err:
        raise ValueError(f"cannot read image {path} ({type(err).__name__}: {err})") from err


def find_split_folder(root: str | Path, split: str) -> Path:
    """``root/split`` after checking it exists and holds class folders, not loose images."""
    if split not in SPLITS:
        raise ValueError(f"ImageNet split must be one of {SPLITS}, got {split!r}")
    root = Path(root).expanduser()
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"ImageNet {split} folder not found: expected {folder} with one sub-folder per class "
            f"(e.g. {folder / 'n01440764'})"
        )
    entries = list(folder.iterdir())
    if not any(e.is_dir() for e in entries):
        loose = [e.name for e in entries if e.suffix.lower() in IMG_EXTENSIONS]
        hint = (
            f"; it holds {len(loose)} loose images: sort them into class folders (the validation set ships flat)"
            if loose
            else ""
        )
        raise FileNotFoundError(f"no class folders in {folder}: expected {folder}/<class>/<image>.JPEG{hint}")
    return folder


class ImageNetFolder(ImageFolder):
    """One split of an ImageNet-style class-folder data set; ``dataset[i] = (transform(image), label)``.

    Args:
        root: the folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"``.
        transform: applied to the RGB PIL image.
        classes: the class names that define the labels (pass the training split's ``classes`` when
            loading ``val``); None: the sorted sub-folders of this split.
    """

    def __init__(self, root: str | Path, split: str = "train", transform=None, classes: Sequence[str] | None = None):
        self._expected_classes = list(classes) if classes is not None else None
        folder = find_split_folder(root, split)
        self.split = split
        try:
            super().__init__(str(folder), transform=transform, loader=_read_rgb)
        except FileNotFoundError as err:  # e.g. a class folder without any image
            raise FileNotFoundError(f"ImageNet {split} split at {folder}: {err}") from err
        if not self.samples:
            raise FileNotFoundError(f"ImageNet {split} split at {folder}: no images with extensions {IMG_EXTENSIONS}")

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        classes, class_to_idx = super().find_classes(directory)
        if self._expected_classes is not None:
            extra = sorted(set(classes) - set(self._expected_classes))
            if extra:
                raise ValueError(
                    f"{directory} has class folders that the training split lacks: {extra[:5]}"
                    f"{' ...' if len(extra) > 5 else ''}; both splits must use the same class names"
                )
            classes = list(self._expected_classes)
            class_to_idx = {c: i for i, c in enumerate(classes)}
        return classes, class_to_idx

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        # A validation split may lack some classes (e.g. a small subset), but never all of them.
        return super().make_dataset(
            directory, class_to_idx, extensions, is_valid_file, allow_empty=self._expected_classes is not None
        )

    def __repr__(self) -> str:
        return f"ImageNetFolder(root={self.root!r}, split={self.split!r}, n={len(self)}, classes={len(self.classes)})"
