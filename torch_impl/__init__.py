"""PyTorch implementation of 3D-AFF-ResNet (Liu et al. 2022), checked against ``reference_numpy``."""

from .attention import AFF3D, CBAM, ECA, SE, create_attention, get_attention
from .models import create_model, list_models

__all__ = ["AFF3D", "SE", "CBAM", "ECA", "create_attention", "get_attention", "create_model", "list_models"]
