"""The detectron2 configs: bases, the paper's schedule, agreement with the converter.

Read with a small ``_BASE_``-following YAML loader (detectron2's rules: a base path is relative to
the file, the child's keys override, strings are literals where yacs would parse them), so it runs
without detectron2; with detectron2, every file must also merge into its real config.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import yaml

from detectron2_ext import convert_checkpoint as cc

CONFIGS = Path(__file__).resolve().parents[1] / "detectron2_ext" / "configs"
BASE = CONFIGS / "Base-AFF3D-RCNN-FPN.yaml"
SMOKE_BASE = CONFIGS / "smoke" / "Base-Shapes-Smoke.yaml"
PAPER_CONFIGS = sorted((CONFIGS / "COCO-Detection").glob("*.yaml")) + sorted(
    (CONFIGS / "COCO-InstanceSegmentation").glob("*.yaml")
)
SMOKE_CONFIGS = sorted(p for p in (CONFIGS / "smoke").glob("*.yaml") if p != SMOKE_BASE)
ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))

COCO_TRAIN_IMAGES = 117_266  # train2017 images with annotations (detectron2 and MMDetection drop the rest)
# the five backbones of the paper's Tables 8 and 9
ATTENTION_OF = {"R_50": "none", "SE_R_50": "se", "CBAM_R_50": "cbam", "ECA_R_50": "eca", "AFF3D_R_50": "aff3d"}
WEIGHTS_OF = {"none": "resnet50", **{a: f"{a}_resnet50" for a in ("se", "cbam", "eca", "aff3d")}}


def _literal(value):
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: Path) -> tuple[dict, list[Path]]:
    """(merged config, chain of files from the most basic to ``path``)."""
    data = yaml.safe_load(path.read_text()) or {}
    base = data.pop("_BASE_", None)
    if base is None:
        merged, chain = {}, []
    else:
        merged, chain = load_config((path.parent / base).resolve())
    return _merge(merged, data), [*chain, path]


def get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return _literal(node)


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _literal(value)
    return out


def test_the_expected_configs_exist():
    names = {p.relative_to(CONFIGS).as_posix() for p in ALL_CONFIGS}
    for task, arch in (("COCO-Detection", "faster_rcnn"), ("COCO-InstanceSegmentation", "mask_rcnn")):
        for backbone in ATTENTION_OF:
            assert f"{task}/{arch}_{backbone}_FPN_1x.yaml" in names
    assert {"smoke/mask_rcnn_AFF3D_R_50_FPN_shapes.yaml", "smoke/faster_rcnn_AFF3D_R_50_FPN_shapes.yaml"} <= names


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_chain_and_switches(path):
    config, chain = load_config(path)
    assert chain == [BASE, path]
    stem = path.stem.removeprefix("faster_rcnn_").removeprefix("mask_rcnn_").removesuffix("_FPN_1x")
    attention = ATTENTION_OF[stem]
    assert get(config, "MODEL.AFF3D.ATTENTION") == attention
    assert get(config, "MODEL.MASK_ON") is (path.parent.name == "COCO-InstanceSegmentation")
    assert get(config, "MODEL.WEIGHTS") == f"weights/{WEIGHTS_OF[attention]}.d2.pth"
    assert get(config, "MODEL.BACKBONE.NAME") == "build_aff3d_resnet_fpn_backbone"
    assert get(config, "MODEL.RESNETS.DEPTH") == 50
    assert get(config, "DATASETS.TRAIN") == ("coco_2017_train",)
    assert get(config, "DATASETS.TEST") == ("coco_2017_val",)


def test_base_is_the_papers_schedule():
    """Section 4.1: 12 epochs, lr x0.1 at epochs 8 and 11, lr 0.005 at batch 4, SGD 0.9, wd 1e-4, 800 px."""
    config, _ = load_config(BASE)
    batch = get(config, "SOLVER.IMS_PER_BATCH")
    assert batch == 4 and get(config, "SOLVER.REFERENCE_WORLD_SIZE") == 2  # 2 GPUs x 2 images
    epoch = math.ceil(COCO_TRAIN_IMAGES / batch)
    assert get(config, "SOLVER.MAX_ITER") == 12 * epoch
    assert get(config, "SOLVER.STEPS") == (8 * epoch, 11 * epoch)
    assert get(config, "SOLVER.BASE_LR") == 0.005
    assert get(config, "SOLVER.GAMMA") == 0.1
    assert get(config, "SOLVER.MOMENTUM") == 0.9
    assert get(config, "SOLVER.WEIGHT_DECAY") == 1e-4
    assert get(config, "INPUT.MIN_SIZE_TRAIN") == (800,)
    assert get(config, "INPUT.MIN_SIZE_TEST") == 800


@pytest.mark.parametrize("path", PAPER_CONFIGS + SMOKE_CONFIGS, ids=lambda p: p.stem)
def test_configs_match_the_converters_conventions(path):
    config, _ = load_config(path)
    for key, value in cc.REQUIRED_CONFIG.items():
        got = get(config, key)
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, key


@pytest.mark.parametrize("path", SMOKE_CONFIGS, ids=lambda p: p.stem)
def test_smoke_configs_train_on_shapes_on_a_cpu(path):
    config, chain = load_config(path)
    assert chain == [BASE, SMOKE_BASE, path]
    assert get(config, "MODEL.DEVICE") == "cpu"
    assert get(config, "MODEL.WEIGHTS") == ""
    assert get(config, "DATASETS.TRAIN") == ("shapes_train",) and get(config, "DATASETS.TEST") == ("shapes_val",)
    assert get(config, "MODEL.ROI_HEADS.NUM_CLASSES") == 8
    assert get(config, "MODEL.MASK_ON") is path.stem.startswith("mask_rcnn")
    assert get(config, "MODEL.AFF3D.ATTENTION") == "aff3d"
    assert get(config, "SOLVER.MAX_ITER") <= 2000


# ----------------------------------------------------------------------------- with detectron2


@pytest.fixture(scope="module")
def d2_config():
    pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
    from detectron2.config import get_cfg

    from detectron2_ext.config import add_aff3d_config, add_pretrain_config, add_shapes_config

    def make(path: Path):
        cfg = get_cfg()
        add_aff3d_config(cfg)
        add_shapes_config(cfg)
        add_pretrain_config(cfg)
        cfg.merge_from_file(str(path))  # KeyError for a key detectron2 does not know
        return cfg

    return make


@pytest.mark.detectron2
@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_detectron2_reads_every_config_as_we_do(d2_config, path):
    cfg = d2_config(path)
    for key, value in _flatten(load_config(path)[0]).items():
        got = get(cfg, key)
        if isinstance(value, (list, tuple)):
            got, value = _nested_lists(got), _nested_lists(value)
        assert got == value, key


def _nested_lists(x):
    return [_nested_lists(v) for v in x] if isinstance(x, (list, tuple)) else x


@pytest.mark.detectron2
def test_linear_scaling_to_8_gpus_as_the_base_comment_says(d2_config):
    from detectron2.engine import DefaultTrainer

    cfg = DefaultTrainer.auto_scale_workers(d2_config(BASE), 8)
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.02)
    assert cfg.SOLVER.MAX_ITER == 87951
    assert tuple(cfg.SOLVER.STEPS) == (58634, 80622)


class _Node(dict):
    """A stand-in for yacs' CfgNode: attribute access over a dict."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def test_add_config_functions_need_no_detectron2():
    from detectron2_ext.config import add_aff3d_config, add_pretrain_config, add_shapes_config, attention_choices

    cfg = _Node(MODEL=_Node(), DATASETS=_Node())
    add_aff3d_config(cfg)
    add_shapes_config(cfg)
    add_pretrain_config(cfg)
    assert type(cfg.MODEL.AFF3D) is _Node and type(cfg.DATASETS.SHAPES) is _Node
    assert dict(cfg.MODEL.AFF3D) == {
        "ATTENTION": "aff3d",
        "DESIGN": "aff3d",
        "KERNEL_SIZE": 3,
        "REDUCTION": 16,
        "NORM": "",
    }
    assert attention_choices() == ["none", "se", "cbam", "eca", "aff3d"]
    # every key a config file sets under MODEL.AFF3D / DATASETS.SHAPES exists in the defaults
    for path in ALL_CONFIGS:
        config, _ = load_config(path)
        assert set(config.get("MODEL", {}).get("AFF3D", {})) <= set(cfg.MODEL.AFF3D), path
        assert set(config.get("DATASETS", {}).get("SHAPES", {})) <= set(cfg.DATASETS.SHAPES), path


def test_package_imports_without_detectron2(monkeypatch):
    """CI has no detectron2: the package imports, and its detectron2 parts say what is missing."""
    import importlib
    import sys

    # a fresh import of the package in a world where ``import detectron2`` fails
    for name in list(sys.modules):
        if name.split(".")[0] in ("detectron2", "detectron2_ext"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "detectron2", None)
    package = importlib.import_module("detectron2_ext")
    assert callable(package.add_aff3d_config) and callable(package.convert_state_dict)
    assert package.ShapesCOCOSpec().split == "train"
    with pytest.raises(
        ModuleNotFoundError, match="needs detectron2, which is not installed: see detectron2_ext/README.md"
    ):
        _ = package.build_aff3d_resnet_fpn_backbone
