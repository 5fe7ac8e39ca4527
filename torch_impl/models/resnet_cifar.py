"""CIFAR pre-activation ResNet (He et al. 2016b, "Identity mappings in deep residual networks").

The paper's CIFAR-100 backbone is ResNet-164: depth = 9n + 2 with n = 18 bottlenecks per stage
(three 1x1/3x3/1x1 convs per block, plus the stem conv and the classifier). ResNet-20 (n = 2) is
the same builder, small enough for quick experiments.

    conv1    conv 3x3, 16                                  (32x32)
    layer1   n pre-activation bottlenecks, width 16 -> 64, stride 1   (32)
    layer2   n bottlenecks, width 32 -> 128, first stride 2           (16)
    layer3   n bottlenecks, width 64 -> 256, first stride 2           (8)
    bn, relu final pre-activation (the blocks end without one)
    avgpool, fc

Every block takes the same attention constructor; the attention sees C = 64, 128, 256.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttnLayer
from .blocks import PreActBottleneck
from .resnet import init_weights

STAGE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """n of depth = 9n + 2 (three convs per bottleneck, three stages, plus stem and fc)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
        raise ValueError(
            f"CIFAR pre-activation ResNet depth: expected 9n + 2 with n >= 1 (11, 20, 29, ..., 164), got {depth!r}"
        )
    return (depth - 2) // 9


class PreActResNetCIFAR(nn.Module):
    """Pre-activation bottleneck ResNet for 32x32 images; ``attn_layer`` builds each block's attention."""

    def __init__(self, depth: int = 164, num_classes: int = 100, attn_layer: AttnLayer = None, in_chans: int = 3):
        super().__init__()
        n = blocks_per_stage(depth)
        self.depth = depth
        self.inplanes = STAGE_WIDTHS[0]
        self.conv1 = nn.Conv2d(in_chans, STAGE_WIDTHS[0], kernel_size=3, padding=1, bias=False)
        self.layer1 = self._make_layer(STAGE_WIDTHS[0], n, 1, attn_layer)
        self.layer2 = self._make_layer(STAGE_WIDTHS[1], n, 2, attn_layer)
        self.layer3 = self._make_layer(STAGE_WIDTHS[2], n, 2, attn_layer)
        self.num_features = self.inplanes
        self.bn = nn.BatchNorm2d(self.num_features)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, attn_layer: AttnLayer) -> nn.Sequential:
        # The first block projects (the width grows, and in layer2/3 the resolution halves).
        layers = [PreActBottleneck(self.inplanes, planes, stride, attn_layer)]
        self.inplanes = planes * PreActBottleneck.expansion
        layers += [PreActBottleneck(self.inplanes, planes, 1, attn_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 256, H/4, W/4), after the final BN-ReLU."""
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.relu(self.bn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
