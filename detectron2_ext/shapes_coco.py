"""The built-in shapes data as a COCO instance-segmentation data set: JSON annotations + PNG files.

    python -m detectron2_ext.shapes_coco datasets/shapes --split train --num-images 1000 --size 128

writes ``<root>/<name>/annotations.json`` and ``<root>/<name>/images/000000.png`` ..., where
``name`` spells out the settings (e.g. ``train_s128_n1000_seed0_obj1-4``), so each setting is
rendered once and never mixed up with another. Scenes come from
``torch_impl.data.shapes.render_scene(seed, index, size)``; train and val use disjoint indices.

Each object becomes a COCO annotation: ``segmentation`` is its polygon (flattened x, y pixel
coordinates), ``bbox`` the polygon's [x, y, w, h], ``area`` its mask's pixel count (shapes never
overlap, so the mask is the whole polygon), ``iscrowd`` 0; category ids are 1-based, in the order
of ``SHAPE_CLASSES``. The files load with pycocotools and with detectron2's ``load_coco_json``.
No detectron2 is needed here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from torch_impl.data.shapes import SHAPE_CLASSES, render_scene

SPLITS = ("train", "val")
# Validation scenes are drawn from indices >= this offset, so they never repeat a training scene.
VAL_INDEX_OFFSET = 2**30
FORMAT_VERSION = 1  # bump when the export changes, so old exports are re-rendered


@dataclass(frozen=True)
class ShapesCOCOSpec:
    """What to render: ``num_images`` scenes of ``size`` x ``size`` pixels for ``split``."""

    split: str = "train"
    num_images: int = 1000
    size: int = 128
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 4

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {self.split!r}")
        for name in ("num_images", "size", "seed", "min_objects", "max_objects"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if self.num_images < 1:
            raise ValueError(f"num_images: expected at least 1, got {self.num_images}")

    @property
    def name(self) -> str:
        """The directory name: every setting that changes the pixels."""
        return f"{self.split}_s{self.size}_n{self.num_images}_seed{self.seed}_obj{self.min_objects}-{self.max_objects}"

    def scene_index(self, i: int) -> int:
        return i + (VAL_INDEX_OFFSET if self.split == "val" else 0)


def categories() -> list[dict]:
    """COCO categories: ids 1..len(SHAPE_CLASSES) in SHAPE_CLASSES order."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)]


def coco_dict(spec: ShapesCOCOSpec, write_image=None) -> dict:
    """The COCO annotation dict for ``spec``; ``write_image(file_name, image)`` receives each image."""
    images, annotations = [], []
    for i in range(spec.num_images):
        scene = render_scene(spec.seed, spec.scene_index(i), spec.size, spec.min_objects, spec.max_objects)
        height, width = scene.image.shape[:2]
        file_name = f"{i:06d}.png"
        if write_image is not None:
            write_image(file_name, scene.image)
        image_id = i + 1  # COCO ids start at 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for obj in scene.objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj.label + 1,
                    "segmentation": [[round(float(v), 3) for v in obj.polygon.reshape(-1)]],
                    "area": float(obj.mask.sum()),
                    "bbox": [round(float(v), 3) for v in obj.bbox],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": "aff3d-resnet built-in shapes (torch_impl.data.shapes.render_scene)",
            "version": FORMAT_VERSION,
            "spec": asdict(spec),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(),
    }


def export_shapes_coco(root: str | Path, spec: ShapesCOCOSpec) -> tuple[Path, Path]:
    """Render ``spec`` under ``root`` once; return ``(annotations.json, image directory)``.

    An existing export with the same settings is reused. A new one is written into a temporary
    directory and renamed into place, so an interrupted export never leaves a partial data set.
    """
    root = Path(root)
    target = root / spec.name
    json_path, image_dir = target / "annotations.json", target / "images"
    if json_path.is_file():
        info = json.loads(json_path.read_text()).get("info", {})
        if info.get("version") == FORMAT_VERSION and info.get("spec") == asdict(spec):
            return json_path, image_dir
        shutil.rmtree(target)  # an older format: render again
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.name}."))
    try:
        (tmp / "images").mkdir()
        data = coco_dict(spec, lambda name, image: Image.fromarray(image).save(tmp / "images" / name))
        (tmp / "annotations.json").write_text(json.dumps(data))
        try:
            os.rename(tmp, target)
        except OSError:
            if not json_path.is_file():  # not another process finishing the same export first
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json_path, image_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the built-in shapes data to COCO format.")
    parser.add_argument("root", help="output directory, e.g. datasets/shapes")
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=4)
    args = parser.parse_args(argv)
    spec = ShapesCOCOSpec(args.split, args.num_images, args.size, args.seed, args.min_objects, args.max_objects)
    json_path, image_dir = export_shapes_coco(args.root, spec)
    data = json.loads(json_path.read_text())
    print(f"{json_path}: {len(data['images'])} images in {image_dir}, {len(data['annotations'])} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
