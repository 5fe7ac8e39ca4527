"""CIFAR-100 loader on tiny files written in the official python-pickle format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from torch_impl.data import CIFAR100, build_dataset
from torch_impl.data.cifar import FOLDER
from tiny_run import write_cifar100


def test_loads_official_layout(tmp_path):
    arrays = write_cifar100(tmp_path)
    for root in (tmp_path, tmp_path / FOLDER):  # parent or the folder itself
        train = CIFAR100(root, "train")
        assert len(train) == 6 and len(train.classes) == 100 and train.classes[3] == "class03"
        image, label = train[2]
        data, labels = arrays["train"]
        assert label == labels[2]
        pixels = np.asarray(image)
        assert pixels.shape == (32, 32, 3)
        # rows are R plane, G plane, B plane, each 32 x 32 row-major
        np.testing.assert_array_equal(pixels[..., 0].ravel(), data[2, :1024])
        np.testing.assert_array_equal(pixels[..., 2].ravel(), data[2, 2048:])
    test = CIFAR100(tmp_path, "val")  # the paper reports the test set; "val" is its alias
    assert len(test) == 4 and test.split == "test"


def test_build_dataset_applies_the_recipe_transform(tmp_path):
    write_cifar100(tmp_path)
    train = build_dataset("cifar100", "train", data_dir=tmp_path)
    val = build_dataset("cifar100", "val", data_dir=tmp_path)
    x, _ = train[0]
    y, _ = val[0]
    assert x.shape == y.shape == (3, 32, 32) and x.dtype == torch.float32


def test_missing_folder_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*--download"):
        CIFAR100(tmp_path, "train")
    with pytest.raises(ValueError, match="needs data_dir"):
        build_dataset("cifar100", "train")


@pytest.mark.parametrize(
    "corrupt, match",
    [
        ({"train": {b"data": np.zeros((6, 100), np.uint8)}}, r"uint8 of shape \(N, 3072\)"),
        ({"train": {b"fine_labels": [0, 1, 2]}}, "one label per image"),
        ({"train": {b"fine_labels": [0, 1, 2, 3, 4, 100]}}, r"\[0, 100\)"),
        ({"meta": {b"fine_label_names": [b"a"] * 99}}, "expected 100 fine label names"),
    ],
)
def test_malformed_files_are_refused(tmp_path, corrupt, match):
    write_cifar100(tmp_path, **corrupt)
    with pytest.raises(ValueError, match=match):
        CIFAR100(tmp_path, "train")


def test_missing_key_is_named(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / FOLDER / "train"
    batch = pickle.loads(path.read_bytes())
    del batch[b"fine_labels"]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="missing key b'fine_labels'"):
        CIFAR100(tmp_path, "train")


def test_truncated_pickle_is_refused(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / FOLDER / "train"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match="not a readable CIFAR-100 pickle"):
        CIFAR100(tmp_path, "train")


def test_unknown_split(tmp_path):
    write_cifar100(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        CIFAR100(tmp_path, "validation")


def test_download_only_when_asked_and_missing(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeTorchvisionCIFAR100:  # stands in for the network fetch of torchvision's CIFAR100
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            write_cifar100(tmp_path / "dl")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeTorchvisionCIFAR100)
    with pytest.raises(FileNotFoundError):
        CIFAR100(tmp_path / "dl", "train")  # no --download: no fetch
    assert calls == []
    assert len(CIFAR100(tmp_path / "dl", "train", download=True)) == 6
    assert calls == [(str(tmp_path / "dl"), True)]
    CIFAR100(tmp_path / "dl", "test", download=True)  # already there: no second fetch
    assert len(calls) == 1


# ----------------------------------------------------------------------------- untrusted files


class _CreatesAFile:
    """Unpickled by ``pickle.load``, this opens (and so creates) ``path``: a stand-in for any code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_crafted_meta_file_runs_no_code(tmp_path):
    write_cifar100(tmp_path / "data")
    marker = tmp_path / "created-by-the-pickle"
    crafted = pickle.dumps({b"fine_label_names": [_CreatesAFile(marker)] * 100})
    pickle.loads(crafted).clear()  # the crafted bytes do run code under pickle.load ...
    assert marker.exists()
    marker.unlink()
    (tmp_path / "data" / FOLDER / "meta").write_bytes(crafted)
    with pytest.raises(ValueError, match=r"meta is not a readable CIFAR-100 pickle .*refused to load .*open"):
        CIFAR100(tmp_path / "data", "train")
    assert not marker.exists()  # ... but not when the data set reads them


def test_object_arrays_are_refused(tmp_path):
    write_cifar100(tmp_path, train={b"data": np.array([[1, "x"]], dtype=object)})
    with pytest.raises(ValueError, match="refused NumPy dtype object"):
        CIFAR100(tmp_path, "train")


@pytest.mark.parametrize("numpy_module", ["numpy._core", "numpy.core"])
def test_protocol_2_files_load(tmp_path, numpy_module):
    """The official files are Python 2 pickles (protocol 2) naming NumPy 1's numpy.core.multiarray."""
    arrays = write_cifar100(tmp_path)
    path = tmp_path / FOLDER / "train"
    raw = pickle.dumps(pickle.loads(path.read_bytes()), protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path.write_bytes(raw.replace(b"numpy._core.", numpy_module.encode() + b"."))
    train = CIFAR100(tmp_path, "train")
    np.testing.assert_array_equal(np.asarray(train[1][0])[..., 1].ravel(), arrays["train"][0][1, 1024:2048])
