"""Model names -> networks: ``create_model`` and ``list_models``, in the style of timm's factory.

A name is ``[<attention>_]<architecture>``:

    architecture   resnet18, resnet34, resnet50, resnet101, resnet152      (ImageNet, torchvision layout)
                   resnet20_cifar, resnet164_cifar                           (CIFAR pre-activation, 9n + 2)
    attention      none (no prefix), se, cbam, eca, aff3d

e.g. ``resnet50``, ``se_resnet50``, ``aff3d_resnet164_cifar``. Keyword arguments are split between
the network (``num_classes``, ``in_chans``, ``zero_init_residual`` for ImageNet nets) and the
attention (everything else), and each attention accepts only its own options:

    se      reduction (r)                             Hu et al. 2018
    cbam    reduction (r), kernel_size                Woo et al. 2018
    eca     gamma, b                                  Wang et al. 2020
    aff3d   reduction (d), kernel_size (k), design,   Liu et al. 2022 (this project)
            every AFF3DDesign switch, and impl
            ("fast" or "reference", see attention/aff3d.py)

Reduction defaults follow the 3D-AFF paper (section 4.1): d = 16 on ImageNet and d = 4 on
CIFAR-100, for 3D-AFF and for the SE/CBAM baselines alike: the paper's SE-ResNet-164
("ResNet-164 + M_c^r", Table 2, 2.52M parameters) is only reproduced with r = 4.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping

from torch import nn

from reference_numpy.designs import AFF3DDesign

from ..attention import get_attention
from ..pretrained import load_pretrained
from .resnet import resnet
from .resnet_cifar import PreActResNetCIFAR


@dataclass(frozen=True)
class Architecture:
    """One backbone: its family (``"imagenet"`` or ``"cifar"``) and depth."""

    family: str
    depth: int

    @property
    def default_num_classes(self) -> int:
        return 1000 if self.family == "imagenet" else 100

    @property
    def default_reduction(self) -> int:
        return 16 if self.family == "imagenet" else 4


ARCHITECTURES: dict[str, Architecture] = {
    **{f"resnet{d}": Architecture("imagenet", d) for d in (18, 34, 50, 101, 152)},
    **{f"resnet{d}_cifar": Architecture("cifar", d) for d in (20, 164)},
}

ATTENTION_PREFIXES = ("se", "cbam", "eca", "aff3d")

# Options each attention accepts through create_model's kwargs.
ATTENTION_OPTIONS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "se": frozenset({"reduction"}),
    "cbam": frozenset({"reduction", "kernel_size"}),
    "eca": frozenset({"gamma", "b"}),
    "aff3d": frozenset({"design", "impl"} | {f.name for f in fields(AFF3DDesign)}),
}

_NETWORK_OPTIONS = {"imagenet": frozenset({"in_chans", "zero_init_residual"}), "cifar": frozenset({"in_chans"})}


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: ``attention`` ("none", "se", ...) and ``arch`` (a key of ARCHITECTURES)."""

    attention: str
    arch: str

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.arch]

    def __str__(self) -> str:
        return self.arch if self.attention == "none" else f"{self.attention}_{self.arch}"


def list_models(pattern: str = "*") -> list[str]:
    """Every model name ``create_model`` accepts, sorted; ``pattern`` filters with shell wildcards."""
    names = [str(ModelName(a, arch)) for arch in ARCHITECTURES for a in ("none", *ATTENTION_PREFIXES)]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def parse_model_name(name: str) -> ModelName:
    """``"aff3d_resnet50"`` -> ModelName("aff3d", "resnet50"); ValueError for an unknown name."""
    if isinstance(name, str):
        if name in ARCHITECTURES:
            return ModelName("none", name)
        prefix, _, arch = name.partition("_")
        if prefix in ATTENTION_PREFIXES and arch in ARCHITECTURES:
            return ModelName(prefix, arch)
    raise ValueError(f"unknown model {name!r}: expected one of {list_models()}")


def _split_kwargs(parsed: ModelName, kwargs: Mapping) -> tuple[dict, dict]:
    """(network kwargs, attention kwargs), with a clear error for an option nobody takes."""
    net_opts = _NETWORK_OPTIONS[parsed.architecture.family]
    attn_opts = ATTENTION_OPTIONS[parsed.attention]
    unknown = sorted(set(kwargs) - net_opts - attn_opts)
    if unknown:
        raise ValueError(
            f"create_model({str(parsed)!r}): unknown option(s) {unknown}: expected some of "
            f"{sorted(net_opts | attn_opts | {'num_classes', 'pretrained'})}"
        )
    net = {k: v for k, v in kwargs.items() if k in net_opts}
    attn = {k: v for k, v in kwargs.items() if k in attn_opts}
    if "reduction" in attn_opts:
        attn.setdefault("reduction", parsed.architecture.default_reduction)
    return net, attn


def attention_layer(name: str, **kwargs) -> Callable[[int], nn.Module] | None:
    """The ``channels -> attention`` constructor that ``create_model(name, **kwargs)`` puts in every block."""
    parsed = parse_model_name(name)
    return get_attention(parsed.attention, **_split_kwargs(parsed, kwargs)[1])


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: str | Path | Mapping | None = None,
    **kwargs,
) -> nn.Module:
    """Build the network ``name`` (see ``list_models()``).

    Args:
        name: ``[se_|cbam_|eca_|aff3d_]resnet{18,34,50,101,152}`` or ``...resnet{20,164}_cifar``.
        num_classes: classifier outputs; default 1000 for ImageNet nets, 100 (CIFAR-100) for CIFAR nets.
        pretrained: a torchvision-format state_dict, or a path to one, loaded through
            ``torch_impl.pretrained.load_pretrained`` (strict for plain nets; attention weights stay
            freshly initialised). None: random initialisation.
        **kwargs: ``in_chans``, ``zero_init_residual`` (ImageNet), and the attention's options,
            e.g. ``reduction=8``, ``kernel_size=5``, ``design="aff3d_sum"``, ``merge="sum"``.

    >>> create_model("aff3d_resnet50", kernel_size=5).layer1[0].attn.design.kernel_size
    5
    """
    parsed = parse_model_name(name)
    arch = parsed.architecture
    if num_classes is None:
        num_classes = arch.default_num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"create_model({name!r}): num_classes must be a positive integer, got {num_classes!r}")
    net_kwargs, attn_kwargs = _split_kwargs(parsed, kwargs)
    attn_layer = get_attention(parsed.attention, **attn_kwargs)
    if arch.family == "imagenet":
        model = resnet(arch.depth, num_classes=num_classes, attn_layer=attn_layer, **net_kwargs)
    else:
        model = PreActResNetCIFAR(arch.depth, num_classes=num_classes, attn_layer=attn_layer, **net_kwargs)
    model.model_name = str(parsed)
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
