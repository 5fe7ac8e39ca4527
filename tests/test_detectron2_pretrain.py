"""Pre-training a detection run's backbone on the shapes classification task (detectron2_ext.pretrain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
pytestmark = pytest.mark.detectron2

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from detectron2_ext import train_net
from detectron2_ext.config import add_aff3d_config, add_pretrain_config, add_shapes_config
from detectron2_ext.pretrain import LAST, RECORD, WEIGHTS, pretrain

CONFIGS = Path(__file__).parents[1] / "detectron2_ext" / "configs"
TINY = ["MODEL.RESNETS.STEM_OUT_CHANNELS", 8, "MODEL.RESNETS.WIDTH_PER_GROUP", 4, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
        "MODEL.FPN.OUT_CHANNELS", 16, "PRETRAIN.IMAGES", 16, "PRETRAIN.VAL_IMAGES", 8, "PRETRAIN.IMAGE_SIZE", 32,
        "PRETRAIN.BATCH_SIZE", 8, "PRETRAIN.EPOCHS", 2]  # fmt: skip


def make_cfg(config: str, *opts):
    cfg = get_cfg()
    add_aff3d_config(cfg)
    add_shapes_config(cfg)
    add_pretrain_config(cfg)
    cfg.merge_from_file(str(CONFIGS / config))
    cfg.merge_from_list([*TINY, *opts])
    return cfg


@pytest.mark.parametrize("attention", ["none", "se", "cbam", "eca", "aff3d"])
def test_weights_are_the_detectors_backbone_key_for_key(tmp_path, attention):
    cfg = make_cfg("shapes/faster_rcnn_R_50_FPN_shapes.yaml", "MODEL.AFF3D.ATTENTION", attention)
    weights = torch.load(pretrain(cfg, tmp_path), map_location="cpu", weights_only=True)["model"]
    detector = build_model(cfg).state_dict()
    bottom_up = {k: v for k, v in detector.items() if k.startswith("backbone.bottom_up.")}
    assert weights.keys() == bottom_up.keys()
    assert all(weights[k].shape == bottom_up[k].shape for k in weights)
    record = json.loads((tmp_path / RECORD).read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2] and 0 <= record["val_accuracy"] <= 1
    assert not (tmp_path / LAST).exists()


@pytest.mark.parametrize("config", ["faster_rcnn_R_50_FPN_shapes.yaml", "faster_rcnn_AFF3D_R_50_FPN_shapes.yaml"])
def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch, config):
    cfg = make_cfg(f"shapes/{config}")
    whole = torch.load(pretrain(cfg, tmp_path / "whole"), weights_only=True)["model"]
    from detectron2_ext import pretrain as module

    accuracy, calls = module._accuracy, []

    def killed_in_the_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return accuracy(*args)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # context: conftest's patches stay
        patch.setattr(module, "_accuracy", killed_in_the_second_epoch)
        pretrain(cfg, tmp_path / "resumed")
    assert (tmp_path / "resumed" / LAST).exists() and not (tmp_path / "resumed" / WEIGHTS).exists()
    resumed = torch.load(pretrain(cfg, tmp_path / "resumed"), weights_only=True)["model"]
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_train_net_starts_detection_from_the_pretrained_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    opts = [*TINY, "SOLVER.MAX_ITER", 1, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.BASE_LR", 0.0, "DATASETS.SHAPES.NUM_TRAIN", 2,
            "DATASETS.SHAPES.NUM_VAL", 1, "DATASETS.SHAPES.IMAGE_SIZE", 64, "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64, "MODEL.BACKBONE.FREEZE_AT", 5,
            "OUTPUT_DIR", tmp_path / "run"]  # fmt: skip
    argv = ["--config-file", str(CONFIGS / "shapes/faster_rcnn_SE_R_50_FPN_shapes.yaml"), *map(str, opts)]
    train_net.main(default_argument_parser().parse_args(argv))
    pretrained = torch.load(tmp_path / "run" / "pretrain" / WEIGHTS, weights_only=True)["model"]
    final = torch.load(tmp_path / "run" / "model_final.pth", weights_only=False)["model"]
    # a frozen backbone (FREEZE_AT 5, FrozenBN not needed: lr 0) ends as it started
    assert all(torch.equal(final[k], v) for k, v in pretrained.items() if "num_batches_tracked" not in k)


def test_pretraining_and_model_weights_together_are_an_error(tmp_path):
    argv = ["--config-file", str(CONFIGS / "shapes/faster_rcnn_R_50_FPN_shapes.yaml"), *map(str, TINY),
            "MODEL.WEIGHTS", "some.pth", "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit, match="error: PRETRAIN.EPOCHS 2 .* MODEL.WEIGHTS 'some.pth'"):
        train_net.main(default_argument_parser().parse_args(argv))
