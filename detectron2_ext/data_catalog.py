"""Data sets the detectron2 way: COCO 2017 from detectron2's built-in catalog, shapes registered here.

COCO 2017 (``coco_2017_train``, ``coco_2017_val``) is registered by detectron2 itself when
``detectron2.data`` is imported, under ``$DETECTRON2_DATASETS`` (default ``./datasets``)::

    $DETECTRON2_DATASETS/coco/annotations/instances_{train,val}2017.json
    $DETECTRON2_DATASETS/coco/{train,val}2017/*.jpg

``register_shapes(cfg)`` renders the built-in shapes data (``DATASETS.SHAPES``) to COCO files under
``$DETECTRON2_DATASETS/shapes/`` on first use and registers ``shapes_train`` and ``shapes_val`` with
``register_coco_instances``, so training, ``COCOEvaluator`` and visualisation treat it as COCO.
"""

from __future__ import annotations

import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils import comm

from torch_impl.data.shapes import SHAPE_CLASSES

from .shapes_coco import ShapesCOCOSpec, export_shapes_coco

SHAPES_DATASETS = {"shapes_train": "train", "shapes_val": "val"}


def datasets_root() -> Path:
    """``$DETECTRON2_DATASETS``, or ``./datasets`` as in detectron2's builtin registration."""
    return Path(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))


def shapes_spec(cfg, split: str) -> ShapesCOCOSpec:
    s = cfg.DATASETS.SHAPES
    num_images = s.NUM_TRAIN if split == "train" else s.NUM_VAL
    return ShapesCOCOSpec(split, num_images, s.IMAGE_SIZE, s.SEED, s.MIN_OBJECTS, s.MAX_OBJECTS)


def register_shapes(cfg, root: str | Path | None = None) -> dict[str, Path]:
    """Export (once) and register ``shapes_train`` / ``shapes_val``; return their JSON paths.

    The main process renders, the others wait for it. Registering again with other settings
    replaces the earlier registration.
    """
    root = Path(root) if root is not None else datasets_root() / "shapes"
    specs = {name: shapes_spec(cfg, split) for name, split in SHAPES_DATASETS.items()}
    if comm.is_main_process():
        for spec in specs.values():
            export_shapes_coco(root, spec)
    comm.synchronize()
    paths = {}
    for name, spec in specs.items():
        json_file, image_root = export_shapes_coco(root, spec)  # already there: only reads the JSON
        if name in DatasetCatalog and MetadataCatalog.get(name).get("json_file") != str(json_file):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, {"thing_classes": list(SHAPE_CLASSES)}, str(json_file), str(image_root))
        paths[name] = json_file
    return paths


def check_dataset_files(names) -> None:
    """FileNotFoundError, saying where detectron2 looks, for a registered data set whose files are missing."""
    for name in names:
        meta = MetadataCatalog.get(name)
        for key in ("json_file", "image_root"):
            path = meta.get(key)
            if path is not None and "://" not in str(path) and not os.path.exists(path):
                raise FileNotFoundError(
                    f"data set {name!r}: {key} {path!r} does not exist. detectron2 looks under "
                    f"$DETECTRON2_DATASETS (now {str(datasets_root())!r}); for COCO 2017 it expects "
                    "coco/annotations/instances_{train,val}2017.json and coco/{train,val}2017/ there."
                )
