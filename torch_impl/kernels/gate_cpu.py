"""The fused CPU pass of the table gate (not yet compiled: ``enabled`` is False, the PyTorch
specification in ``attention.table_gate`` runs)."""

from __future__ import annotations

import torch


def enabled(t: torch.Tensor) -> bool:
    """Whether the fused pass serves this tensor's call."""
    return False
