"""Networks: residual blocks that take any attention layer, and the ResNets built from them."""

from .blocks import BasicBlock, Bottleneck, PreActBottleneck

__all__ = ["BasicBlock", "Bottleneck", "PreActBottleneck"]
