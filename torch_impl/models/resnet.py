"""ImageNet ResNet-18/34/50/101/152 with an attention layer in every block, after torchvision.

Same attribute names and state_dict keys as ``torchvision.models.resnet`` (conv1, bn1, relu,
maxpool, layer1..layer4, avgpool, fc; blocks as in ``blocks.py``), so a plain ``resnet50`` loads
torchvision's ImageNet weights with ``strict=True``. With attention, each block gains an ``attn``
submodule and nothing else changes: the backbone weights still load (see ``torch_impl.pretrained``).

    stem     conv 7x7/2, 64 -> BN -> ReLU -> max pool 3x3/2        (224 -> 56)
    layer1   blocks at width 64,  stride 1                         (56)
    layer2   blocks at width 128, first stride 2                   (28)
    layer3   blocks at width 256, first stride 2                   (14)
    layer4   blocks at width 512, first stride 2                   (7)
    head     global average pool -> fc

Block outputs are width * expansion (1 for BasicBlock, 4 for Bottleneck).
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttnLayer
from .blocks import BasicBlock, Bottleneck

Block = type[BasicBlock] | type[Bottleneck]

# He et al. 2016a, Table 1: blocks per stage.
RESNET_LAYERS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """A torchvision-compatible ResNet whose blocks take ``attn_layer`` (``channels -> module``).

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: outputs of ``fc``.
        attn_layer: constructor of the attention of every block, or None (plain ResNet).
        in_chans: input channels of the stem.
        zero_init_residual: start each block's last BN at gamma = 0 (torchvision's option; the
            block then begins as the identity).
    """

    def __init__(
        self,
        block: Block,
        layers: tuple[int, ...],
        num_classes: int = 1000,
        attn_layer: AttnLayer = None,
        in_chans: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"ResNet layers: expected 4 positive block counts, got {tuple(layers)}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, attn_layer)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, attn_layer)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, attn_layer)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, attn_layer)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self, zero_init_residual)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int, attn_layer: AttnLayer) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride, attn_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, attn_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the four stages: (N, 3, H, W) -> (N, 512 * expansion, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's initialisation: He-normal (fan_out) convs, BN gamma 1 / beta 0.

    Attention convolutions get the same He init; their BNs start at gamma 1 like every other BN.
    On the meta device (shapes only, e.g. for counting FLOPs) there are no values to initialise.
    """
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


def resnet(depth: int, num_classes: int = 1000, attn_layer: AttnLayer = None, **kwargs) -> ResNet:
    """ResNet-``depth`` for depth in 18, 34, 50, 101, 152."""
    if depth not in RESNET_LAYERS:
        raise ValueError(f"ImageNet ResNet depth: expected one of {sorted(RESNET_LAYERS)}, got {depth!r}")
    block, layers = RESNET_LAYERS[depth]
    return ResNet(block, layers, num_classes=num_classes, attn_layer=attn_layer, **kwargs)
