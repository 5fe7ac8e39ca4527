"""CIFAR pre-activation ResNet (He et al. 2016b, "Identity mappings in deep residual networks").

The paper's CIFAR-100 backbone is ResNet-164: depth = 9n + 2 with n = 18 bottlenecks per stage
(three 1x1/3x3/1x1 convs per block, plus the stem conv and the classifier). ResNet-20 (n = 2) is
the same builder, small enough for quick experiments.

    conv1    conv 3x3, 16                                  (32x32)
    layer1   n pre-activation bottlenecks, width 16 -> 64, stride 1   (32)
    layer2   n bottlenecks, width 32 -> 128, first stride 2           (16)
    layer3   n bottlenecks, width 64 -> 256, first stride 2           (8)
    bn, relu final pre-activation (the blocks end without one)
    global_pool, fc

Every block takes the same attention constructor; the attention sees C = 64, 128, 256.
timm's model interface comes from ``contract.TimmContract``; as in timm's pre-activation ResNetV2,
the feature maps are the stem conv and the three stage outputs (the final BN-ReLU is the ``norm``
of ``forward_intermediates``, applied to the last map with ``norm=True``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttnLayer
from .blocks import PreActBottleneck
from .contract import TimmContract, set_batch_norm
from .head import drop_path_rates
from .resnet import init_weights

STAGE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """n of depth = 9n + 2 (three convs per bottleneck, three stages, plus stem and fc)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
        raise ValueError(
            f"CIFAR pre-activation ResNet depth: expected 9n + 2 with n >= 1 (11, 20, 29, ..., 164), got {depth!r}"
        )
    return (depth - 2) // 9


class PreActResNetCIFAR(TimmContract, nn.Module):
    """Pre-activation bottleneck ResNet for 32x32 images; ``attn_layer`` builds each block's attention.

    ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``bn_momentum`` and ``bn_eps`` as for the
    ImageNet ``ResNet``; ``num_classes=0``: no classifier.
    """

    stage_names = ("layer1", "layer2", "layer3")

    def __init__(
        self,
        depth: int = 164,
        num_classes: int = 100,
        attn_layer: AttnLayer = None,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        bn_momentum: float | None = None,
        bn_eps: float | None = None,
    ):
        super().__init__()
        n = blocks_per_stage(depth)
        rates = iter(drop_path_rates(3 * n, drop_path_rate))
        self.depth = depth
        self.inplanes = STAGE_WIDTHS[0]
        self.conv1 = nn.Conv2d(in_chans, STAGE_WIDTHS[0], kernel_size=3, padding=1, bias=False)
        self.layer1 = self._make_layer(STAGE_WIDTHS[0], n, 1, attn_layer, rates)
        self.layer2 = self._make_layer(STAGE_WIDTHS[1], n, 2, attn_layer, rates)
        self.layer3 = self._make_layer(STAGE_WIDTHS[2], n, 2, attn_layer, rates)
        num_features = self.inplanes
        self.bn = nn.BatchNorm2d(num_features)
        self.relu = nn.ReLU(inplace=True)
        expansion = PreActBottleneck.expansion
        feature_info = [{"num_chs": STAGE_WIDTHS[0], "reduction": 1, "module": "conv1"}] + [
            {"num_chs": w * expansion, "reduction": r, "module": name}
            for w, r, name in zip(STAGE_WIDTHS, (1, 2, 4), self.stage_names)
        ]
        self.init_contract(num_features, num_classes, global_pool, drop_rate, feature_info)
        init_weights(self)
        set_batch_norm(self, bn_momentum, bn_eps)

    def _make_layer(self, planes: int, blocks: int, stride: int, attn_layer: AttnLayer, rates) -> nn.Sequential:
        # The first block projects (the width grows, and in layer2/3 the resolution halves).
        layers = [PreActBottleneck(self.inplanes, planes, stride, attn_layer, next(rates))]
        self.inplanes = planes * PreActBottleneck.expansion
        layers += [PreActBottleneck(self.inplanes, planes, 1, attn_layer, next(rates)) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        return x, x

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final pre-activation BN-ReLU: (N, 256, H/4, W/4) after it."""
        return self.relu(self.bn(x))

    def prune_norm(self) -> None:
        self.bn, self.relu = nn.Identity(), nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups: the stem, then a stage (coarse) or a block each, the final BN with
        the last stage; the rest is the head."""
        blocks = r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"
        return {"stem": r"^conv1", "blocks": [(blocks, None), (r"^bn\.", (99999,))]}
