"""The shapes classification task in ImageNet's role: pre-train a detection run's own backbone.

The paper's detectors start from ImageNet classifiers of each backbone (section 4.1); none can be
downloaded here, and from scratch the detectors spend most of a CPU run learning what a star or a
cross looks like (docs/results/experiments/detection/README.md). With ``PRETRAIN.EPOCHS > 0`` a run
first trains the bottom-up ResNet of its own config (same attention, width, norm) with a global-pool
classifier on ``torch_impl.data.shapes`` single-shape images, then starts detection from it. The
keys are ``PRETRAIN.*`` (``detectron2_ext.config.add_pretrain_config``).

The weights go to ``pretrain_dir(cfg)/backbone.pth`` under detectron2's own names
(``backbone.bottom_up.res2.0.conv1.weight``...), the record to ``record.json`` beside them. That folder
is ``OUTPUT_DIR/pretrain``, or with ``PRETRAIN.CACHE_DIR`` set ``CACHE_DIR/<digest of the settings>``,
which every run with the same backbone, seeds and ``PRETRAIN`` settings shares (a Faster and a Mask
R-CNN of one backbone and seed pre-train once, as both would start from one ImageNet classifier).
An interrupted pre-training resumes from its last epoch (``last.pth``); a finished one is reused after
its recorded settings are checked against the run's; runs side by side take turns through a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from torch_impl.atomic import write_bytes, write_text
from torch_impl.data.shapes import SHAPE_CLASSES, ShapesClassification

WEIGHTS, RECORD, LAST = "backbone.pth", "record.json", "last.pth"
PREFIX = "backbone.bottom_up."  # where the FPN detectors keep the ResNet


def classifier_cfg(cfg):
    """The detector's config as the classifier trains it: its last stage out, nothing frozen, and BN
    where the detector has FrozenBN (as an ImageNet classifier trains the norms a detector then freezes;
    FrozenBN keeps BN's weight, bias and running statistics under the same names)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    for node in (cfg.MODEL.RESNETS, cfg.MODEL.AFF3D):
        if node.NORM == "FrozenBN":
            node.NORM = "BN"
    return cfg


class Classifier(nn.Module):
    """The config's bottom-up ResNet, its last stage average-pooled into a linear classifier."""

    def __init__(self, cfg):
        super().__init__()
        from detectron2.layers import ShapeSpec

        from .backbone import build_aff3d_resnet_backbone

        cfg = classifier_cfg(cfg)
        self.bottom_up = build_aff3d_resnet_backbone(cfg, ShapeSpec(channels=3))
        self.fc = nn.Linear(self.bottom_up.output_shape()["res5"].channels, len(SHAPE_CLASSES))
        # the detector's input: 0-255 pixels in INPUT.FORMAT's channel order, then (x - mean) / std
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        self.register_buffer("mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) RGB in [0, 1] -> logits (N, classes)."""
        x = images.flip(1) if self.bgr else images
        x = (x * 255 - self.mean) / self.std
        features = self.bottom_up(x)["res5"]
        return self.fc(features.mean(dim=(2, 3)))


def _images(cfg, split: str, length: int) -> torch.Tensor:
    data = ShapesClassification(split, cfg.PRETRAIN.IMAGE_SIZE, length, cfg.DATASETS.SHAPES.SEED, cache=False)
    images, labels = zip(*(data[i] for i in range(length)))
    return torch.stack(images), torch.tensor(labels)


def _lr(cfg, step: int, steps_per_epoch: int) -> float:
    total, warmup = cfg.PRETRAIN.EPOCHS * steps_per_epoch, steps_per_epoch
    if step < warmup:
        return cfg.PRETRAIN.BASE_LR * (step + 1) / warmup
    return cfg.PRETRAIN.BASE_LR * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def _accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    model.eval()
    correct = sum(
        int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    model.train()
    return correct / len(images)


def _save(path: Path, obj) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def settings(cfg) -> dict:
    """What decides the pre-trained weights: the backbone's keys, the input's normalisation, the seeds
    and ``PRETRAIN`` (less where it is kept). Plain JSON values, compared on reuse."""
    cfg = classifier_cfg(cfg)  # a BN and a FrozenBN detector of one backbone share one pre-training
    resnets = {k: v for k, v in cfg.MODEL.RESNETS.items() if k != "OUT_FEATURES"}  # always res5 here
    chosen = {"MODEL.RESNETS": resnets, "MODEL.AFF3D": dict(cfg.MODEL.AFF3D),
              "MODEL.PIXEL_MEAN": cfg.MODEL.PIXEL_MEAN, "MODEL.PIXEL_STD": cfg.MODEL.PIXEL_STD,
              "INPUT.FORMAT": cfg.INPUT.FORMAT, "SEED": cfg.SEED, "DATASETS.SHAPES.SEED": cfg.DATASETS.SHAPES.SEED,
              "PRETRAIN": {k: v for k, v in cfg.PRETRAIN.items() if k != "CACHE_DIR"}}  # fmt: skip
    return json.loads(json.dumps(chosen, sort_keys=True))  # tuples as lists: as a record reads back


def pretrain_dir(cfg) -> Path:
    """Where the run's pre-training is kept: its own ``OUTPUT_DIR/pretrain``, or the shared cache's entry."""
    if not cfg.PRETRAIN.CACHE_DIR:
        return Path(cfg.OUTPUT_DIR) / "pretrain"
    digest = hashlib.sha256(json.dumps(settings(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.PRETRAIN.CACHE_DIR) / digest


@contextmanager
def _lock(out: Path):
    """One process at a time pre-trains into ``out``; the next one waits, then finds it finished."""
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SettingsMismatch(ValueError):
    """A kept pre-training was made with other settings than the run's."""


def _check_settings(recorded: dict, cfg, path: Path) -> None:
    if recorded != settings(cfg):
        raise SettingsMismatch(f"error: {path} was pre-trained with other settings than this run's; "
                         f"expected {settings(cfg)}, found {recorded}: remove it or change PRETRAIN.CACHE_DIR")  # fmt: skip


def pretrain(cfg) -> Path:
    """Train the classifier of ``cfg`` (see the module's docstring); return the backbone weights' path."""
    out = pretrain_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        return _pretrain(cfg, out)


def _pretrain(cfg, out: Path) -> Path:
    if (out / WEIGHTS).exists() and (out / RECORD).exists():
        _check_settings(json.loads((out / RECORD).read_text()).get("settings"), cfg, out / RECORD)
        return out / WEIGHTS
    p = cfg.PRETRAIN
    torch.manual_seed(cfg.SEED)
    device = torch.device(cfg.MODEL.DEVICE)  # the detector's device: all images fit on it at once
    model = Classifier(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.BASE_LR, weight_decay=p.WEIGHT_DECAY)
    train_x, train_y = (t.to(device) for t in _images(cfg, "train", p.IMAGES))
    val_x, val_y = (t.to(device) for t in _images(cfg, "val", p.VAL_IMAGES))
    steps_per_epoch = p.IMAGES // p.BATCH_SIZE  # the last partial batch is dropped: BN sees full batches
    history, epoch, wall = [], 0, 0.0
    if (out / LAST).exists():  # plain tensors and numbers: nothing in it executes
        state = torch.load(out / LAST, map_location="cpu", weights_only=True)
        _check_settings(json.loads(state["settings"]), cfg, out / LAST)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, epoch, wall = state["history"], state["epoch"], state["wall_time_s"]
    while epoch < p.EPOCHS:
        start = time.perf_counter()
        order = torch.randperm(p.IMAGES, generator=torch.Generator().manual_seed(cfg.SEED * 1000 + epoch)).to(device)
        losses = []
        for i in range(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = _lr(cfg, epoch * steps_per_epoch + i, steps_per_epoch)
            batch = order[i * p.BATCH_SIZE : (i + 1) * p.BATCH_SIZE]
            loss = F.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if not math.isfinite(sum(losses)):
            raise FloatingPointError(f"pre-training loss is not finite in epoch {epoch + 1}; lower PRETRAIN.BASE_LR")
        epoch += 1
        val_accuracy = _accuracy(model, val_x, val_y, 256)
        wall += time.perf_counter() - start
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_accuracy": val_accuracy})
        print(
            f"pretrain epoch {epoch}/{p.EPOCHS}: loss {history[-1]['train_loss']:.4f}, val accuracy {val_accuracy:.4f}"
        )
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "epoch": epoch,
            "wall_time_s": wall,
            "settings": json.dumps(settings(cfg)),
        }
        _save(out / LAST, state)
    weights = {PREFIX + k: v.cpu() for k, v in model.bottom_up.state_dict().items()}
    _save(out / WEIGHTS, {"model": weights, "__author__": "detectron2_ext.pretrain", "matching_heuristics": False})
    record = {"epochs": p.EPOCHS, "images": p.IMAGES, "val_images": p.VAL_IMAGES, "image_size": p.IMAGE_SIZE,
              "val_accuracy": history[-1]["val_accuracy"], "wall_time_s": wall, "history": history,
              "trained_by": str(cfg.OUTPUT_DIR), "settings": settings(cfg)}  # fmt: skip
    write_text(out / RECORD, json.dumps(record, indent=1) + "\n")
    (out / LAST).unlink(missing_ok=True)
    return out / WEIGHTS
