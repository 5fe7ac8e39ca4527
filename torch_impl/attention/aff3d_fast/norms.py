"""Batch norm inside the fast path: which norms it covers, and their statistics as nn.BatchNorm2d has them.

Every norm the fast path accepts is, for one call, a per-channel affine map x -> scale x + shift
(``algebra.fold_bn``) whose (mean, var) are either

    running statistics    nn.BatchNorm2d / SyncBatchNorm in eval mode, and frozen BN (detectron2's
                          and torchvision's FrozenBatchNorm2d) always: the map is fixed and folds;
    batch statistics      nn.BatchNorm2d in training: the moments of this batch over (N, H, W), and
                          the running statistics updated exactly as ``nn.BatchNorm2d`` does.

``batch_statistics`` is the one place that chooses between the two, computes the moments and
updates the running averages. Norms it does not cover (``unsupported_reason``) make the dispatch
take the straightforward path, which runs the norm modules themselves.
"""

from __future__ import annotations

import sys
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .algebra import affine, fold_bn

# ---------------------------------------------------------------------------------------------
# Which norms
# ---------------------------------------------------------------------------------------------


_TYPES: dict[tuple[str, bool], tuple[type, ...]] = {}  # (kind, detectron2 imported) -> norm classes


def _types(kind: str) -> tuple[type, ...]:
    """The frozen or synchronised batch norms in use: PyTorch's/torchvision's, and detectron2's once
    detectron2 is imported (it is never imported from here)."""
    d2 = sys.modules.get("detectron2.layers.batch_norm")
    key = (kind, d2 is not None)
    if key not in _TYPES:
        if kind == "frozen":
            from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

            types: tuple[type, ...] = (TorchvisionFrozenBN,) + ((d2.FrozenBatchNorm2d,) if d2 else ())
        else:  # reduce their statistics across processes in training
            types = (nn.SyncBatchNorm,) + ((d2.NaiveSyncBatchNorm,) if d2 else ())
        _TYPES[key] = types
    return _TYPES[key]


def is_frozen(bn: nn.Module | None) -> bool:
    """A frozen BN: weight, bias and statistics are buffers; always the affine map of its statistics."""
    return bn is not None and isinstance(bn, _types("frozen"))


def unsupported_reason(bn: nn.Module | None) -> str | None:
    """None where the fast path computes this norm exactly; else why it does not."""
    if bn is None or isinstance(bn, nn.Identity) or type(bn) is nn.BatchNorm2d or is_frozen(bn):
        return None
    name = type(bn).__name__
    if isinstance(bn, _types("sync")):
        if not uses_batch_stats(bn):
            return None  # running statistics: the same affine map as nn.BatchNorm2d in eval
        return (f"{name} in training reduces its batch statistics across processes; the fast path's "
                "batch statistics are this process's")
    if isinstance(bn, nn.GroupNorm):
        return (f"{name} normalises each sample over channel groups; the fast path derives F_ex's "
                "second normalisation from batch statistics of the hidden map, which GroupNorm does not use")
    return f"{name} is not a norm the fast path knows (nn.BatchNorm2d, frozen BN, synchronised BN in eval)"


def norm_channels(bn: nn.Module) -> int:
    """The number of channels a norm module normalises."""
    return int(bn.num_features) if hasattr(bn, "num_features") else int(bn.weight.shape[0])


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def uses_batch_stats(bn: nn.Module) -> bool:
    """Whether ``bn`` normalises with this batch's moments (as ``_BatchNorm.forward`` decides)."""
    if type(bn) is not nn.BatchNorm2d and is_frozen(bn):
        return False
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def channel_moments(x: torch.Tensor):
    """(mean, biased var) per channel over (N, H, W), in float32 or wider (differentiable)."""
    low = x.dtype in (torch.float16, torch.bfloat16)
    differentiate = torch.is_grad_enabled() and x.requires_grad
    if x.is_cuda and low and not differentiate:
        mean, invstd = torch.batch_norm_stats(x, 0.0)  # float32 statistics of a 16-bit map, one pass
        return mean, invstd.pow(-2)
    # (batch_norm_stats has no derivative: under autograd, as torch.compile traces training, float32 var_mean)
    var, mean = torch.var_mean(x.float() if low else x, dim=(0, 2, 3), correction=0)
    return mean, var


def check_batch_count(count: int, shape) -> None:
    """Batch statistics need two values per channel (what nn.BatchNorm2d says, for the same input)."""
    if count <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(shape)}")


def batch_statistics(bn: nn.Module, x: torch.Tensor, update: bool,
                     moments: Callable[[torch.Tensor], tuple] = channel_moments, dtype: torch.dtype | None = None):
    """The (mean, biased var) that ``bn`` normalises the map behind ``x`` with, as ``dtype`` (default x's).

    Running statistics where ``bn`` uses them. Otherwise ``moments(x)`` over the N * H * W positions
    of ``x`` (by default x's own; the table gate passes moments it computes from sums of M_s),
    and with ``update`` the running averages move as ``nn.BatchNorm2d`` moves them (``update=False``
    for the re-run in backward).
    """
    dtype = x.dtype if dtype is None else dtype
    if not uses_batch_stats(bn):
        return bn.running_mean.to(dtype), bn.running_var.to(dtype)
    count = x.numel() // x.shape[1]
    check_batch_count(count, x.shape)
    mean, var = moments(x)
    if update:
        _update_running_stats(bn, mean, var, count)
    return mean.to(dtype), var.to(dtype)


def _momentum_step(bn: nn.BatchNorm2d) -> float | None:
    """Count one training batch like ``_BatchNorm.forward`` and return the averaging factor (None: no update)."""
    if not (bn.training and bn.track_running_stats):
        return None
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """running <- (1 - m) running + m batch, with the unbiased variance, as nn.BatchNorm2d."""
    momentum = _momentum_step(bn)
    if momentum is None or bn.running_mean is None:
        return
    bn.running_mean.mul_(1 - momentum).add_(mean.detach().to(bn.running_mean.dtype), alpha=momentum)
    unbiased = var.detach().to(bn.running_var.dtype) * (count / (count - 1))
    bn.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


# ---------------------------------------------------------------------------------------------
# Applying a norm
# ---------------------------------------------------------------------------------------------


def norm_small_map(bn: nn.Module, x: torch.Tensor, update: bool, weight=None, bias=None) -> torch.Tensor:
    """BN on a small map (1 or C/d channels) as plain tensor ops: scale x + shift.

    ``weight``/``bias`` default to the module's (passed explicitly when re-run under autograd).
    Written out rather than F.batch_norm because cuDNN's kernel for a one-channel map is slow (it
    parallelises over channels), and autograd through ``var_mean`` gives batch norm's exact gradient.
    """
    if isinstance(bn, nn.Identity):
        return x
    weight = bn.weight if weight is None else weight
    bias = bn.bias if bias is None else bias
    mean, var = batch_statistics(bn, x, update)
    return affine(x, *fold_bn(weight, bias, mean, var, bn.eps))


def spatial_norm(bn: nn.Module, x: torch.Tensor, update: bool) -> torch.Tensor:
    """F_conv's norm on the one-channel map M_s: a BatchNorm2d as tensor ops (``norm_small_map``:
    PyTorch's CPU batch-norm backward is slow on one channel, 22 ms of a 340 ms training step of the
    notebooks' 3D-AFF-ResNet-20, measured); other norms called. ``update=False`` leaves the running
    statistics where they are."""
    if type(bn) is nn.BatchNorm2d:
        return norm_small_map(bn, x, update)
    if update or not bn.training:
        return bn(x)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
