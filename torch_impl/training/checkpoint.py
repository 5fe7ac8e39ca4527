"""Checkpoints: written atomically, verified by a checksum, loaded with ``weights_only=True``, checked
against the architecture.

A checkpoint is a dict of tensors and plain values::

    format            CHECKPOINT_FORMAT
    model_name        e.g. "aff3d_resnet20_cifar"
    model_kwargs      the create_model options, e.g. {"reduction": 4}
    num_classes       classifier outputs
    model             the network's state_dict (torchvision key names)
    optimizer, scheduler, scaler        their state_dicts (scaler: None without fp16)
                      (model and optimizer states are finite: a run never saves a diverged state)
    epoch             epochs completed
    rng               every generator's state (see seeding.rng_state)
    config            the run's TrainConfig as a dict
    history           one dict of metrics per completed epoch
    classes           the data set's class names (index = label)
    checksum          {"sha256": ...} of all the above (torch_impl.checksum), verified at every load

Checkpoints of format ``.../1`` predate the checksum; they still load, unverified.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import write_bytes
from ..checksum import verify_checksum, with_checksum

CHECKPOINT_FORMAT = "aff3d-resnet/train-checkpoint/2"
UNVERIFIED_FORMATS = ("aff3d-resnet/train-checkpoint/1",)  # written before checksums: loaded as they are
LAST, BEST = "last.pth", "best.pth"


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` (with its format and checksum) to ``path`` atomically: a crash leaves the old file.

    The checkpoint is serialised in memory first, so a full disk fails as ``OSError`` with the
    reason (ENOSPC) and the path, not as torch's zip writer's "unexpected pos".
    """
    return write_bytes(path, encode_checkpoint(state))


def encode_checkpoint(state: Mapping[str, Any]) -> memoryview:
    """The bytes ``save_checkpoint`` writes (to write one state to several files, encode it once)."""
    buffer = io.BytesIO()
    torch.save(with_checksum(dict(state, format=CHECKPOINT_FORMAT)), buffer)
    return buffer.getbuffer()


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
        raise ValueError(f"cannot read checkpoint {path} with weights_only=True ({load_error_reason(err)})") from err
    return check_loaded(state, path)


def load_error_reason(err: Exception) -> str:
    """The gist of a ``torch.load(weights_only=True)`` failure, on one line.

    (torch's own message suggests ``weights_only=False``, which would run any code the file holds.)
    """
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(Check the documentation|$)", text, re.S)
    reason = " ".join((found.group(1) if found else text).split())
    return f"{type(err).__name__}: {reason}"


def check_loaded(state: Any, path: str | Path) -> dict[str, Any]:
    """``state`` as read from ``path``, after checking its format and verifying its checksum."""
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, *UNVERIFIED_FORMATS):
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not a torch_impl.train checkpoint (expected format {CHECKPOINT_FORMAT!r}, found {found!r}); "
            "for a bare state_dict use create_model(name, pretrained=path)"
        )
    if state["format"] == CHECKPOINT_FORMAT:
        verify_checksum(state, path)
    return state


def non_finite_entries(
    model_state: Mapping[str, Any], optimizer_state: Mapping[str, Any], param_names: list[str] | tuple = ()
) -> list[str]:
    """The floating-point tensors of a model's and an optimizer's state_dict that hold inf or nan, by name.

    ``param_names``: the parameters' names in the optimizer's order, to name its per-parameter state
    (e.g. ``momentum_buffer of fc.weight``). One read of each device for all the tensors on it.
    """
    named = list(model_state.items())
    for index, entry in optimizer_state.get("state", {}).items():
        owner = param_names[index] if isinstance(index, int) and index < len(param_names) else f"parameter {index}"
        named += [(f"{key} of {owner}", value) for key, value in entry.items()]
    floats = [(name, t) for name, t in named if torch.is_tensor(t) and t.is_floating_point()]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(floats):
        by_device.setdefault(t.device, []).append(i)
    bad = []
    for indices in by_device.values():
        finite = torch.stack([torch.isfinite(floats[i][1]).all() for i in indices]).tolist()
        bad += [i for i, ok in zip(indices, finite) if not ok]
    return [floats[i][0] for i in sorted(bad)]


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
