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
from detectron2_ext.pretrain import LAST, RECORD, WEIGHTS, SettingsMismatch, pretrain, pretrain_dir

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
    cfg.merge_from_list([*TINY, *(str(o) if isinstance(o, Path) else o for o in opts)])
    return cfg


@pytest.mark.parametrize("attention", ["none", "se", "cbam", "eca", "aff3d"])
def test_weights_are_the_detectors_backbone_key_for_key(tmp_path, attention):
    cfg = make_cfg("shapes/faster_rcnn_R_50_FPN_shapes.yaml", "MODEL.AFF3D.ATTENTION", attention, "OUTPUT_DIR", tmp_path)
    weights = torch.load(pretrain(cfg), map_location="cpu", weights_only=True)["model"]
    detector = build_model(cfg).state_dict()
    bottom_up = {k: v for k, v in detector.items() if k.startswith("backbone.bottom_up.")}
    trained = {k for k in weights if not k.endswith("num_batches_tracked")}  # BN's counter: FrozenBN has none
    assert trained == bottom_up.keys() - {k for k in bottom_up if k.endswith("num_batches_tracked")}
    assert all(weights[k].shape == bottom_up[k].shape for k in trained)
    record = json.loads((tmp_path / "pretrain" / RECORD).read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2] and 0 <= record["val_accuracy"] <= 1
    assert record["trained_by"] == str(tmp_path) and record["settings"]["MODEL.AFF3D"]["ATTENTION"] == attention
    assert not (tmp_path / "pretrain" / LAST).exists()


@pytest.mark.parametrize("config", ["faster_rcnn_R_50_FPN_shapes.yaml", "faster_rcnn_AFF3D_R_50_FPN_shapes.yaml"])
def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch, config):
    whole = torch.load(pretrain(make_cfg(f"shapes/{config}", "OUTPUT_DIR", tmp_path / "whole")), weights_only=True)
    cfg = make_cfg(f"shapes/{config}", "OUTPUT_DIR", tmp_path / "resumed")
    from detectron2_ext import pretrain as module

    accuracy, calls = module._accuracy, []

    def killed_in_the_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return accuracy(*args)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):  # context: conftest's patches stay
        patch.setattr(module, "_accuracy", killed_in_the_second_epoch)
        pretrain(cfg)
    assert (tmp_path / "resumed/pretrain" / LAST).exists() and not (tmp_path / "resumed/pretrain" / WEIGHTS).exists()
    resumed = torch.load(pretrain(cfg), weights_only=True)["model"]
    whole = whole["model"]
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


def test_a_frozen_bn_detector_starts_from_the_bn_pretraining(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.layers import FrozenBatchNorm2d

    bn = make_cfg("shapes/faster_rcnn_AFF3D_R_50_FPN_shapes.yaml", "OUTPUT_DIR", tmp_path, "PRETRAIN.CACHE_DIR", tmp_path / "c")
    frozen = make_cfg("shapes/faster_rcnn_AFF3D_R_50_FPN_shapes.yaml", "OUTPUT_DIR", tmp_path, "PRETRAIN.CACHE_DIR",
                      tmp_path / "c", "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", 2)  # fmt: skip
    assert pretrain_dir(bn) == pretrain_dir(frozen)
    weights = torch.load(pretrain(frozen), weights_only=True)["model"]
    detector = build_model(frozen)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in detector.backbone.bottom_up.modules())
    DetectionCheckpointer(detector).load(str(pretrain_dir(frozen) / WEIGHTS))
    state = detector.state_dict()
    loaded = [k for k in weights if "num_batches_tracked" not in k]
    assert any(k.endswith("running_var") for k in loaded)
    assert all(torch.equal(state[k], weights[k]) for k in loaded)


def test_runs_that_agree_share_one_pretraining_and_take_turns(tmp_path, monkeypatch):
    from detectron2_ext import pretrain as module

    shared = ["PRETRAIN.CACHE_DIR", tmp_path / "cache"]
    faster = make_cfg("shapes/faster_rcnn_R_50_FPN_shapes.yaml", *shared, "OUTPUT_DIR", tmp_path / "faster")
    mask = make_cfg("shapes/mask_rcnn_R_50_FPN_shapes.yaml", *shared, "OUTPUT_DIR", tmp_path / "mask")
    assert pretrain_dir(faster) == pretrain_dir(mask) and pretrain_dir(faster).parent == tmp_path / "cache"
    for other in (["SEED", 1], ["MODEL.AFF3D.ATTENTION", "se"], ["PRETRAIN.EPOCHS", 3], ["DATASETS.SHAPES.SEED", 1]):
        assert pretrain_dir(make_cfg("shapes/faster_rcnn_R_50_FPN_shapes.yaml", *shared, *other)) != pretrain_dir(faster)
    images, trained = module._images, []
    monkeypatch.setattr(module, "_images", lambda cfg, split, n: (trained.append(split), images(cfg, split, n))[1])
    import threading  # two runs side by side: the lock lets one train, the other then reuses its weights

    paths = []
    threads = [threading.Thread(target=lambda c=c: paths.append(pretrain(c))) for c in (faster, mask)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trained == ["train", "val"] and paths[0] == paths[1] == pretrain_dir(faster) / WEIGHTS
    assert json.loads((pretrain_dir(faster) / RECORD).read_text())["trained_by"] in (str(tmp_path / "faster"),
                                                                                    str(tmp_path / "mask"))  # fmt: skip


def test_a_kept_pretraining_of_other_settings_is_an_error(tmp_path):
    pretrain(make_cfg("shapes/faster_rcnn_R_50_FPN_shapes.yaml", "OUTPUT_DIR", tmp_path))
    changed = make_cfg("shapes/faster_rcnn_R_50_FPN_shapes.yaml", "OUTPUT_DIR", tmp_path, "PRETRAIN.BASE_LR", 0.01)
    with pytest.raises(SettingsMismatch, match="error: .*pretrain/record.json was pre-trained with other settings"):
        pretrain(changed)
    argv = ["--config-file", str(CONFIGS / "shapes/faster_rcnn_R_50_FPN_shapes.yaml"), *map(str, TINY),
            "PRETRAIN.BASE_LR", "0.01", "OUTPUT_DIR", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit, match="error: .*other settings"):
        train_net.main(default_argument_parser().parse_args(argv))


@pytest.mark.cuda
def test_pretraining_runs_on_the_detectors_device_and_keeps_cpu_weights(tmp_path):
    cfg = make_cfg("shapes/faster_rcnn_AFF3D_R_50_FPN_shapes.yaml", "MODEL.DEVICE", "cuda", "OUTPUT_DIR", tmp_path)
    weights = torch.load(pretrain(cfg), weights_only=True)["model"]
    assert weights and all(v.device.type == "cpu" for v in weights.values())
