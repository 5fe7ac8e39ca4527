"""What the tests share (test files import from here, never from each other).

``tiny_config``: a run of a few steps on 16 x 16 shapes, with no progress bars and no TensorBoard (well
under a second of training); each test file overrides what it needs. ``write_cifar100`` and
``write_imagenet``: tiny data sets in the real on-disk formats, since no data set can be downloaded.
"""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image

from torch_impl.data.cifar import FOLDER


def tiny_config(out=None, **overrides) -> dict:
    cfg = dict(
        model="aff3d_resnet20_cifar",
        image_size=16,
        train_samples=48,
        val_samples=24,
        epochs=2,
        batch_size=8,
        steps_per_epoch=3,
        output_dir=None if out is None else str(out),
        progress=False,
        tensorboard=False,
    )
    cfg.update(overrides)
    return cfg


def write_cifar100(root, n_train=6, n_test=4, seed=0, **corrupt):
    """``root/cifar-100-python/{train,test,meta}`` as the official archive has them (bytes keys)."""
    rng = np.random.default_rng(seed)
    folder = root / FOLDER
    folder.mkdir(parents=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 100, size=n)]
        batch = {
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
            b"batch_label": split.encode(),
            b"fine_labels": labels,
            b"coarse_labels": [x // 5 for x in labels],
            b"data": data,
        }
        batch.update(corrupt.get(split, {}))
        with open(folder / split, "wb") as f:
            pickle.dump(batch, f)
        arrays[split] = (data, labels)
    meta = {
        b"fine_label_names": [f"class{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
    }
    meta.update(corrupt.get("meta", {}))
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return arrays


CLASSES = ("n01440764", "n01443537", "n01484850")


def write_jpeg(path, colour, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


def write_imagenet(root, per_class=2, val_classes=CLASSES):
    for split, classes in (("train", CLASSES), ("val", val_classes)):
        for c, name in enumerate(classes):
            for i in range(per_class):
                write_jpeg(root / split / name / f"{name}_{i}.JPEG", (80 * c, 10 * i, 200))
