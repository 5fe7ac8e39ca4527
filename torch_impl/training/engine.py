"""The two loops: one training epoch, one evaluation pass. Both return metrics reduced over all processes.

And the checks that keep a diverged epoch from being saved: non-finite losses, weights or optimizer state.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import non_finite_entries
from .distributed import DistContext, all_reduce_sum
from .metrics import ErrorMeter

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Optimizer steps between two reads of the non-finite-loss flag. The flag stays on the device, so a
# step does not wait for the GPU to finish; a diverged run is stopped at most this many steps late.
FINITE_CHECK_EVERY = 50


def autocast(device: torch.device, amp: str):
    """Mixed precision for the forward pass: ``"bf16"``, ``"fp16"`` or ``"none"``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def _to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    steps: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    ctx: DistContext,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> dict[str, float]:
    """``steps`` optimizer steps over ``loader``; loss and top-1/top-5 error of the (augmented) batches.

    A non-finite loss raises FloatingPointError naming the first step it occurred at; the check reads
    the device every ``FINITE_CHECK_EVERY`` steps and at the end of the epoch (no host sync per step).
    """
    model.train()
    meter = ErrorMeter()
    show = progress and ctx.is_main
    first_bad = torch.full((), -1, dtype=torch.long, device=ctx.device)  # first step with a non-finite loss
    with tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True, disable=not show) as bar:
        for step, (images, targets) in enumerate(loader):
            if step >= steps:
                break
            images, targets = _to_device(images, targets, ctx.device, channels_last)
            with autocast(ctx.device, amp):
                logits = model(images)
                loss = criterion(logits, targets)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            meter.update(loss, logits, targets)
            bar.update(1)
            if (step + 1) % FINITE_CHECK_EVERY == 0:
                _check_finite(first_bad, ctx, desc)
            if show and step % 10 == 0:  # reading the loss waits for the device: only for the bar
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
    _check_finite(first_bad, ctx, desc)
    return meter.result(ctx)


def _check_finite(first_bad: torch.Tensor, ctx: DistContext, desc: str) -> None:
    """Raise FloatingPointError when some process saw a non-finite loss (every process raises alike)."""
    bad = all_reduce_sum((first_bad >= 0).reshape(1), ctx)
    if bad.item() > 0:
        step = int(first_bad)
        where = f"at step {step}" if step >= 0 else "in another process"
        raise FloatingPointError(
            f"{desc}: the loss became non-finite (inf or nan) {where}; lower --lr or check the data"
        )


def check_finite_losses(desc: str, **losses: float) -> None:
    """Raise FloatingPointError when an epoch's mean loss (already reduced over all processes, so every
    process raises alike) is inf or nan: ``check_finite_losses("epoch 2/3", validation=val["loss"])``."""
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise FloatingPointError(
            f"{desc}: the {' and '.join(bad)} loss is non-finite (inf or nan); lower --lr or check the data"
        )


def check_finite_state(net: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext, desc: str) -> None:
    """Raise FloatingPointError when a floating-point tensor of the network's state (parameters and
    buffers: BN running statistics can overflow while the loss is still finite) or of the optimizer's
    state holds inf or nan; such a state cannot be trained on, so it must never be saved."""
    bad = non_finite_entries(net.state_dict(), optimizer.state_dict(), [name for name, _ in net.named_parameters()])
    if all_reduce_sum(torch.tensor([float(len(bad))]), ctx).item() > 0:
        which = f"{len(bad)} tensor(s), e.g. {bad[:3]}" if bad else "another process's tensors"
        raise FloatingPointError(
            f"{desc}: the weights or the optimizer's state became non-finite (inf or nan) in {which}; lower --lr"
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    ctx: DistContext,
    criterion: nn.Module | None = None,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "val",
) -> dict[str, float]:
    """Loss and top-1/top-5 error (%) over every sample of ``loader`` (summed over all processes)."""
    criterion = criterion or nn.CrossEntropyLoss()
    model.eval()
    meter = ErrorMeter()
    total = len(loader) if hasattr(loader, "__len__") else None
    with tqdm(
        loader, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not (progress and ctx.is_main)
    ) as batches:
        for images, targets in batches:
            images, targets = _to_device(images, targets, ctx.device, channels_last)
            with autocast(ctx.device, amp):
                logits = model(images)
            meter.update(criterion(logits.float(), targets), logits, targets)
    return meter.result(ctx)
