"""Residual blocks that take any attention layer, after torchvision's ``models/resnet.py``.

The plain blocks have torchvision's exact state_dict keys (conv1, bn1, ..., downsample.0/1), so
torchvision's ImageNet weights load; the attention, when present, lives under ``attn``.
Every attention layer is called as ``attn(residual, shortcut)`` and returns the gated residual;
the block then adds the shortcut (eq. 7 of the 3D-AFF paper) and, post-activation, applies ReLU.

    BasicBlock          ResNet-18/34
    Bottleneck          ResNet-50/101/152, stride in the 3x3 conv (torchvision's "v1.5")
    PreActBottleneck    CIFAR ResNet-164 (He et al. 2016, "Identity mappings in deep residual networks")

Each block also takes ``drop_path`` (stochastic depth on the residual branch; 0: none) and has timm's
``zero_init_last()``.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from ..attention.factory import AttnLayer
from .head import DropPath


def attention_tail(
    attn: nn.Module, residual: torch.Tensor, shortcut: torch.Tensor, relu: bool, norm: nn.Module | None = None
) -> torch.Tensor:
    """``attn.gate_add_relu``: relu(attn(norm(residual), shortcut) + shortcut) in one call.

    A module-level function so that ``torch.fx.wrap`` below can make symbolic tracing (timm's and
    torchvision's feature extractors, ``torch.fx.symbolic_trace``) record it as one call: the traced
    network then runs the attention's own code, bit for bit what eager runs, instead of tracing a
    method whose dispatch reads devices and shapes a trace does not have.
    """
    return attn.gate_add_relu(residual, shortcut, relu=relu, norm=norm)


torch.fx.wrap("attention_tail")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """torchvision's downsample: 1x1 conv (stride) + BN, when the shape changes; else None."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class _AttentionBlock(nn.Module):
    """What the three blocks share: ``attn`` on the residual branch, ``drop_path``, ``fused_tail``.

    The tail of a block is U = norm(out) (eq. 3's last step), out = attn(U, X_l) + X_l (eq. 7), then
    ReLU. An attention that says so (``attn.fuses_tail``: 3D-AFF's fast path) gets all of it in one
    ``attn.gate_add_relu`` call, which folds the norm into its gate at inference and into the table
    gate's one pass in channels_last training. Same function, fewer passes over the maps.
    """

    attn: nn.Module | None
    drop_path: DropPath | None

    def _init_drop_path(self, drop_path: float) -> None:
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    @property
    def fused_tail(self) -> bool:
        """Whether ``forward`` takes the fused tail: the attention offers one, and no
        stochastic depth has to scale the branch before the sum (the fused call adds it itself)."""
        if self.drop_path is not None and self.training:
            return False
        return bool(getattr(self.attn, "fuses_tail", False))

    def _zero_init_attention(self) -> None:
        # The built-in attentions multiply U, so a zero U already zeroes the branch; an attention
        # with an additive part can start at zero through its own zero_init_last.
        init = getattr(self.attn, "zero_init_last", None)
        if init is not None:
            init()

    def _branch(self, out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """The unfused tail before the sum: U * X_3D (or U), through stochastic depth."""
        if self.attn is not None:
            out = self.attn(out, identity)  # U * X_3D
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out


class BasicBlock(_AttentionBlock):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, attn_layer: AttnLayer = None, drop_path: float = 0.0
    ):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = attn_layer(planes) if attn_layer is not None else None
        self.downsample = projection(inplanes, planes, stride)
        self.stride = stride
        self._init_drop_path(drop_path)

    def zero_init_last(self) -> None:
        """gamma = 0 in the last BN: the block starts as the identity (timm's ``zero_init_last``)."""
        nn.init.zeros_(self.bn2.weight)
        self._zero_init_attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.fused_tail:  # bn2, the gate, += identity and ReLU in one call
            return attention_tail(self.attn, out, identity, relu=True, norm=self.bn2)
        out = self._branch(self.bn2(out), identity)  # U -> U * X_3D
        out += identity  # eq. 7
        return self.relu(out)


class Bottleneck(_AttentionBlock):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, attn_layer: AttnLayer = None, drop_path: float = 0.0
    ):
        super().__init__()
        width = planes
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attn_layer(out_planes) if attn_layer is not None else None
        self.downsample = projection(inplanes, out_planes, stride)
        self.stride = stride
        self._init_drop_path(drop_path)

    def zero_init_last(self) -> None:
        """gamma = 0 in the last BN: the block starts as the identity (timm's ``zero_init_last``)."""
        nn.init.zeros_(self.bn3.weight)
        self._zero_init_attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.fused_tail:  # bn3, the gate, += identity and ReLU in one call
            return attention_tail(self.attn, out, identity, relu=True, norm=self.bn3)
        out = self._branch(self.bn3(out), identity)  # U -> U * X_3D
        out += identity  # eq. 7
        return self.relu(out)


class PreActBottleneck(_AttentionBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1; no ReLU after the sum.

    A projecting block's shortcut is a 1x1 conv (stride) over the pre-activated input.
    """

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, attn_layer: AttnLayer = None, drop_path: float = 0.0
    ):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attn_layer(out_planes) if attn_layer is not None else None
        needs_projection = stride != 1 or inplanes != out_planes
        self.downsample = conv1x1(inplanes, out_planes, stride) if needs_projection else None
        self.stride = stride
        self._init_drop_path(drop_path)

    def zero_init_last(self) -> None:
        """The branch ends in conv3 (no BN after it): zero its weights, as timm's pre-activation
        bottleneck does; the block starts as the identity."""
        nn.init.zeros_(self.conv3.weight)
        self._zero_init_attention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(a)
        out = self.conv1(a)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))  # U = F_tr(X_l), eq. 3
        if self.fused_tail:  # the gate and += identity in one call
            return attention_tail(self.attn, out, identity, relu=False)
        out = self._branch(out, identity)  # U * X_3D
        out += identity  # eq. 7; no ReLU after the sum
        return out
