"""A checksum of everything a checkpoint holds, stored at save and verified at load.

``torch.load`` reads a file whose tensor bytes were damaged (a flipped bit on disk, a truncated copy
patched up, a bad transfer) without complaint: the network then computes something else. A training
checkpoint therefore stores ``checksum = {"sha256": <hex>}`` of its contents, computed by
``state_checksum`` over every tensor's dtype, shape and bytes and every other value's ``repr``, in
the mapping's order; ``verify_checksum`` recomputes it after loading and names the file when it
differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

CHECKSUM_KEY = "checksum"
ALGORITHM = "sha256"


class ChecksumError(ValueError):
    """The file's contents are not what was saved."""


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        h.update(f"M{len(obj)}".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())  # a tuple and a list of the same items hash alike
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_checksum(state: Mapping[str, Any]) -> str:
    """The hex digest of ``state`` without its own ``checksum`` entry."""
    h = hashlib.new(ALGORITHM)
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def with_checksum(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``state`` with its checksum added (what ``save_checkpoint`` writes)."""
    state = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    return {**state, CHECKSUM_KEY: {ALGORITHM: state_checksum(state)}}


def verify_checksum(state: Mapping[str, Any], path: str | Path) -> None:
    """Raise ChecksumError naming ``path`` when ``state`` does not hash to its stored checksum."""
    stored = state.get(CHECKSUM_KEY)
    if not isinstance(stored, Mapping) or not isinstance(stored.get(ALGORITHM), str):
        raise ChecksumError(
            f"checkpoint {path} has no {ALGORITHM} checksum (written by an older version, or the entry was "
            "damaged); it cannot be verified"
        )
    found = state_checksum(state)
    if found != stored[ALGORITHM]:
        raise ChecksumError(
            f"checkpoint {path} is corrupt: its contents hash to {ALGORITHM} {found[:16]}..., not the "
            f"{stored[ALGORITHM][:16]}... stored when it was saved (the file changed on disk or in transfer); "
            "use another copy, or the run's other checkpoint (last.pth / best.pth)"
        )
