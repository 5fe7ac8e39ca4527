"""Input checks shared by every attention module: a clear ValueError, never a silent broadcast."""

from __future__ import annotations

import torch


def check_pair(name: str, residual: torch.Tensor, shortcut: torch.Tensor, channels: int) -> None:
    """Raise ValueError unless residual and shortcut are 4-D, of one shape, with ``channels`` channels."""
    if residual.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D residual (N, C, H, W), got shape {tuple(residual.shape)}")
    if shortcut.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D shortcut (N, C, H, W), got shape {tuple(shortcut.shape)}")
    if residual.shape != shortcut.shape:
        raise ValueError(
            f"{name}: residual and shortcut must have one shape, got {tuple(residual.shape)} "
            f"and {tuple(shortcut.shape)}"
        )
    if residual.shape[1] != channels:
        raise ValueError(f"{name}: built for C={channels} channels, got input with {residual.shape[1]}")
