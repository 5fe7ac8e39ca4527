"""Config keys of the extension, added to a detectron2 config the way detectron2's projects do.

``add_aff3d_config(cfg)`` puts every switch of the backbone's attention under ``MODEL.AFF3D``;
``add_shapes_config(cfg)`` describes the built-in shapes data under ``DATASETS.SHAPES``. Neither
imports detectron2: new nodes are made with ``type(cfg)``, so any yacs ``CfgNode`` works.
"""

from __future__ import annotations

# The attention in every residual block. "none" gives detectron2's plain ResNet, so the R50, SE-R50
# and 3D-AFF-R50 configs differ in this one key.
ATTENTIONS = ("none", "se", "cbam", "eca", "aff3d")


def add_aff3d_config(cfg) -> None:
    """Add ``MODEL.AFF3D`` (read by the ``build_aff3d_resnet*_backbone`` builders) to ``cfg``."""
    node = type(cfg)
    cfg.MODEL.AFF3D = node()
    # One of ATTENTIONS, through torch_impl.attention.get_attention.
    cfg.MODEL.AFF3D.ATTENTION = "aff3d"
    # A design of reference_numpy.designs.DESIGNS; "aff3d" is the paper's final module (U and X_l
    # concatenated before the spatial conv, section 4.2). Read for ATTENTION "aff3d" only.
    cfg.MODEL.AFF3D.DESIGN = "aff3d"
    # k, the spatial convolution's kernel (eq. 5); the paper uses 3 (Table 4). 3D-AFF only: CBAM
    # keeps its own 7x7.
    cfg.MODEL.AFF3D.KERNEL_SIZE = 3
    # d (3D-AFF) or r (SE, CBAM): hidden channels C/d of F_ex; 16 on ImageNet ResNets (section 4.1).
    cfg.MODEL.AFF3D.REDUCTION = 16
    # Normalisation of the attention's own BN layers: "" follows MODEL.RESNETS.NORM, so with
    # FrozenBN their ImageNet statistics stay frozen like the rest of the backbone's. Any
    # detectron2 norm name; GN uses gcd(32, C) groups, as F_conv's BN has a single channel.
    cfg.MODEL.AFF3D.NORM = ""


def add_shapes_config(cfg) -> None:
    """Add ``DATASETS.SHAPES``: how the built-in shapes data is exported to COCO format.

    The data sets ``shapes_train`` and ``shapes_val`` are rendered from these settings on first use
    (``detectron2_ext.data_catalog.register_shapes``) into ``$DETECTRON2_DATASETS/shapes/``.
    """
    node = type(cfg)
    cfg.DATASETS.SHAPES = node()
    cfg.DATASETS.SHAPES.IMAGE_SIZE = 128  # square images, side in pixels
    cfg.DATASETS.SHAPES.NUM_TRAIN = 1000
    cfg.DATASETS.SHAPES.NUM_VAL = 100
    cfg.DATASETS.SHAPES.SEED = 0
    cfg.DATASETS.SHAPES.MIN_OBJECTS = 1
    cfg.DATASETS.SHAPES.MAX_OBJECTS = 4
