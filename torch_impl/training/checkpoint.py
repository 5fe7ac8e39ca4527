"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked against the architecture.

A checkpoint is a dict of tensors and plain values::

    format            CHECKPOINT_FORMAT
    model_name        e.g. "aff3d_resnet20_cifar"
    model_kwargs      the create_model options, e.g. {"reduction": 4}
    num_classes       classifier outputs
    model             the network's state_dict (torchvision key names)
    optimizer, scheduler, scaler        their state_dicts (scaler: None without fp16)
    epoch             epochs completed
    rng               every generator's state (see seeding.rng_state)
    config            the run's TrainConfig as a dict
    history           one dict of metrics per completed epoch
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FORMAT = "aff3d-resnet/train-checkpoint/1"
LAST, BEST = "last.pth", "best.pth"


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` through a temporary file and a rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state, format=CHECKPOINT_FORMAT), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its ``last.pth``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: expected a .pth file written by torch_impl.train or a run folder holding {LAST}"
        )
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``: tensors and plain values only)."""
    path = resolve_checkpoint_path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path} with weights_only=True ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not a torch_impl.train checkpoint (expected format {CHECKPOINT_FORMAT!r}, found {found!r}); "
            "for a bare state_dict use create_model(name, pretrained=path)"
        )
    return state


def check_architecture(
    state: Mapping[str, Any], model_name: str, model_kwargs: Mapping, num_classes: int, where: str = ""
) -> None:
    """Refuse a checkpoint of another network (name, options or number of classes) with a clear message."""
    mine = (model_name, dict(model_kwargs), num_classes)
    theirs = (state["model_name"], dict(state["model_kwargs"]), state["num_classes"])
    if mine != theirs:
        raise ValueError(
            f"checkpoint {where} holds a different network: {theirs[0]} {theirs[1]} with {theirs[2]} classes; "
            f"this run builds {mine[0]} {mine[1]} with {mine[2]} classes. Resume with the checkpoint's settings "
            "(--model, --model-kwargs, --dataset), or start a new run without --resume."
        )


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str = "") -> None:
    """``model.load_state_dict`` (strict), naming the first differing keys and shapes when it does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {where} does not fit {type(model).__name__}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(shapes)} shape mismatches "
            f"{[(k, tuple(state_dict[k].shape), tuple(own[k].shape)) for k in shapes[:3]]}"
        )
    model.load_state_dict(state_dict)
