"""The two loops: one training epoch, one evaluation pass. Both return metrics reduced over all processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .distributed import DistContext
from .metrics import ErrorMeter

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    """``steps`` optimizer steps over ``loader``; loss and top-1/top-5 error of the (augmented) batches."""
    model.train()
    meter = ErrorMeter()
    bar = tqdm(total=steps, desc=desc, leave=False, dynamic_ncols=True, disable=not (progress and ctx.is_main))
    for step, (images, targets) in enumerate(loader):
        if step >= steps:
            break
        images, targets = _to_device(images, targets, ctx.device, channels_last)
        with autocast(ctx.device, amp):
            logits = model(images)
            loss = criterion(logits, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{desc}: the loss became {float(loss)} at step {step}; lower --lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        meter.update(loss, logits, targets)
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4g}")
    bar.close()
    return meter.result(ctx)


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
    for images, targets in tqdm(
        loader, total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not (progress and ctx.is_main)
    ):
        images, targets = _to_device(images, targets, ctx.device, channels_last)
        with autocast(ctx.device, amp):
            logits = model(images)
        meter.update(criterion(logits.float(), targets), logits, targets)
    return meter.result(ctx)
