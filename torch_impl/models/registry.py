"""Model names -> networks: ``create_model`` and ``list_models``, in the style of timm's factory.

A name is ``[<attention>_]<architecture>``:

    architecture   resnet18, resnet34, resnet50, resnet101, resnet152      (ImageNet, torchvision layout)
                   resnet20_cifar, resnet164_cifar                           (CIFAR pre-activation, 9n + 2)
    attention      none (no prefix), or any name of ``torch_impl.attention.ATTENTIONS``:
                   se, cbam, eca, aff3d

e.g. ``resnet50``, ``se_resnet50``, ``aff3d_resnet164_cifar``. Keyword arguments are split between
the network (``num_classes``, ``in_chans``, ``zero_init_residual`` for ImageNet nets, and timm's
generic options ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``bn_momentum``, ``bn_eps``) and
the attention (everything else), and each attention accepts only its own options, as its entry in
``ATTENTIONS`` lists them:

    se      reduction (r)                             Hu et al. 2018
    cbam    reduction (r), kernel_size                Woo et al. 2018
    eca     gamma, b                                  Wang et al. 2020
    aff3d   reduction (d), kernel_size (k), design,   Liu et al. 2022 (this project)
            every AFF3DDesign switch, and impl
            (see attention/aff3d.py)

Reduction defaults come from the attention's entry, per data-set family: the paper's d = 16 on
ImageNet and d = 4 on CIFAR-100 (section 4.1) for 3D-AFF, SE and CBAM alike.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from torch import nn

from ..attention import ATTENTIONS, attention_names, get_attention, get_spec
from .resnet import RESNET_LAYERS, resnet
from .resnet_cifar import PreActResNetCIFAR


@dataclass(frozen=True)
class Family:
    """What the networks trained on one kind of data set share.

    Attributes:
        dataset: the paper's data set for this family.
        num_classes: the default classifier width (that data set's classes).
        image_size: side of the (square) training crop and test image.
        network_options: keyword arguments of the network builder that ``create_model`` passes on.
    """

    dataset: str
    num_classes: int
    image_size: int
    network_options: frozenset[str]


# Options both families' networks take, as timm's models do (timm's train.py passes them).
GENERIC_OPTIONS = frozenset({"in_chans", "global_pool", "drop_rate", "drop_path_rate", "bn_momentum", "bn_eps"})

FAMILIES: dict[str, Family] = {
    "imagenet": Family("ImageNet-1k", 1000, 224, GENERIC_OPTIONS | {"zero_init_residual"}),
    "cifar": Family("CIFAR-100", 100, 32, GENERIC_OPTIONS),
}

# The CIFAR depths of the zoo: ResNet-164 (the paper's CIFAR-100 backbone) and ResNet-20 (quick runs).
CIFAR_DEPTHS = (20, 164)


@dataclass(frozen=True)
class Architecture:
    """One backbone: its family (a key of ``FAMILIES``) and depth."""

    family: str
    depth: int

    @property
    def default_num_classes(self) -> int:
        return FAMILIES[self.family].num_classes


ARCHITECTURES: dict[str, Architecture] = {
    **{f"resnet{depth}": Architecture("imagenet", depth) for depth in RESNET_LAYERS},
    **{f"resnet{depth}_cifar": Architecture("cifar", depth) for depth in CIFAR_DEPTHS},
}


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
    names = [str(ModelName(a, arch)) for arch in ARCHITECTURES for a in attention_names()]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def parse_model_name(name: str) -> ModelName:
    """``"aff3d_resnet50"`` -> ModelName("aff3d", "resnet50"); ValueError for an unknown name."""
    if isinstance(name, str):
        if name in ARCHITECTURES:
            return ModelName("none", name)
        prefix, _, arch = name.partition("_")  # attention names have no "_"
        if prefix in ATTENTIONS and arch in ARCHITECTURES:
            return ModelName(prefix, arch)
    raise ValueError(f"unknown model {name!r}: expected one of {list_models()}")


def _split_kwargs(parsed: ModelName, kwargs: Mapping) -> tuple[dict, dict]:
    """(network kwargs, attention kwargs), with a clear error for an option nobody takes.

    The attention kwargs start from the attention's defaults for the network's family (its
    reduction d or r), which the user's options override.
    """
    family = parsed.architecture.family
    net_opts = FAMILIES[family].network_options
    spec = None if parsed.attention == "none" else get_spec(parsed.attention)
    attn_opts = frozenset(spec.options) if spec else frozenset()
    unknown = sorted(set(kwargs) - net_opts - attn_opts)
    if unknown:
        raise ValueError(
            f"create_model({str(parsed)!r}): unknown option(s) {unknown}: expected some of "
            f"{sorted(net_opts | attn_opts | {'num_classes', 'pretrained'})}"
        )
    net = {k: v for k, v in kwargs.items() if k in net_opts}
    attn = spec.family_defaults(family) if spec else {}
    attn.update({k: v for k, v in kwargs.items() if k in attn_opts})
    return net, attn


def create_model(
    name: str,
    num_classes: int | None = None,
    pretrained: str | Path | Mapping | None = None,
    **kwargs,
) -> nn.Module:
    """Build the network ``name`` (see ``list_models()``).

    Args:
        name: ``[<attention>_]resnet{18,34,50,101,152}`` or ``[<attention>_]resnet{20,164}_cifar``, where
            ``<attention>`` is a name of ``torch_impl.attention.ATTENTIONS`` (se, cbam, eca, aff3d).
        num_classes: classifier outputs; default 1000 for ImageNet nets, 100 (CIFAR-100) for CIFAR nets;
            0: no classifier (the network returns its pooled features).
        pretrained: a torchvision-format state_dict, or a path to one, loaded through
            ``torch_impl.pretrained.load_pretrained`` (strict for plain nets; attention weights stay
            freshly initialised). None: random initialisation.
        **kwargs: ``in_chans``, ``zero_init_residual`` (ImageNet), ``global_pool`` ("avg", "max",
            "avgmax", "catavgmax", "": no pooling, with num_classes=0), ``drop_rate`` (dropout before
            fc), ``drop_path_rate`` (stochastic depth), ``bn_momentum``, ``bn_eps``, and the
            attention's options, e.g. ``reduction=8``, ``kernel_size=5``, ``design="aff3d_sum"``.

    >>> create_model("aff3d_resnet50", kernel_size=5).layer1[0].attn.design.kernel_size
    5
    """
    parsed = parse_model_name(name)
    arch = parsed.architecture
    if num_classes is None:
        num_classes = arch.default_num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            f"create_model({name!r}): num_classes must be a non-negative integer (0: no classifier), "
            f"got {num_classes!r}"
        )
    net_kwargs, attn_kwargs = _split_kwargs(parsed, kwargs)
    attn_layer = get_attention(parsed.attention, **attn_kwargs)
    if arch.family == "imagenet":
        model = resnet(arch.depth, num_classes=num_classes, attn_layer=attn_layer, **net_kwargs)
    else:
        model = PreActResNetCIFAR(arch.depth, num_classes=num_classes, attn_layer=attn_layer, **net_kwargs)
    model.model_name = str(parsed)
    if pretrained is not None:
        # Imported here: pretrained.py reaches the training package, which imports this module.
        from ..pretrained import load_pretrained

        load_pretrained(model, pretrained)
    return model
