"""The attention registry: one table from which model names, options, defaults and detectron2 derive.

A toy attention is registered in one place (``register_attention``) and must then build as a
ResNet block attention, through ``create_model`` and (with detectron2) the detection backbone;
after ``unregister_attention`` every derived list is back to the built-in five.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detectron2_ext.config import add_aff3d_config, attention_choices, attention_option_defaults
from torch_impl import create_model, list_models
from torch_impl.attention import (
    ATTENTIONS,
    AFF3D,
    create_attention,
    get_attention,
    register_attention,
    unregister_attention,
)
from torch_impl.models import parse_model_name

BUILT_IN = ["none", "se", "cbam", "eca", "aff3d"]


class ToyGate(nn.Module):
    """out = U * sigma(W_2 GAP(U)) * gain with a C -> C/reduction -> C bottleneck: a minimal SE."""

    def __init__(self, channels: int, reduction: int = 2, gain: float = 1.0):
        super().__init__()
        self.channels, self.reduction, self.gain = channels, reduction, gain
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.bn = nn.BatchNorm2d(channels // reduction)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        s = residual.mean(dim=(2, 3), keepdim=True)
        return residual * torch.sigmoid(self.fc2(torch.relu(self.bn(self.fc1(s))))) * self.gain


@pytest.fixture
def toy():
    """Register "toy" for one test (ImageNet d = 8, CIFAR d = 2; detectron2 sees reduction and gain)."""
    spec = register_attention("toy", ToyGate, reduction={"imagenet": 8, "cifar": 2}, detectron2=("reduction", "gain"))
    try:
        yield spec
    finally:
        unregister_attention("toy")


def test_the_table_is_what_the_zoo_and_detectron2_list():
    assert list(ATTENTIONS) == BUILT_IN[1:]
    assert attention_choices() == BUILT_IN
    assert len(list_models()) == 5 * 7
    assert attention_option_defaults() == {"DESIGN": "aff3d", "KERNEL_SIZE": 3, "REDUCTION": 16}
    # options and defaults come from the layers' signatures (AFF3D: plus its design switches)
    assert dict(ATTENTIONS["se"].options) == {"reduction": 16}
    assert dict(ATTENTIONS["cbam"].options) == {"reduction": 16, "kernel_size": 7}
    assert dict(ATTENTIONS["eca"].options) == {"gamma": 2, "b": 1}
    assert {"design", "impl", "kernel_size", "reduction", "merge", "fex_norm"} <= set(ATTENTIONS["aff3d"].options)
    assert ATTENTIONS["aff3d"].layer is AFF3D
    assert ATTENTIONS["aff3d"].defaults("cifar")["reduction"] == 4


def test_a_registered_attention_builds_resnets_with_the_family_defaults(toy):
    assert "toy" in ATTENTIONS and attention_choices() == [*BUILT_IN, "toy"]
    assert {"toy_resnet50", "toy_resnet18", "toy_resnet164_cifar", "toy_resnet20_cifar"} <= set(list_models("toy_*"))
    assert len(list_models()) == 6 * 7
    assert parse_model_name("toy_resnet20_cifar").attention == "toy"
    with torch.device("meta"):
        r50 = create_model("toy_resnet50")
        r20 = create_model("toy_resnet20_cifar", gain=0.5)
    assert isinstance(r50.layer4[0].attn, ToyGate)
    assert r50.layer4[0].attn.reduction == 8 and r50.layer4[0].attn.fc1.out_channels == 2048 // 8  # ImageNet d
    assert r20.layer1[0].attn.reduction == 2 and r20.layer1[0].attn.gain == 0.5  # CIFAR d, option passed on
    assert create_attention("toy", 16, reduction=4).fc1.out_channels == 4
    torch.manual_seed(0)
    model = create_model("toy_resnet18", num_classes=3)
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 3) and model.layer1[0].attn.fc1.weight.grad is not None
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['kernel_size'\]"):
        create_model("toy_resnet18", kernel_size=3)
    # detectron2's config gains the new option as a key; the shared key keeps 3D-AFF's default
    assert attention_option_defaults() == {"DESIGN": "aff3d", "KERNEL_SIZE": 3, "REDUCTION": 16, "GAIN": 1.0}


def test_unregistering_removes_every_derived_name():
    register_attention("toy", ToyGate)
    unregister_attention("toy")
    assert attention_choices() == BUILT_IN and not list_models("toy_*")
    with pytest.raises(ValueError, match=r"unknown model 'toy_resnet18'"):
        create_model("toy_resnet18")
    with pytest.raises(ValueError, match="unknown attention 'toy'"):
        get_attention("toy")


@pytest.mark.parametrize(
    "name, layer, kwargs, match",
    [
        ("se", ToyGate, {}, "already registered"),
        ("none", ToyGate, {}, "already registered"),
        ("my_gate", ToyGate, {}, "lower case letters and digits"),
        ("Toy", ToyGate, {}, "lower case letters and digits"),
        ("toy", ToyGate, {"detectron2": ("kernel",)}, r"detectron2 options \['kernel'\]"),
        ("toy", lambda channels, scale=1: nn.Identity(), {"reduction": {"imagenet": 4}}, "needs a 'reduction' option"),
    ],
)
def test_bad_registrations_are_refused(name, layer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        register_attention(name, layer, **kwargs)
    assert list(ATTENTIONS) == BUILT_IN[1:]


def test_options_are_checked_by_the_registry():
    expected = r"attention 'eca': unknown option\(s\) \['reduction'\]: expected some of \['b', 'gamma'\]"
    with pytest.raises(ValueError, match=expected):
        get_attention("eca", reduction=4)
    with pytest.raises(TypeError, match="option 'gain' needs a default"):
        register_attention("toy", lambda channels, gain: nn.Identity())


def test_detectron2_config_reads_a_registered_attentions_keys(toy):
    """Without detectron2: the config gains MODEL.AFF3D.GAIN and accepts ATTENTION "toy"."""
    cfg = SimpleNamespace(MODEL=SimpleNamespace())  # add_aff3d_config needs only attributes and type(cfg)()
    add_aff3d_config(cfg)
    assert cfg.MODEL.AFF3D.GAIN == 1.0 and cfg.MODEL.AFF3D.REDUCTION == 16


@pytest.mark.detectron2
def test_detectron2_backbone_builds_a_registered_attention(toy):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d, ShapeSpec

    from detectron2_ext.backbone import build_aff3d_resnet_fpn_backbone

    cfg = get_cfg()
    add_aff3d_config(cfg)
    cfg.merge_from_list(["MODEL.AFF3D.ATTENTION", "toy", "MODEL.AFF3D.GAIN", 0.5, "MODEL.RESNETS.DEPTH", 18])
    stages = ["res2", "res3", "res4", "res5"]
    cfg.merge_from_list(["MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.RESNETS.OUT_FEATURES", stages])
    cfg.merge_from_list(["MODEL.FPN.IN_FEATURES", stages])
    torch.manual_seed(0)
    fpn = build_aff3d_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    attns = [b.attn for stage in fpn.bottom_up.stages for b in stage]
    assert len(attns) == 8 and all(isinstance(a, ToyGate) for a in attns)
    assert all(a.gain == 0.5 and a.reduction == 16 for a in attns)  # MODEL.AFF3D.REDUCTION's ImageNet d
    assert all(isinstance(a.bn, FrozenBatchNorm2d) for a in attns)  # the backbone's norm (FrozenBN default)
    out = fpn(torch.randn(1, 3, 64, 64))
    assert set(out) == {"p2", "p3", "p4", "p5", "p6"}
