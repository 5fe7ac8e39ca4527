"""Name -> attention layer, in the style of timm's ``create_attn``.

Every layer is built as ``layer(channels, **kwargs)`` and called as ``layer(residual, shortcut)``,
returning the gated residual; blocks then add the shortcut. ``None`` / ``"none"`` means no attention.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from .aff3d import AFF3D
from .cbam import CBAM
from .eca import ECA
from .se import SE

ATTENTIONS: dict[str, type[nn.Module]] = {"se": SE, "cbam": CBAM, "eca": ECA, "aff3d": AFF3D}


def get_attention(name: str | None, **kwargs) -> Callable[[int], nn.Module] | None:
    """A constructor ``channels -> module`` for ``name`` with ``kwargs`` bound, or None for no attention."""
    if name is None or name == "none":
        if kwargs:
            raise ValueError(f"attention 'none' takes no options, got {sorted(kwargs)}")
        return None
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}: expected one of {['none', *ATTENTIONS]}")
    return partial(ATTENTIONS[name], **kwargs)


def create_attention(name: str | None, channels: int, **kwargs) -> nn.Module | None:
    """Build the attention layer ``name`` for ``channels`` channels (None for ``"none"``)."""
    layer = get_attention(name, **kwargs)
    return None if layer is None else layer(channels)
