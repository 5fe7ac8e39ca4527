"""A whole training run: ``run(recipe_or_config, **overrides) -> RunResult``.

The command line (``python -m torch_impl.train``) and notebooks call the same function::

    from torch_impl.training import run
    result = run("quickstart", model="se_resnet20_cifar", epochs=3, output_dir=None, progress=False)
    result.final["val_top1_err"]  # the last epoch's (validated every eval_every-th epoch and the last)

Under torchrun every process calls ``run``; rank 0 writes the run folder::

    runs/<run_name>/  last.pth  best.pth  metrics.csv  curve.png  tensorboard/  config.yaml  .lock

Rank 0 holds the folder's lock for the whole run (``run_folder``): one writer per folder. Every file
is written atomically. At the end of an epoch last.pth is written first (it is what a
resume continues from), then best.pth, then metrics.csv and the curve; a resume brings best.pth and
metrics.csv back in line with last.pth, so after a kill at any moment and a resume the three agree.
Ctrl-C or SIGTERM raise ``TrainingInterrupted``, whose message says how to resume; one that arrives
while an epoch is being written waits until its files are (``signals.deferred_signals``). A non-finite loss,
weight or optimizer state raises FloatingPointError before its epoch is saved: last.pth always holds
a state that training can go on from (``--resume DIR --lr LOWER``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..atomic import write_bytes, write_text
from ..data import build_dataset
from ..models import create_model
from . import checkpoint as ckpt
from .config import TrainConfig, make_config
from .distributed import DistContext, ShardSampler, barrier, init_distributed
from .engine import check_finite_losses, check_finite_state, evaluate, train_one_epoch
from .log import RunLog
from .metrics import validated
from .optim import build_optimizer, build_scheduler, rescale_lr
from .run_folder import CONFIG_NAME, best_epoch, check_resume_folder, open_run_folder, repair_run_folder
from .seeding import configure_determinism, derive_seed, restore_determinism, rng_state, seed_everything, set_rng_state
from .signals import deferred_signals


@dataclass
class RunResult:
    """What a run produced. ``model`` is the trained network (unwrapped, on its device, eval mode)."""

    config: TrainConfig
    history: list[dict[str, float]]
    model: nn.Module
    run_dir: Path | None
    wall_time_s: float
    num_classes: int

    @property
    def final(self) -> dict[str, float]:
        """The last epoch that was measured on the validation set (a finished run's last epoch)."""
        measured = validated(self.history)
        return measured[-1] if measured else {}

    @property
    def best(self) -> dict[str, float]:
        measured = validated(self.history)
        return min(measured, key=lambda r: r["val_top1_err"]) if measured else {}

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
    check_resume_folder(resume, overrides)
    state = ckpt.load_checkpoint(resume)
    saved = {k: v for k, v in state["config"].items() if k not in ("resume", "stop_after_epochs")}
    return make_config(saved, **overrides, resume=str(resume))


def run(config: str | Path | Mapping | TrainConfig | None = None, **overrides) -> RunResult:
    """Train (or resume) one run; see the module docstring. ``config``: a recipe name or file, a mapping
    or a TrainConfig (None: ``quickstart``); ``overrides``: TrainConfig fields."""
    if config is None and overrides.get("resume"):
        cfg = config_for_resume(**overrides)
    else:
        if overrides.get("resume"):
            check_resume_folder(overrides["resume"], overrides)
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


@dataclass
class _Loaders:
    train_set: Dataset
    train: DataLoader
    sampler: DistributedSampler
    generator: torch.Generator  # re-seeded every epoch; seeds the loader's worker processes
    val: DataLoader
    steps: int  # optimizer steps per epoch


def _loaders(cfg: TrainConfig, ctx: DistContext) -> _Loaders:
    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({ctx.world_size})")
    common = dict(data_dir=cfg.data_dir, image_size=cfg.image_size, data_seed=cfg.resolved_data_seed)
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
    return _Loaders(train_set, train_loader, sampler, generator, val_loader, steps)


@dataclass
class _Setup:
    """Everything the epoch loop works with, built (and restored from a checkpoint) by ``_build``."""

    net: nn.Module  # the network itself
    model: nn.Module  # what runs the batches: net, or its DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    loaders: _Loaders
    run_dir: Path | None
    log: RunLog
    num_classes: int
    history: list[dict[str, float]]
    saved_epoch: int  # the epochs last.pth holds (0: none yet)


def _check_restored(state: dict, cfg: TrainConfig, net: nn.Module) -> None:
    """Refuse a checkpoint with inf or nan in its state: training from it fails at its first step, whatever
    the learning rate (this version never saves one; an older one saved the state of a diverged run)."""
    bad = ckpt.non_finite_entries(state["model"], state["optimizer"], [n for n, _ in net.named_parameters()])
    if bad:
        raise ValueError(
            f"checkpoint {cfg.resume} holds non-finite values (inf or nan) in {len(bad)} tensor(s), e.g. {bad[:3]}: "
            "the run diverged before it was saved and cannot be continued; start again with a lower --lr"
        )


def _check_model(cfg: TrainConfig) -> None:
    """Build the network on the meta device (no memory, no time): a bad name or option fails before any data."""
    with torch.device("meta"):
        create_model(cfg.model, **cfg.model_kwargs)


def _build(cfg: TrainConfig, ctx: DistContext, run_dir: Path | None) -> _Setup:
    """Everything for the epoch loop; ``run_dir`` is already held (a resume reads last.pth only once
    no other process can write it)."""
    seed_everything(cfg.seed)  # same on every rank: identical initial weights
    state = ckpt.load_checkpoint(cfg.resume) if cfg.resume else None
    loaders = _loaders(cfg, ctx)
    num_classes = len(loaders.train_set.classes)
    net = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    if state is not None:
        ckpt.check_architecture(state, cfg.model, cfg.model_kwargs, num_classes, where=str(cfg.resume))
        ckpt.load_model_state(net, state["model"], where=str(cfg.resume))
        _check_restored(state, cfg, net)
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
    scheduler = build_scheduler(optimizer, cfg, loaders.steps)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.amp == "fp16")
    history: list[dict[str, float]] = []
    start_epoch, old_lr = 0, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        # The restored states hold the checkpoint's lr; a resume with --lr (after a divergence) wants its own.
        old_lr = rescale_lr(optimizer, scheduler, cfg.lr)

    title = f"{cfg.model} on {cfg.dataset}"
    log = RunLog(run_dir, ctx.is_main, cfg.tensorboard, start_epoch, title, chance=100.0 * (1 - 1 / num_classes))
    if ctx.is_main and run_dir is not None:
        write_text(run_dir / CONFIG_NAME, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if state is not None:
            repair_run_folder(run_dir, state, log)
    if old_lr is not None:
        log.info(f"learning rate {old_lr:g} -> {cfg.lr:g}: the restored optimizer and schedule are rescaled by "
                 f"{cfg.lr / old_lr:g} and go on from step {scheduler.last_epoch}")  # fmt: skip
    log.info(
        f"{cfg.recipe}: {cfg.model} ({sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters) on {cfg.dataset} "
        f"({len(loaders.train_set)} train / {len(loaders.val.dataset)} val images, {num_classes} classes), "
        f"{ctx.world_size} process(es) on {ctx.device.type}, {loaders.steps} steps/epoch"
        + (f", resuming after epoch {start_epoch}" if start_epoch else "")
        + (f"; outputs in {run_dir}" if run_dir else "")
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return _Setup(net, model, optimizer, scheduler, scaler, criterion, loaders, run_dir, log, num_classes,
                  history, start_epoch)  # fmt: skip


def _save_epoch(setup: _Setup, cfg: TrainConfig, epoch: int) -> None:
    """Rank 0: last.pth (the commit point of the epoch), then best.pth if the epoch is the best so far."""
    net, history = setup.net, setup.history
    state = {
        "model_name": cfg.model, "model_kwargs": dict(cfg.model_kwargs), "num_classes": setup.num_classes,
        "model": net.state_dict(), "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict(),
        "scaler": setup.scaler.state_dict() if setup.scaler.is_enabled() else None,
        "epoch": epoch, "rng": rng_state(), "config": cfg.to_dict(), "history": history,
        "classes": list(setup.loaders.train_set.classes),
    }  # fmt: skip
    encoded = ckpt.encode_checkpoint(state)  # serialised and checksummed once for both files
    write_bytes(setup.run_dir / ckpt.LAST, encoded)
    setup.saved_epoch = epoch
    if best_epoch(history) == epoch:
        write_bytes(setup.run_dir / ckpt.BEST, encoded)


def _train_epochs(setup: _Setup, cfg: TrainConfig, ctx: DistContext) -> None:
    """The epoch loop: train, evaluate, record, save; from the restored epoch to ``cfg.epochs``."""
    loaders, log = setup.loaders, setup.log
    epochs_here = 0
    for epoch in range(setup.saved_epoch, cfg.epochs):
        if cfg.stop_after_epochs is not None and epochs_here >= cfg.stop_after_epochs:
            log.info(
                f"stopping after {epochs_here} epoch(s) as asked"
                + (f"; continue with --resume {setup.run_dir}" if setup.run_dir else "")
            )
            break
        t0 = time.perf_counter()
        epoch_seed = derive_seed(cfg.seed, epoch, ctx.rank)
        seed_everything(epoch_seed)
        loaders.generator.manual_seed(epoch_seed)
        loaders.sampler.set_epoch(epoch)
        tag = f"epoch {epoch + 1}/{cfg.epochs}"
        lr = setup.optimizer.param_groups[0]["lr"]
        train = train_one_epoch(
            setup.model, loaders.train, loaders.steps, setup.optimizer, setup.scheduler, setup.scaler,
            setup.criterion, ctx, cfg.amp, cfg.channels_last, cfg.progress, desc=f"train {tag}",
        )  # fmt: skip
        epochs_here += 1
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train["loss"], "train_top1_err": train["top1_err"]}
        # An epoch without validation has no val_* keys (the weights do not depend on it: evaluation draws
        # no random number, and each epoch reseeds). The last epoch, of the run or of this call, is measured.
        if validates(cfg, epoch + 1) or epochs_here == cfg.stop_after_epochs:
            val = evaluate(setup.model, loaders.val, ctx, setup.criterion, cfg.amp, cfg.channels_last,
                           cfg.progress, desc=f"val {tag}")  # fmt: skip
            row |= {"val_loss": val["loss"], "val_top1_err": val["top1_err"], "val_top5_err": val["top5_err"]}
        # A diverged epoch is never saved: last.pth keeps the last state that training can go on from.
        measured = {"validation": row["val_loss"]} if "val_loss" in row else {}
        check_finite_losses(tag, training=train["loss"], **measured)
        check_finite_state(setup.net, setup.optimizer, ctx, tag)
        setup.history.append(row | {"epoch_time_s": time.perf_counter() - t0})
        with deferred_signals():  # a stop arriving now waits until the epoch's files are all written
            if ctx.is_main and setup.run_dir is not None:
                _save_epoch(setup, cfg, epoch + 1)
            log.epoch_end(setup.history, cfg.epochs)
        barrier(ctx)


def validates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (1-based) is measured on the validation set: every ``eval_every``-th, and the last."""
    return epoch % cfg.eval_every == 0 or epoch == cfg.epochs


def _run(cfg: TrainConfig, ctx: DistContext) -> RunResult:
    start = time.perf_counter()
    _check_model(cfg)  # before a folder is created
    run_dir, lock = open_run_folder(cfg, ctx)
    try:  # the folder is held until the run ends, however it ends
        setup = _build(cfg, ctx, run_dir)
        try:
            _train_epochs(setup, cfg, ctx)
        except KeyboardInterrupt as err:
            raise TrainingInterrupted(run_dir, setup.saved_epoch, cfg.epochs, ctx.is_main, _signal_name(err)) from err
        except FloatingPointError as err:
            raise FloatingPointError(f"{err}; {_kept(run_dir, setup.saved_epoch)}") from err
        finally:
            setup.log.close()
    finally:
        if lock is not None:
            lock.release()
    setup.net.eval()
    result = RunResult(cfg, setup.history, setup.net, setup.run_dir, time.perf_counter() - start, setup.num_classes)
    if ctx.is_main and setup.history:
        print(summary_line(result), flush=True)
    return result


def _kept(run_dir: Path | None, saved_epoch: int) -> str:
    """What a diverged run leaves to continue from."""
    if run_dir is None:
        return "nothing was saved (output_dir is None)"
    if saved_epoch == 0:
        return "no epoch was saved, nothing to resume"
    return (
        f"nothing of this epoch was saved: {run_dir / ckpt.LAST} keeps epoch {saved_epoch}, the last finite state; "
        f"continue from it with a lower learning rate: python -m torch_impl.train --resume {run_dir} --lr LR"
    )


def _signal_name(err: KeyboardInterrupt) -> str:
    name = err.args[0] if err.args and isinstance(err.args[0], str) else ""
    return name if name.startswith("SIG") else "SIGINT"


class TrainingInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGTERM); ``str()`` says what was saved and how to continue."""

    def __init__(self, run_dir: Path | None, saved_epoch: int, epochs: int, is_main: bool, signal_name: str):
        self.run_dir, self.saved_epoch, self.is_main, self.signal_name = run_dir, saved_epoch, is_main, signal_name
        if run_dir is None:
            what = "nothing was saved (output_dir is None)"
        elif saved_epoch == 0:
            what = f"no epoch was completed, nothing to resume; start again (the folder {run_dir} can be deleted)"
        else:
            what = (
                f"epoch {saved_epoch}/{epochs} is saved; continue with: python -m torch_impl.train --resume {run_dir}"
            )
        super().__init__(f"interrupted by {signal_name}: {what}")


def summary_line(result: RunResult) -> str:
    cfg, last, best = result.config, result.final, result.best
    return (
        f"{cfg.recipe}: {cfg.model} on {cfg.dataset}, {last['epoch']}/{cfg.epochs} epochs, {result.wall_time_s:.1f} s: "
        f"val top-1 error {last['val_top1_err']:.2f}% (chance {result.chance_top1_err:.2f}%), "
        f"top-5 error {last['val_top5_err']:.2f}%; best top-1 error {best['val_top1_err']:.2f}% at epoch {best['epoch']}"
        + (f" ({ckpt.BEST})" if result.run_dir else "")
        + (f"; outputs in {result.run_dir}" if result.run_dir else "")
    )
