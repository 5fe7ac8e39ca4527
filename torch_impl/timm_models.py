"""torch_impl's networks in timm's model registry: ``timm.create_model("aff3d_resnet50", num_classes=10)``.

With timm installed, ``import torch_impl`` calls ``register_timm_models()``: every name of
``torch_impl.list_models()`` becomes a timm model (``timm.list_models(module="timm_models")``),
built by ``torch_impl.create_model`` through timm's ``build_model_with_cfg``, so the model carries
timm's ``pretrained_cfg`` (input size, interpolation, crop, mean/std, classifier name) and timm's
data and training code (``resolve_data_config``, ``create_transform``, ``train.py``,
``validate.py``) treats it like its own. Without timm nothing is registered and nothing fails.

Names timm defines itself are left to timm: the plain ``resnet18`` ... ``resnet152`` are timm's own
ResNets (the same torchvision layout and state_dict keys; timm's default ``zero_init_last=True``
differs from ours). Every attention variant and the CIFAR networks are ours.

Options reach ``torch_impl.create_model`` unchanged (``reduction``, ``kernel_size``, ``design``,
...: timm's ``--model-kwargs``). timm's generic options are accepted when they ask for what the
networks do (``drop_rate=0``, ``global_pool="avg"``) and refused otherwise. There are no published
weights: ``pretrained=True`` needs a file (``pretrained_cfg_overlay=dict(file=...)``).
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import partial
from typing import Any, Callable

from torch import nn

from .models import FAMILIES, create_model, list_models, parse_model_name

__all__ = ["register_timm_models", "pretrained_cfg", "timm_installed"]  # timm adds the model names

# The timm pretrained_cfg of each model, by name; timm's register_model reads it from this module.
default_cfgs: dict[str, Any] = {}
# Names this module registered with timm, and names timm already had (left to timm).
REGISTERED: list[str] = []
LEFT_TO_TIMM: list[str] = []

# Evaluation preprocessing of each family, as torch_impl.data.transforms does it: ImageNet resizes the
# shorter side to 256 and centre-crops 224 (crop_pct 224/256); CIFAR evaluates the 32x32 image whole.
_CROP_PCT = {"imagenet": 224 / 256, "cifar": 1.0}


def timm_installed() -> bool:
    try:
        return importlib.util.find_spec("timm") is not None
    except ValueError:  # sys.modules["timm"] is None: importing timm is blocked
        return False


def _mean_std(family: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from .data.transforms import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD

    return {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "cifar": (CIFAR100_MEAN, CIFAR100_STD)}[family]


def pretrained_cfg(name: str) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` fields of ``name``, from its family's data (``FAMILIES``)."""
    arch = parse_model_name(name).architecture
    family = FAMILIES[arch.family]
    size = family.image_size
    mean, std = _mean_std(arch.family)
    stride = 32 if arch.family == "imagenet" else 4  # output stride of the last stage
    return {
        "url": "",  # no published weights
        "num_classes": family.num_classes,
        "input_size": (3, size, size),
        "pool_size": (size // stride, size // stride),
        "crop_pct": _CROP_PCT[arch.family],
        "interpolation": "bilinear",  # torchvision's Resize default, used by torch_impl.data
        "mean": tuple(mean),
        "std": tuple(std),
        "first_conv": "conv1",
        "classifier": "fc",
        "paper_name": "Inner-Imaging 3D attention module for residual network (Liu et al. 2022)",
        "description": f"torch_impl {name}, trained on {family.dataset} by default",
    }


def _build(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """timm's entrypoint body: ``torch_impl.create_model(name, ...)`` wrapped by ``build_model_with_cfg``."""
    from timm.models import build_model_with_cfg

    drop_rate = kwargs.pop("drop_rate", 0.0)
    if drop_rate:
        raise ValueError(f"{name}: the classifier has no dropout (torch_impl's networks), got drop_rate={drop_rate!r}")
    global_pool = kwargs.pop("global_pool", "avg")
    if global_pool != "avg":
        raise ValueError(f"{name}: the head pools by average only, got global_pool={global_pool!r}")
    if kwargs.get("features_only"):
        raise ValueError(f"{name}: features_only is not supported; use model.forward_features, or detectron2_ext")
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not (overlay.get("file") or overlay.get("state_dict")):
        raise ValueError(
            f"{name}: no published weights; pass a state_dict file (timm: --pretrained-path FILE, or "
            "pretrained_cfg_overlay=dict(file=FILE)) or use --initial-checkpoint"
        )
    return build_model_with_cfg(partial(create_model, name), name, pretrained, **kwargs)


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    """A function named ``name`` in this module, as timm's ``register_model`` expects."""

    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return _build(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"``torch_impl.create_model({name!r}, **kwargs)`` with timm's pretrained_cfg."
    return entrypoint


def register_timm_models() -> list[str]:
    """Register every ``list_models()`` name that timm lacks; return the newly registered names.

    Idempotent: call it again after ``register_attention`` to register the new attention's models.
    Returns [] without timm.
    """
    if not timm_installed():
        return []
    with warnings.catch_warnings():
        # timm -> huggingface_hub -> tqdm.auto warns in a Jupyter kernel without ipywidgets, on every
        # `import torch_impl` in a notebook; the progress bars it is about are never shown here.
        warnings.filterwarnings("ignore", message="IProgress not found")
        import timm
        from timm.models import generate_default_cfgs, register_model

    new = []
    for name in list_models():
        if name in REGISTERED or name in LEFT_TO_TIMM:
            continue
        if timm.is_model(name):
            LEFT_TO_TIMM.append(name)
            continue
        default_cfgs.update(generate_default_cfgs({name: pretrained_cfg(name)}))
        register_model(_entrypoint(name))
        REGISTERED.append(name)
        new.append(name)
    return new
