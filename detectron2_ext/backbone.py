"""3D-AFF-ResNet and 3D-AFF-ResNet-FPN backbones, registered in detectron2's ``BACKBONE_REGISTRY``.

Select them with ``MODEL.BACKBONE.NAME: build_aff3d_resnet_backbone`` (C4/DC5 heads) or
``build_aff3d_resnet_fpn_backbone`` (FPN); the attention comes from ``MODEL.AFF3D`` (see
``config.add_aff3d_config``). Every ``MODEL.RESNETS`` option means what it means for detectron2's
``build_resnet_backbone``: DEPTH, NORM (FrozenBN, BN, SyncBN, GN), STRIDE_IN_1X1, RES5_DILATION,
NUM_GROUPS, WIDTH_PER_GROUP, STEM_OUT_CHANNELS, RES2_OUT_CHANNELS, OUT_FEATURES, and
``MODEL.BACKBONE.FREEZE_AT`` (frozen blocks freeze their attention too). With
``MODEL.AFF3D.ATTENTION: none`` the backbone is detectron2's ResNet, key for key.
"""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicStem, ResNet

from torch_impl.attention import AttnLayer, get_attention, get_spec
from torch_impl.models import RESNET_LAYERS, Bottleneck

from .blocks import AFF3DBasicBlock, AFF3DBottleneckBlock
from .config import attention_choices, config_key


def attention_from_config(cfg) -> AttnLayer:
    """The ``channels -> attention`` constructor that ``MODEL.AFF3D`` describes (None for "none").

    Each attention reads only the options its registry entry exposes to detectron2: 3D-AFF the
    design, k and d; SE and CBAM the reduction r; ECA none (its kernel follows from C).
    """
    a = cfg.MODEL.AFF3D
    if a.ATTENTION not in attention_choices():
        raise ValueError(f"MODEL.AFF3D.ATTENTION: expected one of {attention_choices()}, got {a.ATTENTION!r}")
    if a.ATTENTION == "none":
        return None
    options = {}
    for option in get_spec(a.ATTENTION).detectron2:
        key = config_key(option)
        if key not in a:
            raise ValueError(
                f"MODEL.AFF3D.{key}: missing from the config, which attention {a.ATTENTION!r} reads; "
                "call add_aff3d_config(cfg) after registering the attention"
            )
        options[option] = a[key]
    return get_attention(a.ATTENTION, **options)


def _check_resnet_options(r, depth: int) -> None:
    if depth not in RESNET_LAYERS:
        raise ValueError(f"MODEL.RESNETS.DEPTH: expected one of {sorted(RESNET_LAYERS)}, got {depth!r}")
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION: expected 1 or 2, got {r.RES5_DILATION!r}")
    if any(r.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable blocks have no 3D-AFF variant here; "
            f"expected all False, got {list(r.DEFORM_ON_PER_STAGE)}"
        )
    if RESNET_LAYERS[depth][0] is not Bottleneck:
        wrong = {
            "RES2_OUT_CHANNELS": (r.RES2_OUT_CHANNELS, 64),
            "RES5_DILATION": (r.RES5_DILATION, 1),
            "NUM_GROUPS": (r.NUM_GROUPS, 1),
        }
        for key, (got, expected) in wrong.items():
            if got != expected:
                raise ValueError(f"MODEL.RESNETS.{key}: ResNet-{depth} needs {expected}, got {got!r}")


@BACKBONE_REGISTRY.register()
def build_aff3d_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """detectron2's ``ResNet`` whose every block carries the attention of ``MODEL.AFF3D``."""
    r = cfg.MODEL.RESNETS
    depth = r.DEPTH
    _check_resnet_options(r, depth)
    attention = attention_from_config(cfg)
    block, blocks_per_stage = RESNET_LAYERS[depth]  # He et al. 2016a, Table 1 (torch_impl's table)
    attention_norm = cfg.MODEL.AFF3D.NORM or r.NORM

    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for stage, num_blocks in zip(range(2, 6), blocks_per_stage):
        # res5 dilation keeps stride 16 (DC5), as in detectron2's builder
        dilation = r.RES5_DILATION if stage == 5 else 1
        first_stride = 1 if stage == 2 or dilation == 2 else 2
        kwargs = {
            "num_blocks": num_blocks,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": r.NORM,
            "attention": attention,
            "attention_norm": attention_norm,
        }
        if block is Bottleneck:
            kwargs.update(
                block_class=AFF3DBottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
            )
        else:
            kwargs["block_class"] = AFF3DBasicBlock
        stages.append(ResNet.make_stage(**kwargs))
        in_channels, out_channels, bottleneck_channels = out_channels, out_channels * 2, bottleneck_channels * 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_aff3d_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """FPN (P2-P6) over ``build_aff3d_resnet_backbone``, as detectron2's ``build_resnet_fpn_backbone``."""
    return FPN(
        bottom_up=build_aff3d_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
