"""A whole training run: ``run(recipe_or_config, **overrides) -> RunResult``.

The command line (``python -m torch_impl.train``) and notebooks call the same function::

    from torch_impl.training import run
    result = run("quickstart", model="se_resnet20_cifar", epochs=3, output_dir=None, progress=False)
    result.history[-1]["val_top1_err"]

Under torchrun every process calls ``run``; rank 0 writes the run folder::

    runs/<run_name>/  last.pth  best.pth  metrics.csv  curve.png  tensorboard/  config.yaml
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from ..data import build_dataset
from ..models import create_model
from . import checkpoint as ckpt
from .config import TrainConfig, make_config
from .distributed import DistContext, ShardSampler, barrier, broadcast_object, init_distributed
from .engine import evaluate, train_one_epoch
from .log import RunLog
from .optim import build_optimizer, build_scheduler
from .seeding import configure_determinism, derive_seed, restore_determinism, rng_state, seed_everything, set_rng_state


@dataclass
class RunResult:
    """What a run produced. ``model`` is the trained network (unwrapped, on its device, eval mode)."""

    config: TrainConfig
    history: list[dict[str, float]]
    model: nn.Module
    run_dir: Path | None
    wall_time_s: float
    num_classes: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    @property
    def best(self) -> dict[str, float]:
        return min(self.history, key=lambda r: r["val_top1_err"]) if self.history else {}

    @property
    def chance_top1_err(self) -> float:
        return 100.0 * (1 - 1 / self.num_classes)


def default_workers(world_size: int = 1) -> int:
    """0 on machines with <= 2 cores (loader processes would only steal the training's cores), else up to 8."""
    cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return 0 if cores <= 2 else min(8, max(1, cores // max(local, 1) - 1))


def config_for_resume(resume: str | Path, **overrides) -> TrainConfig:
    """The checkpoint's own configuration with ``overrides`` on top, so ``--resume DIR`` alone suffices."""
    state = ckpt.load_checkpoint(resume)
    saved = {k: v for k, v in state["config"].items() if k not in ("resume", "stop_after_epochs")}
    return make_config(saved, **overrides, resume=str(resume))


def run(config: str | Path | Mapping | TrainConfig | None = None, **overrides) -> RunResult:
    """Train (or resume) one run; see the module docstring. ``config``: a recipe name or file, a mapping
    or a TrainConfig (None: ``quickstart``); ``overrides``: TrainConfig fields."""
    if config is None and overrides.get("resume"):
        cfg = config_for_resume(**overrides)
    else:
        cfg = make_config(config, **overrides)
    owns_group = not torch.distributed.is_initialized()
    ctx = init_distributed(cfg.device)
    # Global settings this run changes are put back afterwards (a notebook or test goes on running).
    threads = torch.get_num_threads()
    determinism = configure_determinism(cfg.deterministic)
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return _run(cfg, ctx)
    finally:
        restore_determinism(determinism)
        torch.set_num_threads(threads)
        if owns_group and ctx.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run_dir(cfg: TrainConfig, ctx: DistContext) -> Path | None:
    """The run folder: the resumed checkpoint's, else a fresh ``<output_dir>/<run_name>[-N]`` (rank 0 decides)."""
    if cfg.resume:
        return ckpt.resolve_checkpoint_path(cfg.resume).parent
    if cfg.output_dir is None:
        return None
    run_dir = None
    if ctx.is_main:
        base = Path(cfg.output_dir) / (cfg.run_name or f"{cfg.recipe}-{cfg.model}")
        run_dir, n = base, 1
        while run_dir.exists() and any(run_dir.iterdir()):
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
        run_dir.mkdir(parents=True, exist_ok=True)
    return broadcast_object(run_dir, ctx)


def _loaders(cfg: TrainConfig, ctx: DistContext):
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({ctx.world_size})")
    common = dict(data_dir=cfg.data_dir, image_size=cfg.image_size, data_seed=cfg.data_seed)
    if ctx.is_main and cfg.download:
        build_dataset(cfg.dataset, "train", download=True, **common)  # fetch once, before the others read
    barrier(ctx)
    train_set = build_dataset(cfg.dataset, "train", samples=cfg.train_samples, **common)
    val_set = build_dataset(cfg.dataset, "val", samples=cfg.val_samples, **common)
    workers = default_workers(ctx.world_size) if cfg.workers is None else cfg.workers
    batch = cfg.batch_size // ctx.world_size
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    generator = torch.Generator()  # re-seeded every epoch; seeds the loader's worker processes
    pin = ctx.device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        drop_last=True,
        generator=generator,
    )
    eval_batch = (cfg.eval_batch_size or 2 * cfg.batch_size) // ctx.world_size or 1
    val_loader = DataLoader(
        val_set,
        batch_size=eval_batch,
        sampler=ShardSampler(len(val_set), ctx.rank, ctx.world_size),
        num_workers=workers,
        pin_memory=pin,
    )
    steps = len(train_loader) if cfg.steps_per_epoch is None else min(cfg.steps_per_epoch, len(train_loader))
    if steps == 0:
        raise ValueError(
            f"the training set ({len(train_set)} images, {len(sampler)} per process) is smaller than one batch "
            f"({batch} per process): lower --batch-size or use more data"
        )
    return train_set, train_loader, sampler, generator, val_loader, steps


def _run(cfg: TrainConfig, ctx: DistContext) -> RunResult:
    start = time.perf_counter()
    seed_everything(cfg.seed)  # same on every rank: identical initial weights
    state = ckpt.load_checkpoint(cfg.resume) if cfg.resume else None
    run_dir = _run_dir(cfg, ctx)

    train_set, train_loader, sampler, generator, val_loader, steps = _loaders(cfg, ctx)
    num_classes = len(train_set.classes)
    net = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    if state is not None:
        ckpt.check_architecture(state, cfg.model, cfg.model_kwargs, num_classes, where=str(cfg.resume))
        ckpt.load_model_state(net, state["model"], where=str(cfg.resume))
    net.to(ctx.device)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    if cfg.sync_bn and ctx.distributed:
        if ctx.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm has no CPU version)")
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    model: nn.Module = net
    if ctx.distributed:
        model = DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)

    optimizer = build_optimizer(net, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.amp == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, start_epoch = list(state["history"]), int(state["epoch"])

    title = f"{cfg.model} on {cfg.dataset}"
    log = RunLog(run_dir, ctx.is_main, cfg.tensorboard, start_epoch, title, chance=100.0 * (1 - 1 / num_classes))
    if ctx.is_main and run_dir is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log.info(
        f"{cfg.recipe}: {cfg.model} ({sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters) on {cfg.dataset} "
        f"({len(train_set)} train / {len(val_loader.dataset)} val images, {num_classes} classes), "
        f"{ctx.world_size} process(es) on {ctx.device.type}, {steps} steps/epoch"
        + (f", resuming after epoch {start_epoch}" if start_epoch else "")
        + (f"; outputs in {run_dir}" if run_dir else "")
    )

    best = min((r["val_top1_err"] for r in history), default=float("inf"))
    epochs_here = 0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.stop_after_epochs is not None and epochs_here >= cfg.stop_after_epochs:
                log.info(
                    f"stopping after {epochs_here} epoch(s) as asked"
                    + (f"; continue with --resume {run_dir}" if run_dir else "")
                )
                break
            t0 = time.perf_counter()
            epoch_seed = derive_seed(cfg.seed, epoch, ctx.rank)
            seed_everything(epoch_seed)
            generator.manual_seed(epoch_seed)
            sampler.set_epoch(epoch)
            tag = f"epoch {epoch + 1}/{cfg.epochs}"
            lr = optimizer.param_groups[0]["lr"]
            train = train_one_epoch(
                model,
                train_loader,
                steps,
                optimizer,
                scheduler,
                scaler,
                criterion,
                ctx,
                cfg.amp,
                cfg.channels_last,
                cfg.progress,
                desc=f"train {tag}",
            )
            val = evaluate(
                model, val_loader, ctx, criterion, cfg.amp, cfg.channels_last, cfg.progress, desc=f"val {tag}"
            )
            history.append({
                "epoch": epoch + 1, "lr": lr,
                "train_loss": train["loss"], "train_top1_err": train["top1_err"],
                "val_loss": val["loss"], "val_top1_err": val["top1_err"], "val_top5_err": val["top5_err"],
                "epoch_time_s": time.perf_counter() - t0,
            })  # fmt: skip
            epochs_here += 1
            if ctx.is_main and run_dir is not None:
                state_now = {
                    "model_name": cfg.model, "model_kwargs": dict(cfg.model_kwargs), "num_classes": num_classes,
                    "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "epoch": epoch + 1, "rng": rng_state(), "config": cfg.to_dict(), "history": history,
                    "classes": list(train_set.classes),
                }  # fmt: skip
                ckpt.save_checkpoint(state_now, run_dir / ckpt.LAST)
                if history[-1]["val_top1_err"] < best:
                    ckpt.save_checkpoint(state_now, run_dir / ckpt.BEST)
            best = min(best, history[-1]["val_top1_err"])
            log.epoch_end(history, cfg.epochs)
            barrier(ctx)
    finally:
        log.close()

    net.eval()
    result = RunResult(cfg, history, net, run_dir, time.perf_counter() - start, num_classes)
    if ctx.is_main and history:
        print(summary_line(result), flush=True)
    return result


def summary_line(result: RunResult) -> str:
    cfg, last, best = result.config, result.final, result.best
    return (
        f"{cfg.recipe}: {cfg.model} on {cfg.dataset}, {last['epoch']}/{cfg.epochs} epochs, {result.wall_time_s:.1f} s: "
        f"val top-1 error {last['val_top1_err']:.2f}% (chance {result.chance_top1_err:.2f}%), "
        f"top-5 error {last['val_top5_err']:.2f}%; best top-1 error {best['val_top1_err']:.2f}% at epoch {best['epoch']}"
        + (f"; outputs in {result.run_dir}" if result.run_dir else "")
    )
