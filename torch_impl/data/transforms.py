"""The paper's data augmentation and evaluation transforms, one function per recipe.

ImageNet (paper section 4.1, following He et al. 2016 [1]): training crops 224 x 224 with random
horizontal flips. We use torchvision's RandomResizedCrop (scale 0.08-1, the common reading of [1]'s
scale augmentation in today's reference scripts) and the standard single-crop evaluation: resize the
shorter side to 256, centre crop 224.

CIFAR (He et al. [1] section 4.2, used by [2] for ResNet-164): pad 4 pixels on each side, random
32 x 32 crop, random horizontal flip; evaluation on the original 32 x 32 image. [1] subtracts the
per-pixel mean; we normalise per channel, as most re-implementations do.

shapes: the built-in images are already randomly placed, scaled and rotated, so training only adds
flips.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

# Channel statistics of the ImageNet 2012 training set, as used by torchvision's reference scripts.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Channel statistics of the CIFAR-100 training set (50,000 images, pixels scaled to [0, 1]).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# Channel statistics of ShapesClassification("train", size=32, seed=0), measured over its first
# 2,000 images; tests/test_data_transforms.py re-measures them.
SHAPES_MEAN = (0.498, 0.494, 0.504)
SHAPES_STD = (0.241, 0.241, 0.242)


def imagenet_train(crop: int = 224) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(crop),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def imagenet_eval(crop: int = 224, resize: int = 256) -> T.Compose:
    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def cifar_train(crop: int = 32, padding: int = 4) -> T.Compose:
    return T.Compose(
        [
            T.RandomCrop(crop, padding=padding),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR100_MEAN, CIFAR100_STD),
        ]
    )


def cifar_eval() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])


class ShapesTransform:
    """shapes' transform: ``Compose([RandomHorizontalFlip(), ToTensor(), Normalize(SHAPES_MEAN, SHAPES_STD)])``
    (no flip for evaluation), to the bit, on the (H, W, 3) uint8 array the data set renders, without a PIL round
    trip: the same random draw per image and the same arithmetic in the same order. At 16 px the PIL steps cost
    about 0.1 ms an image, about a tenth of a training step of ResNet-20 on one CPU thread; this costs a seventh.
    """

    takes_array = True  # ShapesClassification hands it the array; a PIL image works too

    def __init__(self, train: bool):
        self.train = train
        self.mean = torch.tensor(SHAPES_MEAN).view(-1, 1, 1)
        self.std = torch.tensor(SHAPES_STD).view(-1, 1, 1)

    def __call__(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        flip = self.train and bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip's draw, one per image
        pixels = image if isinstance(image, np.ndarray) else np.array(image)
        x = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # (3, H, W) uint8, as ToTensor lays it out
        if flip:
            x = x.flip(-1)  # a permutation: flipping before the arithmetic gives the same floats
        return x.float().div_(255).sub_(self.mean).div_(self.std)  # ToTensor's scale, then Normalize

    def __repr__(self) -> str:
        return f"ShapesTransform(train={self.train})"


def shapes_train() -> ShapesTransform:
    return ShapesTransform(train=True)


def shapes_eval() -> ShapesTransform:
    return ShapesTransform(train=False)


def build_transform(dataset: str, train: bool, image_size: int | None = None) -> T.Compose | ShapesTransform:
    """The transform of ``dataset`` (``"imagenet"``, ``"cifar100"``, ``"shapes"``) for training or evaluation.

    ``image_size`` is the crop for ImageNet (evaluation resizes to ``image_size * 256 / 224``); CIFAR is
    always 32 and shapes images already have their size.
    """
    if dataset == "imagenet":
        crop = image_size or 224
        return imagenet_train(crop) if train else imagenet_eval(crop, round(crop * 256 / 224))
    if dataset == "cifar100":
        return cifar_train() if train else cifar_eval()
    if dataset == "shapes":
        return shapes_train() if train else shapes_eval()
    raise ValueError(f"unknown dataset {dataset!r}: expected 'imagenet', 'cifar100' or 'shapes'")
