"""SGD with momentum and the recipes' learning-rate schedules, stepped once per optimizer step."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD as in [1] and the paper (momentum, L2 weight decay on every parameter, BN included), or AdamW
    (decoupled weight decay), which learns faster in the first few hundred steps of a short run."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
    )


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step ``step`` (0-based), as a multiple of ``cfg.lr``.

    ``step`` / ``multistep`` change at epoch boundaries ("dropped every 30 epochs"; "divided by 10 at 50 %
    and 75 % of training"); ``cosine`` decays per step to 0 at the end; warm-up overrides the first steps.
    """
    if step < cfg.warmup_steps:
        return cfg.warmup_lr / cfg.lr
    epoch = step // steps_per_epoch
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** (epoch // cfg.lr_step_size)
    if cfg.lr_schedule == "multistep":
        return cfg.lr_gamma ** sum(epoch >= round(m * cfg.epochs) for m in cfg.lr_milestones)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step / (cfg.epochs * steps_per_epoch), 1.0)))
    if cfg.lr_schedule == "constant":
        return 1.0
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    # A closure, not a callable object: LambdaLR then saves only its step count, and the schedule
    # itself always comes from the run's configuration.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, steps_per_epoch))


def rescale_lr(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, lr: float
) -> float | None:
    """After a resume with another ``lr``: move the restored optimizer and schedule to it; return the old lr
    (None when it is the same).

    The restored state_dicts hold the checkpoint's base learning rate (``base_lrs``, the groups'
    ``initial_lr``) and the current one (the groups' ``lr``, ``_last_lr``). The base is scaled by new/old
    and the current rate recomputed from the schedule at its step, so the run goes on exactly as the
    new lr's schedule would be at that step: step, multistep, cosine and constant scale with it, the
    warm-up stays at ``warmup_lr`` (``lr_factor`` takes both from the new configuration).
    """
    old = scheduler.base_lrs[0]
    if old == lr:
        return None
    ratio = lr / old
    scheduler.base_lrs = [lr if base == old else base * ratio for base in scheduler.base_lrs]
    lambdas = getattr(scheduler, "lr_lambdas", None)
    for i, (group, base) in enumerate(zip(optimizer.param_groups, scheduler.base_lrs)):
        group["initial_lr"] = base
        group["lr"] = base * lambdas[i](scheduler.last_epoch) if lambdas else group["lr"] * ratio
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    return old
