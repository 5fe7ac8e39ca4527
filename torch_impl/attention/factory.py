"""The attention registry: one table, name -> how to build that attention, in the style of timm's
``layers/create_attn.py`` (``get_attn`` / ``create_attn``).

Every layer is built as ``layer(channels, **options)`` (first argument C, as in timm) and called as
``layer(residual, shortcut)``, returning the gated residual U * A; blocks then add the shortcut
(eq. 7 of the 3D-AFF paper). ``None`` / ``"none"`` means no attention.

``ATTENTIONS`` is the one place an attention is declared. Everything else derives from it:

    torch_impl.models     model names (``<attention>_<architecture>``), the options create_model
                          accepts, the reduction default per data-set family
    detectron2_ext        the values of ``MODEL.AFF3D.ATTENTION``, the ``MODEL.AFF3D.*`` keys and
                          their defaults, and the options the backbone passes to each attention
    timm / torch.hub      the registered model names (through ``torch_impl.models.list_models``)

Adding an attention is one call, ``register_attention("name", Layer, ...)``: after it,
``create_model("name_resnet50")`` and the detectron2 backbone with ``MODEL.AFF3D.ATTENTION: name``
build it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from types import MappingProxyType
from typing import Any

from torch import nn

from reference_numpy.designs import AFF3DDesign

from .aff3d import AFF3D
from .cbam import CBAM
from .eca import ECA
from .se import SE

# What a block takes: ``channels -> attention module``, or None for no attention.
AttnLayer = Callable[[int], nn.Module] | None

# The option that sets the bottleneck ratio: d of F_ex for 3D-AFF (eq. 6), r for SE and CBAM.
REDUCTION = "reduction"

# The 3D-AFF paper, section 4.1: d = 16 on ImageNet, d = 4 on CIFAR-100, for 3D-AFF and for the SE
# and CBAM baselines alike (its SE-ResNet-164, "ResNet-164 + M_c^r", Table 2, 2.52M parameters, is
# only reproduced with r = 4). Keys are data-set families, as in ``torch_impl.models.FAMILIES``.
PAPER_REDUCTION = MappingProxyType({"imagenet": 16, "cifar": 4})


@dataclass(frozen=True)
class AttentionSpec:
    """How to build one attention.

    Attributes:
        layer: the class (or any callable) built as ``layer(channels, **options)``.
        options: every option ``layer`` accepts, with its default (from ``layer``'s signature, plus
            ``extra_options`` for a layer that takes ``**kwargs``).
        reduction: data-set family -> default of the ``reduction`` option; families not listed
            (and layers without the option) keep the layer's own default.
        detectron2: the options the detectron2 config exposes, as ``MODEL.AFF3D.<OPTION>``.
        paper: where the attention comes from (shown in docs and error messages only).
    """

    layer: Callable[..., nn.Module]
    options: Mapping[str, Any]
    reduction: Mapping[str, int] = field(default_factory=dict)
    detectron2: tuple[str, ...] = ()
    paper: str = ""

    def defaults(self, family: str | None = None) -> dict[str, Any]:
        """Every option's default; ``reduction`` as ``family``'s (e.g. 16 for "imagenet") when given."""
        out = dict(self.options)
        if family is not None and family in self.reduction:
            out[REDUCTION] = self.reduction[family]
        return out

    def family_defaults(self, family: str) -> dict[str, Any]:
        """The options ``create_model`` fills in for a network of ``family`` when the user does not."""
        return {REDUCTION: self.reduction[family]} if family in self.reduction else {}


ATTENTIONS: dict[str, AttentionSpec] = {}


def _signature_options(layer: Callable[..., nn.Module]) -> dict[str, Any]:
    """The keyword options of ``layer(channels, ...)`` and their defaults, from its signature."""
    params = list(inspect.signature(layer).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"attention layer {layer!r}: expected the channel count C as first argument")
    options = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise TypeError(f"attention layer {layer!r}: option {p.name!r} needs a default")
        options[p.name] = p.default
    return options


def register_attention(
    name: str,
    layer: Callable[..., nn.Module],
    *,
    extra_options: Mapping[str, Any] | None = None,
    reduction: Mapping[str, int] | None = None,
    detectron2: tuple[str, ...] = (),
    paper: str = "",
) -> AttentionSpec:
    """Declare the attention ``name``; see ``AttentionSpec`` for the arguments. Returns its spec.

    ``name`` becomes a model-name prefix (``name_resnet50``) and a value of the detectron2 config's
    ``MODEL.AFF3D.ATTENTION``: lower case letters and digits, not yet taken.
    """
    if not (isinstance(name, str) and name.isascii() and name.isalnum() and name == name.lower()):
        raise ValueError(f"attention name: expected lower case letters and digits, got {name!r}")
    if name == "none" or name in ATTENTIONS:
        raise ValueError(f"attention {name!r} is already registered")
    options = {**_signature_options(layer), **(extra_options or {})}
    reduction = dict(reduction or {})
    if reduction and REDUCTION not in options:
        raise ValueError(f"attention {name!r}: a reduction default per family needs a {REDUCTION!r} option")
    unknown = sorted(set(detectron2) - set(options))
    if unknown:
        raise ValueError(f"attention {name!r}: detectron2 options {unknown} are not options of {layer!r}")
    spec = AttentionSpec(layer, MappingProxyType(options), MappingProxyType(reduction), tuple(detectron2), paper)
    ATTENTIONS[name] = spec
    return spec


def unregister_attention(name: str) -> None:
    """Remove ``name`` (registered by ``register_attention``); a KeyError if it is not registered."""
    del ATTENTIONS[name]


def attention_names() -> list[str]:
    """``"none"`` and every registered attention, in registration order."""
    return ["none", *ATTENTIONS]


def get_spec(name: str) -> AttentionSpec:
    """The spec of attention ``name``; ValueError listing the valid names otherwise."""
    if name not in ATTENTIONS:
        raise ValueError(f"unknown attention {name!r}: expected one of {attention_names()}")
    return ATTENTIONS[name]


def get_attention(name: str | None, **kwargs) -> AttnLayer:
    """A constructor ``channels -> module`` for ``name`` with ``kwargs`` bound, or None for no attention."""
    if name is None or name == "none":
        if kwargs:
            raise ValueError(f"attention 'none' takes no options, got {sorted(kwargs)}")
        return None
    spec = get_spec(name)
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        raise ValueError(f"attention {name!r}: unknown option(s) {unknown}: expected some of {sorted(spec.options)}")
    return partial(spec.layer, **kwargs)


def create_attention(name: str | None, channels: int, **kwargs) -> nn.Module | None:
    """Build the attention layer ``name`` for ``channels`` channels (None for ``"none"``)."""
    layer = get_attention(name, **kwargs)
    return None if layer is None else layer(channels)


# The built-in attentions, in the order the zoo lists them.
register_attention("se", SE, reduction=PAPER_REDUCTION, detectron2=(REDUCTION,), paper="Hu et al. 2018")
register_attention("cbam", CBAM, reduction=PAPER_REDUCTION, detectron2=(REDUCTION,), paper="Woo et al. 2018")
# ECA has no reduction: its kernel size follows from C (ECA-Net eq. 12).
register_attention("eca", ECA, paper="Wang et al. 2020")
# AFF3D(channels, design, impl, **switches): every AFF3DDesign switch is an option, e.g. reduction (d)
# and kernel_size (k, eq. 5); the defaults are the paper's final design.
register_attention(
    "aff3d",
    AFF3D,
    extra_options={f.name: f.default for f in fields(AFF3DDesign)},
    reduction=PAPER_REDUCTION,
    detectron2=("design", "kernel_size", REDUCTION),
    paper="Liu et al. 2022",
)
