"""Config keys of the extension, added to a detectron2 config the way detectron2's projects do.

``add_aff3d_config(cfg)`` puts every switch of the backbone's attention under ``MODEL.AFF3D``;
``add_shapes_config(cfg)`` describes the built-in shapes data under ``DATASETS.SHAPES``;
``add_pretrain_config(cfg)`` the backbone's pre-training on the shapes classification task under
``PRETRAIN`` (``detectron2_ext.pretrain``). Neither
imports detectron2: new nodes are made with ``type(cfg)``, so any yacs ``CfgNode`` works.

``MODEL.AFF3D`` derives from the attention registry (``torch_impl.attention.ATTENTIONS``):

    ATTENTION     the attention in every residual block: "none" (detectron2's plain ResNet, so the
                  configs of the five backbones differ in this one key) or a registered name
                  (se, cbam, eca, aff3d)
    <OPTION>      one key per option that some attention exposes to detectron2 (its entry's
                  ``detectron2`` field), read only by the attentions that expose it:
        DESIGN        3D-AFF: a design of reference_numpy.designs.DESIGNS; "aff3d" is the paper's
                      final module (U and X_l concatenated before the spatial conv, section 4.2)
        KERNEL_SIZE   3D-AFF: k, the spatial convolution's kernel (eq. 5); the paper uses 3 (Table 4).
                      CBAM keeps its own 7x7.
        REDUCTION     3D-AFF (d) and SE, CBAM (r): hidden channels C/d of F_ex; 16 on ImageNet
                      ResNets (section 4.1)
    NORM          normalisation of the attention's own BN layers: "" follows MODEL.RESNETS.NORM, so
                  with FrozenBN their ImageNet statistics stay frozen like the rest of the backbone's.
                  Any detectron2 norm name; GN uses gcd(32, C) groups, as F_conv's BN has one channel.

A key's default is the default of the config's default attention (3D-AFF) for that option, with
the reduction of the ImageNet family (detection backbones start from ImageNet weights); options
3D-AFF does not take get the default of the first attention that exposes them.
"""

from __future__ import annotations

from typing import Any

from torch_impl.attention import ATTENTIONS, attention_names

# MODEL.AFF3D.ATTENTION's default: the paper's module.
DEFAULT_ATTENTION = "aff3d"
# Detection backbones are ImageNet ResNets: their attention takes the ImageNet defaults (d = 16).
FAMILY = "imagenet"


def attention_choices() -> list[str]:
    """The values ``MODEL.AFF3D.ATTENTION`` accepts: "none" and every registered attention."""
    return attention_names()


def config_key(option: str) -> str:
    """The ``MODEL.AFF3D`` key of an attention option: ``kernel_size`` -> ``KERNEL_SIZE``."""
    return option.upper()


def attention_option_defaults() -> dict[str, Any]:
    """``MODEL.AFF3D.<KEY>`` -> default, for every option some attention exposes to detectron2."""
    order = sorted(ATTENTIONS, key=lambda name: name != DEFAULT_ATTENTION)  # the default attention first
    keys: dict[str, Any] = {}
    for name in order:
        spec = ATTENTIONS[name]
        defaults = spec.defaults(FAMILY)
        for option in spec.detectron2:
            keys.setdefault(config_key(option), defaults[option])
    return keys


def add_aff3d_config(cfg) -> None:
    """Add ``MODEL.AFF3D`` (read by the ``build_aff3d_resnet*_backbone`` builders) to ``cfg``."""
    node = type(cfg)
    cfg.MODEL.AFF3D = node()
    cfg.MODEL.AFF3D.ATTENTION = DEFAULT_ATTENTION
    for key, default in attention_option_defaults().items():
        setattr(cfg.MODEL.AFF3D, key, default)
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


def add_pretrain_config(cfg) -> None:
    """Add ``PRETRAIN``: the backbone's classification pre-training on shapes images (off by default)."""
    cfg.PRETRAIN = type(cfg)()
    cfg.PRETRAIN.EPOCHS = 0  # passes over the images; 0: none, the run starts from MODEL.WEIGHTS
    cfg.PRETRAIN.IMAGES = 10_000  # training images, drawn from DATASETS.SHAPES.SEED (SEED: init, order)
    cfg.PRETRAIN.VAL_IMAGES = 1_000  # held-out images: the accuracy the record reports
    cfg.PRETRAIN.IMAGE_SIZE = 64  # puts a shape at 38-58 px across, as the 128 px scenes' 26-56
    cfg.PRETRAIN.BATCH_SIZE = 32
    cfg.PRETRAIN.BASE_LR = 0.003  # AdamW's peak: linear warm-up over the first epoch, cosine to zero
    cfg.PRETRAIN.WEIGHT_DECAY = 0.05  # AdamW's decoupled weight decay
    # "": kept in OUTPUT_DIR/pretrain; a folder: kept in <folder>/<digest of the settings> for every run
    # whose backbone, seeds and PRETRAIN agree to reuse (python -m detectron2_ext.compare sets one)
    cfg.PRETRAIN.CACHE_DIR = ""
