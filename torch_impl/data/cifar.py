"""CIFAR-100 from its standard python-pickle folder (Krizhevsky 2009).

The official archive ``cifar-100-python.tar.gz`` unpacks to::

    cifar-100-python/
        train   pickled dict: b"data" (50000, 3072) uint8 rows = R plane, G plane, B plane of 32 x 32;
                b"fine_labels" list of 50000 ints in [0, 100)
        test    the same with 10000 images
        meta    pickled dict: b"fine_label_names" list of 100 names (bytes)

``root`` may be that folder or the folder that contains it. Nothing is downloaded unless
``download=True``; then torchvision fetches and unpacks the archive (md5-checked) and this class reads it.

The files are pickles, and ``pickle.load`` runs whatever code a crafted file names (a checkpoint's
stored data path leads ``evaluate`` here too). They are read with ``SafeUnpickler``, which admits
only what the official files hold: dicts, lists, tuples, str, bytes, numbers and NumPy arrays of
plain (non-object) dtypes. Anything else is refused before it is built.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

FOLDER = "cifar-100-python"
NUM_CLASSES = 100
_SPLIT_FILES = {"train": "train", "test": "test", "val": "test"}  # CIFAR has no separate validation set


def find_cifar100_folder(root: str | Path) -> Path:
    """The folder holding ``train``, ``test`` and ``meta``: ``root`` itself or ``root/cifar-100-python``."""
    root = Path(root).expanduser()
    for candidate in (root, root / FOLDER):
        if (candidate / "meta").is_file() and (candidate / "train").is_file():
            return candidate
    raise FileNotFoundError(
        f"CIFAR-100 not found under {root}: expected the python-pickle files train, test and meta in "
        f"{root / FOLDER} (or directly in {root}). Unpack cifar-100-python.tar.gz there, or pass --download."
    )


try:  # NumPy >= 2 (pickles written by NumPy 1 name numpy.core.*, by NumPy 2 numpy._core.*)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric


def _plain_dtype(*args) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refused NumPy dtype {dtype} (it holds Python objects)")
    return dtype


# Every global a CIFAR pickle needs: NumPy's array and scalar reconstruction (Python 2's cPickle and
# protocol 2 use _reconstruct/scalar, protocol 5 _frombuffer), and the codec protocol 2 uses for bytes.
_ALLOWED_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _multiarray.scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _numeric._frombuffer for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): codecs.encode,
}
_PLAIN_TYPES = (str, bytes, int, float, bool, type(None), np.generic)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only the globals of ``_ALLOWED_GLOBALS``; any other is an UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: a CIFAR file holds only dicts, lists, strings, numbers "
                "and NumPy arrays, so this file is not one (it may have been crafted to run code)"
            ) from None


def _check_plain(obj: Any, where: str = "") -> None:
    """What SafeUnpickler built is made of plain containers, values and non-object arrays only."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, where)
            _check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_plain(value, where)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError(f"refused an array of Python objects at {where or 'the top'}")
    elif not isinstance(obj, _PLAIN_TYPES):
        raise pickle.UnpicklingError(f"refused a {type(obj).__name__} at {where or 'the top'}")


def safe_unpickle(f) -> Any:
    """``pickle.load(f, encoding="bytes")`` restricted to what the official CIFAR files hold."""
    obj = SafeUnpickler(f, encoding="bytes").load()
    _check_plain(obj)
    return obj


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-100 file missing: expected {path}")
    try:
        with path.open("rb") as f:
            obj = safe_unpickle(f)
    except Exception as err:  # truncated, not a pickle at all, or holding more than data
        raise ValueError(f"{path} is not a readable CIFAR-100 pickle ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _key(d: dict, name: str, path: Path):
    for key in (name.encode(), name):  # the official files use bytes keys; accept str keys too
        if key in d:
            return d[key]
    raise ValueError(f"{path}: missing key b{name!r}; found keys {sorted(map(str, d))}")


def load_cifar100_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images (N, 32, 32, 3) uint8, labels (N,) int64, class names)`` of ``split`` ("train" or "test")."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"CIFAR-100 split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    folder = Path(folder)
    path = folder / _SPLIT_FILES[split]
    batch = _unpickle(path)
    data = np.asarray(_key(batch, "data", path))
    labels = np.asarray(_key(batch, "fine_labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(
            f"{path}: b'fine_labels' must hold one label per image ({len(data)}), got shape {labels.shape}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: fine labels must lie in [0, {NUM_CLASSES}), got [{labels.min()}, {labels.max()}]")
    meta_path = folder / "meta"
    names = [
        n.decode() if isinstance(n, bytes) else str(n)
        for n in _key(_unpickle(meta_path), "fine_label_names", meta_path)
    ]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{meta_path}: expected {NUM_CLASSES} fine label names, got {len(names)}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> HWC
    return np.ascontiguousarray(images), labels.astype(np.int64), names


class CIFAR100(Dataset):
    """CIFAR-100 fine labels; ``dataset[i] = (transform(PIL image), label)``.

    Args:
        root: the ``cifar-100-python`` folder or its parent.
        split: ``"train"`` (50,000) or ``"test"`` (10,000; ``"val"`` is an alias, as the paper reports
            the test set).
        transform: applied to the PIL image; None returns the PIL image.
        download: fetch the official archive into ``root`` first if the files are missing.
    """

    def __init__(self, root: str | Path, split: str = "train", transform=None, download: bool = False):
        root = Path(root).expanduser()
        if download:
            try:
                find_cifar100_folder(root)
            except FileNotFoundError:
                from torchvision.datasets import CIFAR100 as _TorchvisionCIFAR100

                _TorchvisionCIFAR100(str(root), train=True, download=True)
        self.folder = find_cifar100_folder(root)
        self.split = "test" if split == "val" else split
        self.images, self.targets, self.classes = load_cifar100_split(self.folder, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        label = int(self.targets[index])
        return (image if self.transform is None else self.transform(image)), label

    def __repr__(self) -> str:
        return f"CIFAR100(folder={str(self.folder)!r}, split={self.split!r}, n={len(self)})"
