"""PyTorch implementation of 3D-AFF-ResNet (Liu et al. 2022), checked against ``reference_numpy``.

With timm installed, importing the package registers every network with timm's model registry
(``torch_impl.timm_models``): ``timm.create_model("aff3d_resnet50")`` then works.
"""

from .attention import AFF3D, CBAM, ECA, SE, create_attention, get_attention, register_attention
from .models import create_model, list_models
from .timm_models import register_timm_models

register_timm_models()

__all__ = [
    "AFF3D",
    "SE",
    "CBAM",
    "ECA",
    "create_attention",
    "get_attention",
    "register_attention",
    "create_model",
    "list_models",
    "register_timm_models",
]
