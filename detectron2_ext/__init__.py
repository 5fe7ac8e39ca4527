"""detectron2 extension: the 3D-AFF-ResNet(-FPN) backbone for Faster R-CNN and Mask R-CNN.

Importing this package needs no detectron2: the modules that do (``blocks``, ``backbone``,
``data_catalog``, ``train_net``, ``pretrain``'s classifier) load on first use of their names. ``config``,
``convert_checkpoint`` and ``shapes_coco`` work without detectron2.

    from detectron2_ext import add_aff3d_config, build_aff3d_resnet_fpn_backbone  # registers it
"""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS = {
    "add_aff3d_config": "config",
    "add_shapes_config": "config",
    "add_pretrain_config": "config",
    "convert_state_dict": "convert_checkpoint",  # (the module convert_checkpoint is the command line)
    "ShapesCOCOSpec": "shapes_coco",
    "export_shapes_coco": "shapes_coco",
    "AFF3DBottleneckBlock": "blocks",
    "AFF3DBasicBlock": "blocks",
    "build_aff3d_resnet_backbone": "backbone",
    "build_aff3d_resnet_fpn_backbone": "backbone",
    "register_shapes": "data_catalog",
}

__all__ = [  # noqa: RUF022 (grouped by module, as _EXPORTS)
    "add_aff3d_config",
    "add_shapes_config",
    "add_pretrain_config",
    "convert_state_dict",
    "ShapesCOCOSpec",
    "export_shapes_coco",
    "AFF3DBottleneckBlock",
    "AFF3DBasicBlock",
    "build_aff3d_resnet_backbone",
    "build_aff3d_resnet_fpn_backbone",
    "register_shapes",
]
assert set(__all__) == set(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'detectron2_ext' has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "detectron2":
            raise ModuleNotFoundError(
                f"detectron2_ext.{name} needs detectron2, which is not installed: see detectron2_ext/README.md",
                name=e.name,
            ) from e
        raise
    return getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
