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
    head     global average pool -> fc            (``global_pool``, ``fc``: timm's names)

Block outputs are width * expansion (1 for BasicBlock, 4 for Bottleneck). timm's model interface
(``forward_head``, ``reset_classifier``, ``feature_info``, ``forward_intermediates``, ...) comes
from ``contract.TimmContract``; its feature maps are the stem's ReLU (stride 2) and the four stages.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttnLayer
from .blocks import BasicBlock, Bottleneck, _AttentionBlock
from .contract import TimmContract, set_batch_norm
from .head import drop_path_rates

Block = type[BasicBlock] | type[Bottleneck]

# He et al. 2016a, Table 1: blocks per stage.
RESNET_LAYERS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(TimmContract, nn.Module):
    """A torchvision-compatible ResNet whose blocks take ``attn_layer`` (``channels -> module``).

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: outputs of ``fc``; 0: no classifier (the pooled features).
        attn_layer: constructor of the attention of every block, or None (plain ResNet).
        in_chans: input channels of the stem.
        zero_init_residual: start each block's last BN at gamma = 0 (torchvision's option; the
            block then begins as the identity).
        global_pool: "avg" (default), "max", "avgmax", "catavgmax", or "" (no pooling: the map).
        drop_rate: dropout before ``fc`` in training.
        drop_path_rate: stochastic depth of the last block, growing linearly from 0 over the blocks.
        bn_momentum, bn_eps: every batch norm's momentum and eps; None keeps PyTorch's.
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: Block,
        layers: tuple[int, ...],
        num_classes: int = 1000,
        attn_layer: AttnLayer = None,
        in_chans: int = 3,
        zero_init_residual: bool = False,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        bn_momentum: float | None = None,
        bn_eps: float | None = None,
    ):
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"ResNet layers: expected 4 positive block counts, got {tuple(layers)}")
        rates = iter(drop_path_rates(sum(layers), drop_path_rate))
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, attn_layer, rates)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, attn_layer, rates)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, attn_layer, rates)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, attn_layer, rates)
        feature_info = [{"num_chs": 64, "reduction": 2, "module": "relu"}] + [
            {"num_chs": w * block.expansion, "reduction": r, "module": n}
            for w, r, n in zip((64, 128, 256, 512), (4, 8, 16, 32), self.stage_names)
        ]
        self.init_contract(512 * block.expansion, num_classes, global_pool, drop_rate, feature_info)
        init_weights(self, zero_init_residual)
        set_batch_norm(self, bn_momentum, bn_eps)

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int, attn_layer: AttnLayer, rates
    ) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride, attn_layer, next(rates))]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, attn_layer, next(rates)) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the stem feature: ReLU output at stride 2, the stem output after max pooling)."""
        x = self.relu(self.bn1(self.conv1(x)))
        return x, self.maxpool(x)

    def prune_stem(self) -> None:
        self.maxpool = nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups: the stem, then a stage (coarse) or a block each; the rest is the head."""
        return {"stem": r"^conv1|^bn1|^maxpool", "blocks": r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)"}


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
            if isinstance(m, _AttentionBlock):  # each block knows its last layer (and asks its attention)
                m.zero_init_last()


def resnet(depth: int, num_classes: int = 1000, attn_layer: AttnLayer = None, **kwargs) -> ResNet:
    """ResNet-``depth`` for depth in 18, 34, 50, 101, 152."""
    if depth not in RESNET_LAYERS:
        raise ValueError(f"ImageNet ResNet depth: expected one of {sorted(RESNET_LAYERS)}, got {depth!r}")
    block, layers = RESNET_LAYERS[depth]
    return ResNet(block, layers, num_classes=num_classes, attn_layer=attn_layer, **kwargs)
