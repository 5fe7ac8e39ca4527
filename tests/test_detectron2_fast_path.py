"""detectron2's 3D-AFF backbones run the fast path: FrozenBN (the COCO configs) folds like inference
BN, BN (the smoke configs) trains with the fused tail; GN and SyncBN in training are said."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
pytestmark = pytest.mark.detectron2

import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone
from torch import nn

import detectron2_ext.backbone  # noqa: F401  (registers the 3D-AFF backbone builders)
from detectron2_ext.config import add_aff3d_config, add_pretrain_config, add_shapes_config
from torch_impl.attention import AFF3D
from torch_impl.attention import aff3d_fast

CONFIGS = Path(__file__).resolve().parents[1] / "detectron2_ext" / "configs"
AFF3D_CONFIGS = [
    "COCO-Detection/faster_rcnn_AFF3D_R_50_FPN_1x.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_AFF3D_R_50_FPN_1x.yaml",
    "smoke/faster_rcnn_AFF3D_R_50_FPN_shapes.yaml",
    "smoke/mask_rcnn_AFF3D_R_50_FPN_shapes.yaml",
]


def _backbone(path: str, *opts):
    cfg = get_cfg()
    add_aff3d_config(cfg)
    add_shapes_config(cfg)
    add_pretrain_config(cfg)
    cfg.merge_from_file(str(CONFIGS / path))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    return build_backbone(cfg)


def _record_routes(monkeypatch) -> list:
    routes = []
    choose = aff3d_fast.choose_route

    def recording(*args, **kwargs):
        routes.append(choose(*args, **kwargs))
        return routes[-1]

    monkeypatch.setattr(aff3d_fast, "choose_route", recording)
    return routes


@pytest.mark.parametrize("path", AFF3D_CONFIGS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_configs_run_the_fast_path(path, train, monkeypatch):
    backbone = _backbone(path).train(train)
    attns = [m for m in backbone.modules() if isinstance(m, AFF3D)]
    norms = {type(m.spatial.bn) for m in attns}
    assert norms == ({FrozenBatchNorm2d} if path.startswith("COCO") else {nn.BatchNorm2d})
    routes = _record_routes(monkeypatch)
    x = torch.randn(2, 3, 64, 64)
    with torch.set_grad_enabled(train):
        out = backbone(x)
    assert len(routes) == len(attns) > 0
    names = {r.name for r in routes}
    # training: the autograd route (NCHW), and folded in frozen stages (weights and input need no gradient)
    assert names <= ({"autograd", "folded"} if train else {"folded"}), routes
    if train:
        assert "autograd" in names
        sum(o.square().mean() for o in out.values()).backward()


@pytest.mark.parametrize("path", [AFF3D_CONFIGS[0], AFF3D_CONFIGS[2]], ids=["coco", "smoke"])
def test_fast_and_straightforward_backbones_agree(path):
    fast = _backbone(path).double()
    with torch.no_grad():  # non-trivial frozen statistics in every attention norm
        g = torch.Generator().manual_seed(1)
        for m in fast.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)) and m.weight.shape[0] < 2048:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g, dtype=torch.float64) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
    straight = copy.deepcopy(fast)
    for m in straight.modules():
        if isinstance(m, AFF3D):
            m.impl = "straightforward"
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for train in (False, True):
        fast.train(train), straight.train(train)
        a, b = fast(x), straight(x)
        assert max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in a) < 1e-10


def test_group_norm_takes_the_straightforward_path_and_says_why(monkeypatch):
    backbone = _backbone(AFF3D_CONFIGS[2], "MODEL.AFF3D.NORM", "GN").eval()
    routes = _record_routes(monkeypatch)
    with pytest.warns(UserWarning, match="straightforward path: GroupNorm normalises each sample"), torch.no_grad():
        backbone(torch.randn(2, 3, 64, 64))
    assert routes and all(r.name == "straightforward" for r in routes)


@pytest.mark.parametrize("norm", ["SyncBN", "naiveSyncBN"])
def test_sync_bn_folds_in_eval_and_is_said_in_training(norm):
    """One process has no process group to train SyncBN with: the route is what is checked."""
    backbone = _backbone(AFF3D_CONFIGS[2], "MODEL.AFF3D.NORM", norm)
    m = next(m for m in backbone.modules() if isinstance(m, AFF3D))
    U = torch.randn(2, m.channels, 4, 4)
    with torch.no_grad():
        assert aff3d_fast.choose_route(m.eval(), U, U).name == "folded"
        route = aff3d_fast.choose_route(m.train(), U, U)
    assert route.name == "straightforward" and "across processes" in route.reason
