"""Top-1 / top-5 error of a trained checkpoint: ``python -m torch_impl.evaluate --checkpoint PATH``.

    python -m torch_impl.evaluate --checkpoint runs/quickstart-aff3d_resnet20_cifar/best.pth
    python -m torch_impl.evaluate --checkpoint best.pth --data-dir /data/imagenet     # data moved
    torchrun --nproc_per_node 8 -m torch_impl.evaluate --checkpoint best.pth --data-dir /data/imagenet

The network, data set and evaluation transform come from the checkpoint's configuration; flags
override where the data lives and how the evaluation runs. The checkpoint's checksum is verified,
and its class names must be the data set's (the same labels in the same order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .cli import exit_on_user_error
from .data import build_dataset
from .models import create_model
from .training import checkpoint as ckpt
from .training.distributed import ShardSampler, init_distributed
from .training.engine import evaluate
from .training.runner import default_workers


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    amp: str = "none",
    channels_last: bool | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Loss and top-1/top-5 error (%) of ``checkpoint`` on its data set's validation split."""
    state = ckpt.load_checkpoint(checkpoint)
    cfg = state["config"]
    if data_dir is not None and cfg["dataset"] == "shapes":
        raise ValueError(
            f"--data-dir does not apply: {checkpoint} was trained on the built-in shapes data set, which is "
            "generated from the checkpoint's settings"
        )
    ctx = init_distributed(device)
    val_set = build_dataset(
        cfg["dataset"], "val", data_dir=data_dir or cfg["data_dir"], image_size=cfg["image_size"],
        samples=cfg["val_samples"], data_seed=cfg["data_seed"],
    )  # fmt: skip
    where = f"the {cfg['dataset']} validation set" + (f" at {data_dir or cfg['data_dir']}" if cfg["data_dir"] else "")
    if len(val_set.classes) != state["num_classes"]:
        raise ValueError(
            f"the checkpoint's network has {state['num_classes']} classes, {where} has {len(val_set.classes)}"
        )
    check_class_names(state.get("classes"), list(val_set.classes), where)
    model = create_model(state["model_name"], num_classes=state["num_classes"], **state["model_kwargs"])
    ckpt.load_model_state(model, state["model"], where=str(checkpoint))
    channels_last = cfg["channels_last"] if channels_last is None else channels_last
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(
        val_set, batch_size=batch_size, sampler=ShardSampler(len(val_set), ctx.rank, ctx.world_size),
        num_workers=default_workers(ctx.world_size) if workers is None else workers, pin_memory=ctx.device.type == "cuda",
    )  # fmt: skip
    metrics = evaluate(model, loader, ctx, amp=amp, channels_last=channels_last, progress=progress)
    metrics.update(model=state["model_name"], dataset=cfg["dataset"], epoch=state["epoch"], is_main=ctx.is_main)
    return metrics


def check_class_names(trained: list[str] | None, data: list[str], where: str) -> None:
    """Refuse a data set whose labels name other classes than the network was trained on (or in another order)."""
    if trained is None:  # a checkpoint written before class names were stored
        return
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(trained, data)) if a != b]
    if differ:
        shown = ", ".join(f"label {i}: {a!r} vs {b!r}" for i, a, b in differ[:3])
        raise ValueError(
            f"the checkpoint's classes are not those of {where}: {len(differ)} of {len(data)} labels differ "
            f"({shown}); evaluate on the data set the network was trained on"
        )


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torch_impl.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a .pth written by torch_impl.train, or its run folder")
    parser.add_argument("--data-dir", default=None, help="where the data set is (default: as in the checkpoint)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.workers is not None and args.workers < 0):
        parser.error(f"--batch-size must be >= 1 and --workers >= 0, got {args.batch_size} and {args.workers}")
    m = evaluate_checkpoint(
        args.checkpoint,
        args.data_dir,
        args.batch_size,
        args.workers,
        args.device,
        args.amp,
        args.channels_last,
        args.progress,
    )
    if m["is_main"]:
        print(
            f"{m['model']} (epoch {m['epoch']}) on {m['dataset']} val, {m['count']} images: "
            f"top-1 error {m['top1_err']:.2f}%, top-5 error {m['top5_err']:.2f}%, loss {m['loss']:.4f}"
        )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
