"""Data: the built-in ``shapes`` set, CIFAR-100 and ImageNet loaders, the paper's transforms."""

from .cifar import CIFAR100
from .factory import DATASET_NAMES, build_dataset
from .imagenet import ImageNetFolder
from .shapes import (
    SHAPE_CLASSES,
    Scene,
    ShapeObject,
    ShapesClassification,
    polygon_mask,
    render_classification_sample,
    render_scene,
)

__all__ = [
    "CIFAR100",
    "DATASET_NAMES",
    "SHAPE_CLASSES",
    "ImageNetFolder",
    "Scene",
    "ShapeObject",
    "ShapesClassification",
    "build_dataset",
    "polygon_mask",
    "render_classification_sample",
    "render_scene",
]
