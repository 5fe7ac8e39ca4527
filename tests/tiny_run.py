"""The training config the tests share: a run of a few steps on 16 x 16 shapes, with no progress bars
and no TensorBoard (well under a second of training). Each test file overrides what it needs."""

from __future__ import annotations


def tiny_config(out=None, **overrides) -> dict:
    cfg = dict(
        model="aff3d_resnet20_cifar",
        image_size=16,
        train_samples=48,
        val_samples=24,
        epochs=2,
        batch_size=8,
        steps_per_epoch=3,
        output_dir=None if out is None else str(out),
        progress=False,
        tensorboard=False,
    )
    cfg.update(overrides)
    return cfg
