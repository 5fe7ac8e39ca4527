"""The shapes -> COCO export (no detectron2 needed): files, annotations, pycocotools validity."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2_ext import shapes_coco
from detectron2_ext.shapes_coco import ShapesCOCOSpec, export_shapes_coco
from torch_impl.data.shapes import SHAPE_CLASSES, render_scene

SPEC = ShapesCOCOSpec("train", num_images=5, size=64, seed=3, min_objects=2, max_objects=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    json_path, image_dir = export_shapes_coco(root, SPEC)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(json_path))
    return root, json_path, image_dir, coco


def test_layout_names_the_settings(exported):
    root, json_path, image_dir, _ = exported
    assert json_path == root / "train_s64_n5_seed3_obj2-3" / "annotations.json"
    assert sorted(p.name for p in image_dir.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert [p.name for p in root.iterdir()] == ["train_s64_n5_seed3_obj2-3"]  # no temporary left


def test_images_are_the_rendered_scenes(exported):
    _, _, image_dir, coco = exported
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5]
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        scene = render_scene(3, image_id - 1, 64, 2, 3)
        pixels = np.asarray(Image.open(image_dir / info["file_name"]))
        np.testing.assert_array_equal(pixels, scene.image)  # PNG is lossless
        assert (info["height"], info["width"]) == (64, 64)


def test_annotations_match_the_scenes(exported):
    _, _, _, coco = exported
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_CLASSES)
    assert coco.getCatIds() == list(range(1, len(SHAPE_CLASSES) + 1))
    n_objects = 0
    for image_id in coco.getImgIds():
        scene = render_scene(3, image_id - 1, 64, 2, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(scene.objects) >= 2
        for ann, obj in zip(anns, scene.objects):
            n_objects += 1
            assert ann["category_id"] == obj.label + 1 and ann["iscrowd"] == 0
            np.testing.assert_allclose(ann["bbox"], obj.bbox, atol=1e-3)
            np.testing.assert_allclose(ann["segmentation"][0], obj.polygon.reshape(-1), atol=1e-3)
            assert ann["area"] == obj.mask.sum() > 0
            # pycocotools rasterises the polygon itself: it must cover the rendered mask
            decoded = coco.annToMask(ann).astype(bool)
            iou = (decoded & obj.mask).sum() / (decoded | obj.mask).sum()
            assert iou > 0.85, (ann["id"], iou)
            x, _, w, _ = mask_utils.toBbox(coco.annToRLE(ann))
            assert abs(x - ann["bbox"][0]) <= 1 and abs(w - ann["bbox"][2]) <= 2
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert sorted(ids) == list(range(1, n_objects + 1))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ground_truth_scores_ap_one_under_cocoeval(exported, iou_type):
    """The file works end to end in pycocotools' evaluation: GT as detections gives AP = 1."""
    _, _, _, coco = exported
    detections = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 1.0,
            **({"bbox": a["bbox"]} if iou_type == "bbox" else {"segmentation": coco.annToRLE(a)}),
        }
        for a in coco.dataset["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        result = coco.loadRes(detections)
        ev = COCOeval(coco, result, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    assert ev.stats[1] == pytest.approx(1.0)  # AP50


def test_export_is_reused_and_val_differs(exported):
    root, json_path, _, _ = exported
    before = json_path.stat().st_mtime_ns
    assert export_shapes_coco(root, SPEC)[0] == json_path
    assert json_path.stat().st_mtime_ns == before  # not rendered again
    val_json, val_dir = export_shapes_coco(root, ShapesCOCOSpec("val", 2, 64, 3, 2, 3))
    assert val_json.parent.name == "val_s64_n2_seed3_obj2-3"
    train_img = np.asarray(Image.open(json_path.parent / "images" / "000000.png"))
    val_img = np.asarray(Image.open(val_dir / "000000.png"))
    assert not np.array_equal(train_img, val_img)
    val_info = json.loads(val_json.read_text())["info"]["spec"]
    assert val_info["split"] == "val" and val_info["num_images"] == 2


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_render(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args)
        return render_scene(*args)

    monkeypatch.setattr(shapes_coco, "render_scene", failing_render)
    with pytest.raises(KeyboardInterrupt):
        export_shapes_coco(tmp_path, SPEC)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"split": "test"}, "split"), ({"num_images": 0}, "num_images"), ({"size": -1}, "size"), ({"seed": 1.5}, "seed")],
)
def test_bad_spec_is_a_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesCOCOSpec(**kwargs)


def test_command_line(tmp_path, capsys):
    assert shapes_coco.main([str(tmp_path), "--split", "val", "--num-images", "2", "--size", "32"]) == 0
    assert "2 images" in capsys.readouterr().out
    assert (tmp_path / "val_s32_n2_seed0_obj1-4" / "annotations.json").is_file()
