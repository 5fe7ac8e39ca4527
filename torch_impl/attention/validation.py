"""Input checks shared by every attention module: a clear ValueError, never a silent broadcast.

Under ``torch.fx`` symbolic tracing the inputs are Proxies whose shapes and dtypes are unknown, and a
Python ``if`` on them aborts the trace: the checks then step aside (the traced graph runs on real
tensors later, where the layers themselves still reject a wrong shape).
"""

from __future__ import annotations

import torch
import torch.fx._symbolic_trace as _fx_trace

# torch >= 2.5 tells symbolic tracing apart from torch.export (which runs the checks on fake tensors).
_is_fx_tracing = getattr(_fx_trace, "is_fx_symbolic_tracing", None) or _fx_trace.is_fx_tracing


def symbolic_tracing() -> bool:
    """True inside ``torch.fx`` symbolic tracing (torch.fx.symbolic_trace, timm's and torchvision's
    feature extractors): shapes and dtypes are not known, so checks on them cannot run."""
    return _is_fx_tracing()


def check_pair(name: str, residual: torch.Tensor, shortcut: torch.Tensor, channels: int) -> None:
    """Raise ValueError unless residual and shortcut are 4-D floating-point maps of one shape, with
    ``channels`` channels, and (outside autocast, which mixes precisions by design) of one dtype."""
    if symbolic_tracing():
        return
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
    for role, t in (("residual", residual), ("shortcut", shortcut)):
        if not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point {role}, got {t.dtype} (convert with .float())")
    if residual.dtype != shortcut.dtype and not torch.is_autocast_enabled(residual.device.type):
        raise ValueError(
            f"{name}: residual and shortcut must have one dtype, got {residual.dtype} and {shortcut.dtype}"
        )


def check_inputs(name: str, residual: torch.Tensor, shortcut: torch.Tensor, channels: int,
                 param_dtype: torch.dtype) -> None:
    """``check_pair``, and outside autocast the input in the module's own dtype (as nn.Conv2d requires)."""
    check_pair(name, residual, shortcut, channels)
    if symbolic_tracing():
        return
    if residual.dtype != param_dtype and not torch.is_autocast_enabled(residual.device.type):
        raise ValueError(
            f"{name}: input is {residual.dtype} but the module's weights are {param_dtype}; convert one to "
            f"the other (module.to(dtype) or input.to(dtype)), or run under torch.autocast"
        )


def check_batch_for_training(name: str, shape, count: int, where: str) -> None:
    """Batch norm in training needs more than one value per channel; say which layer sees one."""
    if symbolic_tracing():
        return
    if count <= 1:
        raise ValueError(
            f"{name}: Expected more than 1 value per channel when training, got input size {tuple(shape)}: "
            f"{where} normalises over {count} value per channel. Train with a batch of 2 or more "
            f"(or a larger map), or call .eval()"
        )
