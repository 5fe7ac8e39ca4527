"""Residual blocks with an attention layer, for detectron2's ``ResNet.make_stage``.

They extend detectron2's own ``BottleneckBlock`` and ``BasicBlock``: the convolutions, shortcut,
norms, ``stride_in_1x1``, dilation, groups and ``freeze()`` are detectron2's; the blocks add ``attn``,
any ``torch_impl.attention`` layer (3D-AFF, SE, CBAM, ECA), applied to the residual branch before
the sum (eq. 7 of the 3D-AFF paper):

    U   = conv3(conv2(conv1(X)))                     residual branch (eq. 3)
    X_l = shortcut(X)                                projection or identity
    out = ReLU(attn(U, X_l) + X_l)                   attn(U, X_l) = U * X_3D for 3D-AFF

The attention's BN layers are swapped for the block's detectron2 norm (FrozenBN, SyncBN, GN, ...),
keeping their state_dict names, so torch_impl's ImageNet weights load under the same keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from detectron2.layers import get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from fvcore.nn import weight_init
from torch import nn

from torch_impl.attention import AttnLayer


def attention_norm_layer(norm: str | Callable[[int], nn.Module], channels: int) -> nn.Module:
    """detectron2's ``get_norm``, except GN: gcd(32, C) groups, as the attention has C = 1 or C/d layers."""
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    layer = get_norm(norm, channels)
    if layer is None:
        raise ValueError(f"attention norm: expected a detectron2 norm (BN, SyncBN, FrozenBN, GN, ...), got {norm!r}")
    return layer


def convert_attention_norms(module: nn.Module, norm: str | Callable[[int], nn.Module]) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by ``norm`` in place, keeping names and values."""
    if norm == "BN":
        return module  # detectron2's "BN" is nn.BatchNorm2d already
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = attention_norm_layer(norm, child.num_features)
            # carry gamma/beta (and running stats where the new norm has them) over
            new.load_state_dict(child.state_dict(), strict=False)
            setattr(module, name, new)
        else:
            convert_attention_norms(child, norm)
    return module


def build_block_attention(
    attention: AttnLayer, channels: int, norm: str | Callable[[int], nn.Module]
) -> nn.Module | None:
    """``attention(channels)`` with detectron2's conv init and ``norm`` in place of its BN layers."""
    if attention is None:
        return None
    attn = attention(channels)
    for m in attn.modules():
        if isinstance(m, nn.Conv2d):
            # He init (fan_out), as detectron2's blocks and torch_impl's ResNets both use
            weight_init.c2_msra_fill(m)
    return convert_attention_norms(attn, norm)


class AFF3DBottleneckBlock(BottleneckBlock):
    """detectron2's bottleneck (1x1, 3x3, 1x1) with ``attn`` on the residual branch.

    Args:
        attention: ``channels -> module`` from ``torch_impl.attention.get_attention``, or None for
            detectron2's plain bottleneck.
        attention_norm: norm of the attention's BN layers; None uses ``norm``.
        Others: as detectron2's ``BottleneckBlock`` (``bottleneck_channels``, ``stride``,
            ``num_groups``, ``norm``, ``stride_in_1x1``, ``dilation``).
    """

    def __init__(self, in_channels, out_channels, *, attention: AttnLayer = None, attention_norm=None, **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        norm = kwargs.get("norm", "BN") if attention_norm is None else attention_norm
        self.attn = build_block_attention(attention, out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)  # U
        shortcut = x if self.shortcut is None else self.shortcut(x)  # X_l
        if self.attn is not None:
            out = self.attn(out, shortcut)  # U * X_3D
        out += shortcut  # eq. 7
        return F.relu_(out)


class AFF3DBasicBlock(BasicBlock):
    """detectron2's basic block (two 3x3 convs, ResNet-18/34) with ``attn`` on the residual branch."""

    def __init__(self, in_channels, out_channels, *, attention: AttnLayer = None, attention_norm=None, **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        norm = kwargs.get("norm", "BN") if attention_norm is None else attention_norm
        self.attn = build_block_attention(attention, out_channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))  # U
        shortcut = x if self.shortcut is None else self.shortcut(x)  # X_l
        if self.attn is not None:
            out = self.attn(out, shortcut)  # U * X_3D
        out += shortcut  # eq. 7
        return F.relu_(out)
