"""The 3D-AFF-ResNet(-FPN) backbones in detectron2, its options, the shapes data set and train_net."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
pytestmark = pytest.mark.detectron2

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances
from torch import nn

from detectron2_ext.backbone import build_aff3d_resnet_backbone, build_aff3d_resnet_fpn_backbone
from detectron2_ext.blocks import AFF3DBasicBlock, AFF3DBottleneckBlock
from detectron2_ext.config import add_aff3d_config, add_pretrain_config, add_shapes_config
from torch_impl.attention import AFF3D, SE

STAGES = ["res2", "res3", "res4", "res5"]


def make_cfg(*opts):
    cfg = get_cfg()
    add_aff3d_config(cfg)
    add_shapes_config(cfg)
    add_pretrain_config(cfg)
    cfg.merge_from_list(["MODEL.RESNETS.OUT_FEATURES", STAGES, "MODEL.FPN.IN_FEATURES", STAGES, *opts])
    return cfg


def build(cfg, fpn=True):
    torch.manual_seed(0)
    builder = build_aff3d_resnet_fpn_backbone if fpn else build_aff3d_resnet_backbone
    return builder(cfg, ShapeSpec(channels=3))


def blocks(resnet):
    return [b for stage in resnet.stages for b in stage]


def test_builders_are_registered():
    assert BACKBONE_REGISTRY.get("build_aff3d_resnet_backbone") is build_aff3d_resnet_backbone
    assert BACKBONE_REGISTRY.get("build_aff3d_resnet_fpn_backbone") is build_aff3d_resnet_fpn_backbone


@pytest.mark.parametrize(
    "fpn, opts",
    [
        (True, []),  # FrozenBN, FREEZE_AT 2, stride in 1x1 (detectron2's defaults)
        (True, ["MODEL.RESNETS.STRIDE_IN_1X1", False, "MODEL.BACKBONE.FREEZE_AT", 0]),
        (False, ["MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.RES5_DILATION", 2, "MODEL.BACKBONE.FREEZE_AT", 3]),
        (False, ["MODEL.RESNETS.NORM", "SyncBN", "MODEL.BACKBONE.FREEZE_AT", 5]),
        (False, ["MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.NUM_GROUPS", 32, "MODEL.RESNETS.WIDTH_PER_GROUP", 4]),
    ],
    ids=["FPN-defaults", "FPN-stride3x3-unfrozen", "GN-dilation-freeze3", "SyncBN-freeze5", "BN-ResNeXt"],
)
def test_without_attention_it_is_detectron2s_backbone(fpn, opts):
    """ATTENTION none reproduces detectron2's own builders: keys, shapes, types, frozen params, outputs."""
    cfg = make_cfg("MODEL.AFF3D.ATTENTION", "none", *opts)
    reference = build_resnet_fpn_backbone if fpn else build_resnet_backbone
    ours, theirs = build(cfg, fpn), reference(cfg, ShapeSpec(channels=3))
    s_ours, s_theirs = ours.state_dict(), theirs.state_dict()
    assert list(s_ours) == list(s_theirs)
    assert all(s_ours[k].shape == s_theirs[k].shape for k in s_ours)
    assert [type(m) for m in ours.modules() if not isinstance(m, AFF3DBottleneckBlock)] == [
        type(m) for m in theirs.modules() if type(m).__name__ != "BottleneckBlock"
    ]
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad) for n, p in theirs.named_parameters()
    ]
    assert ours.output_shape() == theirs.output_shape()
    ours.load_state_dict(s_theirs)
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out_ours, out_theirs = ours(x), theirs(x)
    for name in out_theirs:
        torch.testing.assert_close(out_ours[name], out_theirs[name], rtol=0, atol=0)


def test_every_block_carries_3d_aff_with_the_configured_switches():
    cfg = make_cfg("MODEL.AFF3D.KERNEL_SIZE", 5, "MODEL.AFF3D.REDUCTION", 8, "MODEL.AFF3D.DESIGN", "aff3d_sum")
    resnet = build(cfg, fpn=False)
    all_blocks = blocks(resnet)
    assert len(all_blocks) == 16
    for block in all_blocks:
        assert isinstance(block, AFF3DBottleneckBlock) and isinstance(block.attn, AFF3D)
        design = block.attn.design
        assert (design.kernel_size, design.reduction, design.merge) == (5, 8, "sum")
        assert block.attn.channels == block.out_channels
        assert block.attn.spatial.conv.kernel_size == (5, 5)
        assert block.attn.fex.conv1.out_channels == block.out_channels // 8


def test_se_is_torch_impls_se():
    resnet = build(make_cfg("MODEL.AFF3D.ATTENTION", "se", "MODEL.AFF3D.REDUCTION", 16), fpn=False)
    for block in blocks(resnet):
        assert type(block.attn) is SE
        assert block.attn.fc1.out_channels == block.out_channels // 16


CONFIGS = Path(__file__).resolve().parents[1] / "detectron2_ext" / "configs"
# the paper's five backbones (Tables 8 and 9): config name -> torch_impl's ImageNet network
PAPER_BACKBONES = {
    "R_50": "resnet50",
    "SE_R_50": "se_resnet50",
    "CBAM_R_50": "cbam_resnet50",
    "ECA_R_50": "eca_resnet50",
    "AFF3D_R_50": "aff3d_resnet50",
}
_CONV_SETTINGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def _attention_layout(attn: nn.Module | None) -> dict:
    """What makes two attention layers the same layer: class, sub-module names, every convolution's
    settings and bias, every tensor's shape (norm classes aside: detectron2 swaps the BN layers for its own)."""
    if attn is None:
        return {}
    convs = {
        n: ({k: getattr(m, k) for k in _CONV_SETTINGS}, m.bias is not None)
        for n, m in attn.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d))
    }
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items() if not k.endswith("num_batches_tracked")}
    design = getattr(attn, "design", None)  # 3D-AFF: its switches (d, k, merge, ...) as a dataclass
    return {"class": type(attn), "convs": convs, "shapes": shapes, "design": design}


@pytest.mark.parametrize("task", ["COCO-Detection/faster_rcnn", "COCO-InstanceSegmentation/mask_rcnn"])
@pytest.mark.parametrize("config_name, network", list(PAPER_BACKBONES.items()))
def test_paper_configs_build_torch_impls_attention_in_every_block(task, config_name, network):
    """The detection backbone of each config carries, block for block, the attention of torch_impl's
    ImageNet network that its weights come from: same class, reduction, kernel sizes, tensor shapes."""
    from torch_impl import create_model

    cfg = make_cfg()
    cfg.merge_from_file(str(CONFIGS / f"{task}_{config_name}_FPN_1x.yaml"))
    ours = build(cfg).bottom_up
    net = create_model(network)
    theirs = [net.layer1, net.layer2, net.layer3, net.layer4]
    for stage, layer in zip(ours.stages, theirs):
        assert len(stage) == len(layer)
        for block, reference in zip(stage, layer):
            assert _attention_layout(block.attn) == _attention_layout(getattr(reference, "attn", None))
    attns = [b.attn for b in blocks(ours)]
    if network == "resnet50":
        assert attns == [None] * 16
    else:  # the ImageNet reduction (16) where the attention has one; ECA's kernel follows C (3 / 5 / 7)
        expected = {"se_resnet50": "fc1", "cbam_resnet50": "fc1", "aff3d_resnet50": "fex.conv1"}.get(network)
        for a in attns:
            if expected:
                assert a.get_submodule(expected).out_channels == a.channels // 16
        if network == "eca_resnet50":
            assert [a.conv.kernel_size[0] for a in attns[::5]] == [5, 5, 5, 7]  # C = 256, 512, 1024, 2048
        if network == "cbam_resnet50":
            assert all(a.spatial_conv.kernel_size == (7, 7) for a in attns)
        if network == "aff3d_resnet50":
            assert all(a.spatial.conv.kernel_size == (3, 3) for a in attns)


@pytest.mark.parametrize(
    "norm, attn_norm, frozen_type, live_type",
    [
        ("FrozenBN", "", FrozenBatchNorm2d, FrozenBatchNorm2d),
        ("BN", "", FrozenBatchNorm2d, nn.BatchNorm2d),
        ("GN", "", nn.GroupNorm, nn.GroupNorm),
        ("FrozenBN", "BN", FrozenBatchNorm2d, nn.BatchNorm2d),
    ],
)
def test_attention_norms_follow_the_backbone_and_freeze_with_it(norm, attn_norm, frozen_type, live_type):
    """FREEZE_AT 2 freezes stem and res2, attention included; res3-res5 attention uses the norm."""
    cfg = make_cfg("MODEL.RESNETS.NORM", norm, "MODEL.AFF3D.NORM", attn_norm, "MODEL.BACKBONE.FREEZE_AT", 2)
    resnet = build(cfg, fpn=False)
    for stage in resnet.stages:
        frozen = stage is resnet.res2
        for block in stage:
            norms = [block.attn.spatial.bn, block.attn.fex.bn1, block.attn.fex.bn2]
            assert all(type(n) is (frozen_type if frozen else live_type) for n in norms), [type(n) for n in norms]
            assert all(p.requires_grad is not frozen for p in block.attn.parameters())
    if norm == "GN":  # a single-channel map and C/d channels: gcd(32, C) groups
        block = resnet.res3[0]
        assert block.attn.spatial.bn.num_groups == 1 and block.attn.fex.bn1.num_groups == 32


def test_res5_dilation_and_stride_in_1x1():
    cfg = make_cfg("MODEL.RESNETS.RES5_DILATION", 2, "MODEL.RESNETS.STRIDE_IN_1X1", True)
    resnet = build(cfg, fpn=False)
    assert {k: v.stride for k, v in resnet.output_shape().items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 16}
    assert resnet.res5[0].conv2.dilation == (2, 2)
    assert resnet.res3[0].conv1.stride == (2, 2) and resnet.res3[0].conv2.stride == (1, 1)
    with torch.no_grad():
        out = resnet.eval()(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 2048, 4, 4)


def test_resnet18_uses_basic_blocks_with_attention():
    cfg = make_cfg("MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.AFF3D.ATTENTION", "aff3d")
    resnet = build(cfg, fpn=False)
    assert all(isinstance(b, AFF3DBasicBlock) and isinstance(b.attn, AFF3D) for b in blocks(resnet))
    assert resnet.output_shape()["res5"].channels == 512


def test_gradients_reach_the_attention():
    cfg = make_cfg(
        "MODEL.RESNETS.NORM",
        "BN",
        "MODEL.BACKBONE.FREEZE_AT",
        0,
        "MODEL.RESNETS.DEPTH",
        18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        64,
    )
    fpn = build(cfg).train()
    sum(f.square().mean() for f in fpn(torch.randn(2, 3, 64, 64)).values()).backward()
    for block in blocks(fpn.bottom_up):
        assert block.attn.spatial.conv.weight.grad.abs().sum() > 0
        assert block.attn.fex.conv2.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "opts, match",
    [
        (["MODEL.AFF3D.ATTENTION", "bam"], "MODEL.AFF3D.ATTENTION"),
        (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True]], "DEFORM_ON_PER_STAGE"),
        (["MODEL.RESNETS.RES5_DILATION", 4], "RES5_DILATION"),
        (["MODEL.RESNETS.DEPTH", 34], "RES2_OUT_CHANNELS"),
        (["MODEL.RESNETS.DEPTH", 42], "DEPTH"),
        (["MODEL.AFF3D.DESIGN", "nonsense"], "nonsense"),
        (["MODEL.AFF3D.NORM", "XN"], "XN"),
    ],
)
def test_bad_options_are_value_errors(opts, match):
    with pytest.raises((ValueError, KeyError), match=match):
        build(make_cfg(*opts), fpn=False)


# ----------------------------------------------------------------------------- data and evaluation


def test_shapes_register_and_evaluate_ground_truth_at_ap_100(tmp_path):
    """shapes_val through detectron2's loader and COCOEvaluator: GT as predictions scores AP 100."""
    from detectron2_ext.data_catalog import register_shapes

    cfg = make_cfg("DATASETS.SHAPES.NUM_TRAIN", 2, "DATASETS.SHAPES.NUM_VAL", 3, "DATASETS.SHAPES.IMAGE_SIZE", 64)
    paths = register_shapes(cfg, root=tmp_path)
    assert set(paths) == {"shapes_train", "shapes_val"}
    dicts = DatasetCatalog.get("shapes_val")
    assert len(dicts) == 3 and MetadataCatalog.get("shapes_val").evaluator_type == "coco"
    assert MetadataCatalog.get("shapes_val").thing_classes[0] == "circle"

    evaluator = COCOEvaluator("shapes_val", tasks=("bbox", "segm"), output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for record in dicts:
        anns = record["annotations"]
        inst = Instances((record["height"], record["width"]))
        inst.pred_boxes = Boxes(
            torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns])
        )
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns])  # contiguous 0-based ids
        polygons = [a["segmentation"] for a in anns]
        inst.pred_masks = BitMasks.from_polygon_masks(polygons, record["height"], record["width"]).tensor
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": inst}])
    results = evaluator.evaluate()
    for task in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results[task])
        assert results[task]["AP"] == pytest.approx(100.0)


def test_coco_2017_is_detectron2s_registration_and_missing_files_are_named(tmp_path):
    from detectron2_ext.data_catalog import check_dataset_files

    assert MetadataCatalog.get("coco_2017_train").json_file.endswith("coco/annotations/instances_train2017.json")
    assert MetadataCatalog.get("coco_2017_val").image_root.endswith("coco/val2017")
    MetadataCatalog.get("missing_set").set(json_file=str(tmp_path / "none.json"), image_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing_set.*DETECTRON2_DATASETS"):
        check_dataset_files(["missing_set"])
    MetadataCatalog.remove("missing_set")


def test_train_net_trains_reports_box_and_mask_ap_and_repeats_bit_for_bit(tmp_path, monkeypatch):
    """train_net.py end to end on the smoke config, shrunk to 2 iterations on 64 px images, twice."""
    from pathlib import Path

    from detectron2.engine import default_argument_parser

    from detectron2_ext import train_net

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    config = Path(__file__).parents[1] / "detectron2_ext/configs/smoke/mask_rcnn_AFF3D_R_50_FPN_shapes.yaml"
    opts = {
        "SOLVER.MAX_ITER": 2,
        "SOLVER.IMS_PER_BATCH": 2,
        "DATASETS.SHAPES.NUM_TRAIN": 4,
        "DATASETS.SHAPES.NUM_VAL": 2,
        "DATASETS.SHAPES.IMAGE_SIZE": 64,
        "INPUT.MIN_SIZE_TRAIN": "(64,)",
        "INPUT.MAX_SIZE_TRAIN": 64,
        "INPUT.MIN_SIZE_TEST": 64,
        "INPUT.MAX_SIZE_TEST": 64,
    }
    for run in ("a", "b"):
        argv = ["--config-file", str(config), *[str(x) for kv in opts.items() for x in kv]]
        train_net.main(default_argument_parser().parse_args([*argv, "OUTPUT_DIR", str(tmp_path / run)]))
    # the evaluation at the end of training lands in metrics.json, as bbox/AP, segm/AP50, ...
    metrics = {}
    for line in (tmp_path / "a" / "metrics.json").read_text().splitlines():
        metrics.update(json.loads(line))
    for task in ("bbox", "segm"):
        assert {f"{task}/{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")} <= set(metrics)
    assert (tmp_path / "datasets" / "shapes" / "val_s64_n2_seed0_obj1-4" / "annotations.json").is_file()
    # SEED 0 in the config: a CPU run repeats bit for bit
    a, b = (torch.load(tmp_path / run / "model_final.pth", weights_only=False)["model"] for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
