"""Networks: residual blocks that take any attention layer, and the ResNets built from them."""

from .blocks import BasicBlock, Bottleneck, PreActBottleneck
from .registry import ARCHITECTURES, FAMILIES, ModelName, create_model, list_models, parse_model_name
from .resnet import RESNET_LAYERS, ResNet, resnet
from .resnet_cifar import PreActResNetCIFAR

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBottleneck",
    "ResNet",
    "resnet",
    "RESNET_LAYERS",
    "PreActResNetCIFAR",
    "ARCHITECTURES",
    "ModelName",
    "FAMILIES",
    "create_model",
    "list_models",
    "parse_model_name",
]
