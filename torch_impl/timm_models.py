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
...: timm's ``--model-kwargs``), and so do timm's generic ones, which the networks implement
themselves (``models/contract.py``, ``models/head.py``): ``num_classes`` (0: embeddings),
``global_pool``, ``drop_rate``, ``drop_path_rate``, ``bn_momentum``, ``bn_eps``. ``features_only=True``
(with ``out_indices``, ``feature_cls``) wraps the network in timm's feature extractors, over its
``feature_info`` (the stem and every stage). There are no published weights: ``pretrained=True``
needs a file (``pretrained_cfg_overlay=dict(file=...)``).

Decision: the networks stay torch_impl's own classes with timm's interface added, rather than
subclasses or configurations of timm's ``ResNet``. torch_impl must import and run without timm;
the blocks call a two-input attention (residual and shortcut, eq. 7) and hand 3D-AFF the whole
tail, which timm's blocks (``self.se(x)``) cannot; the CIFAR pre-activation family has no timm
counterpart with torchvision-style keys; and the state_dict keys and the outputs must stay exactly
those the NumPy reference and the existing checkpoints check.
"""

from __future__ import annotations

import importlib.util
import warnings
from contextlib import nullcontext
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from .attention import get_spec
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


# Where each architecture and attention comes from (timm's paper_ids are arXiv ids, as here).
_ARCH_PAPERS = {
    "imagenet": ("Deep residual learning for image recognition (He et al. 2016)", "arXiv:1512.03385"),
    "cifar": ("Identity mappings in deep residual networks (He et al. 2016)", "arXiv:1603.05027"),
}
_ATTENTION_PAPER_IDS = {"se": "arXiv:1709.01507", "cbam": "arXiv:1807.06521", "eca": "arXiv:1910.03151"}
_AFF3D_PAPER = "Inner-Imaging 3D attention module for residual network (Liu et al. 2022)"


def feature_count(name: str) -> int:
    """How many maps ``feature_info`` of ``name`` lists: the stem and each stage (5 ImageNet, 4 CIFAR)."""
    return 5 if parse_model_name(name).architecture.family == "imagenet" else 4


def pretrained_cfg(name: str) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` fields of ``name``, from its family's data (``FAMILIES``)."""
    parsed = parse_model_name(name)
    arch = parsed.architecture
    family = FAMILIES[arch.family]
    size = family.image_size
    mean, std = _mean_std(arch.family)
    stride = 32 if arch.family == "imagenet" else 4  # output stride of the last stage
    arch_paper, arch_id = _ARCH_PAPERS[arch.family]
    if parsed.attention == "none":
        paper, ids = arch_paper, (arch_id,)
    elif parsed.attention == "aff3d":
        paper, ids = _AFF3D_PAPER, (arch_id,)  # the 3D-AFF paper has no arXiv id
    else:
        paper = f"{parsed.attention.upper()} ({get_spec(parsed.attention).paper}) in {arch_paper}"
        ids = tuple(i for i in (_ATTENTION_PAPER_IDS.get(parsed.attention), arch_id) if i)
    return {
        "url": "",  # no published weights
        "num_classes": family.num_classes,
        "input_size": (3, size, size),
        "pool_size": (size // stride, size // stride),
        "fixed_input_size": False,
        "crop_pct": _CROP_PCT[arch.family],
        "crop_mode": "center",
        "interpolation": "bilinear",  # torchvision's Resize default, used by torch_impl.data
        "mean": tuple(mean),
        "std": tuple(std),
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "mit",  # the project's licence; there are no weights under another one
        "paper_name": paper,
        "paper_ids": ids,
        "description": f"torch_impl {name}, trained on {family.dataset} by default",
    }


def _build(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """timm's entrypoint body: ``torch_impl.create_model(name, ...)`` wrapped by ``build_model_with_cfg``.

    ``features_only`` is timm's: ``build_model_with_cfg`` wraps the network in ``FeatureListNet``
    (default: it runs the direct children in order and keeps those ``feature_info`` names, the stem
    ReLU / conv and the stages ``layerN``, as timm's own ResNet), or the class ``feature_cls`` names
    ("getter" uses ``forward_intermediates``, "fx" a traced graph, "hook" forward hooks).
    """
    from timm.models import build_model_with_cfg

    drop_block_rate = kwargs.pop("drop_block_rate", 0.0)
    if drop_block_rate:
        raise ValueError(f"{name}: the networks have no DropBlock layers, got drop_block_rate={drop_block_rate!r}")
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not (overlay.get("file") or overlay.get("state_dict")):
        raise ValueError(
            f"{name}: no published weights; pass a state_dict file (timm: --pretrained-path FILE, or "
            "pretrained_cfg_overlay=dict(file=FILE)) or use --initial-checkpoint"
        )
    feature_cfg = {"out_indices": tuple(range(feature_count(name)))}  # every map (timm's default assumes 5)
    feature_cfg.update(kwargs.pop("feature_cfg", None) or {})
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)  # timm's factory arguments
    with torch.device(device) if device is not None else nullcontext():
        model = build_model_with_cfg(partial(create_model, name), name, pretrained, feature_cfg=feature_cfg, **kwargs)
    return model if dtype is None else model.to(dtype=dtype)


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
