"""Attention layers sharing one interface: ``layer(residual, shortcut) -> gated residual``."""

from .aff3d import AFF3D
from .cbam import CBAM
from .eca import ECA, eca_kernel_size
from .factory import (
    ATTENTIONS,
    PAPER_REDUCTION,
    AttentionSpec,
    AttnLayer,
    attention_names,
    create_attention,
    get_attention,
    get_spec,
    register_attention,
    unregister_attention,
)
from .se import SE

__all__ = [
    "AFF3D",
    "SE",
    "CBAM",
    "ECA",
    "eca_kernel_size",
    "ATTENTIONS",
    "PAPER_REDUCTION",
    "AttentionSpec",
    "AttnLayer",
    "attention_names",
    "create_attention",
    "get_attention",
    "get_spec",
    "register_attention",
    "unregister_attention",
]
