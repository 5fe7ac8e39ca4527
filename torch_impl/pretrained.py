"""Load torchvision-format ResNet weights into the zoo's networks.

A plain ``resnetNN`` has exactly torchvision's state_dict keys, so its ImageNet checkpoint loads
with ``strict=True``. An attention variant (``aff3d_resnet50``, ``se_resnet50``, ...) has the same
keys plus each block's ``attn.*``: ``load_pretrained`` takes every backbone weight from the
checkpoint and leaves the attention as initialised, and its report names those new keys, so a
fine-tuning script can log what starts from scratch (e.g. give it a larger learning rate).

    >>> sd = torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()   # downloads
    >>> report = load_pretrained(create_model("aff3d_resnet50"), sd)
    >>> report.new[:2]
    ('layer1.0.attn.spatial.conv.weight', 'layer1.0.attn.spatial.bn.weight')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class LoadReport:
    """What ``load_pretrained`` did: ``loaded`` keys came from the checkpoint, ``new`` keys did not."""

    loaded: tuple[str, ...]
    new: tuple[str, ...]

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)} tensors from the checkpoint; {len(self.new)} new (kept as initialised)"


def is_attention_key(key: str) -> bool:
    """True for a state_dict key inside a block's attention (a path component named ``attn``)."""
    return "attn" in key.split(".")


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict from a mapping or a file saved by ``torch.save`` (read with ``weights_only=True``).

    A file holding ``{"state_dict": ...}`` or ``{"model": ...}`` (a training checkpoint) is unwrapped;
    a checkpoint of ``torch_impl.train`` is verified against its checksum first.
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(f"pretrained weights: expected a file saved by torch.save, got missing path {str(path)!r}")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # not a torch file, truncated, or pickled objects beyond tensors
            from .training.checkpoint import load_error_reason

            raise ValueError(
                f"pretrained weights: cannot read {path} with weights_only=True ({load_error_reason(err)})"
            ) from err
        if isinstance(source, Mapping) and "format" in source:
            from .training.checkpoint import check_loaded  # imported late: the training stack is heavier

            source = check_loaded(source, path)  # a training checkpoint: format and checksum
    if not isinstance(source, Mapping):
        raise ValueError(
            f"pretrained weights: expected a state_dict (a mapping name -> tensor), got {type(source).__name__}"
        )
    for wrapper in ("state_dict", "model"):
        if wrapper in source and isinstance(source[wrapper], Mapping):
            source = source[wrapper]
            break
    bad = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"pretrained weights: expected tensors only, got non-tensor values under {bad[:5]}")
    return dict(source)


def load_pretrained(
    model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], exclude: tuple[str, ...] = ()
) -> LoadReport:
    """Load a torchvision-format checkpoint; return which keys were loaded and which are new.

    Every key of the model outside an attention layer must come from the checkpoint, and every
    checkpoint key must exist in the model with the same shape; anything else is a ValueError
    naming the keys. A plain network therefore loads exactly as ``load_state_dict(strict=True)``
    (it *is* called so), and for an attention network the ``new`` keys are exactly its ``attn.*``.

    Args:
        model: a network from ``create_model``.
        source: a state_dict or a path to one (see ``read_state_dict``).
        exclude: key prefixes of the checkpoint not to load, e.g. ``("fc.",)`` to fine-tune on a
            different number of classes; the model's keys under them are reported as new.
    """
    state = read_state_dict(source)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(exclude))}
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        # a model built with num_classes=0 has no fc: its checkpoint's classifier has nowhere to go
        hint = (
            " (a model without classifier: pass exclude=('fc.',))"
            if all(k.startswith("fc.") for k in unexpected)
            else ""
        )
        raise ValueError(
            f"pretrained weights: {len(unexpected)} checkpoint key(s) the model lacks, e.g. {unexpected[:5]}{hint}"
        )
    mismatched = [
        f"{k}: model {tuple(own[k].shape)}, checkpoint {tuple(v.shape)}"
        for k, v in state.items()
        if v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"pretrained weights: shape mismatch in {len(mismatched)} key(s), e.g. {mismatched[:3]} "
            f"(for another number of classes pass exclude=('fc.',))"
        )
    new = [k for k in own if k not in state]
    missing = [k for k in new if not is_attention_key(k) and not k.startswith(tuple(exclude))]
    if missing:
        raise ValueError(
            f"pretrained weights: {len(missing)} backbone key(s) missing from the checkpoint, e.g. {missing[:5]}"
        )
    model.load_state_dict(state, strict=not new)
    return LoadReport(loaded=tuple(k for k in own if k in state), new=tuple(new))
