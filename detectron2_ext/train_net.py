#!/usr/bin/env python3
"""Train and evaluate Faster/Mask R-CNN with a 3D-AFF-ResNet-FPN backbone (detectron2).

    python detectron2_ext/train_net.py --config-file detectron2_ext/configs/<name>.yaml \
        [--num-gpus N] [--eval-only MODEL.WEIGHTS model_final.pth] [--resume] [KEY VALUE ...]

A short version of detectron2's tools/train_net.py, as in its projects/: the extension adds its
config keys and backbones, registers the shapes data, and evaluates with COCOEvaluator (box AP,
and mask AP when MODEL.MASK_ON: AP, AP50, AP75, APs, APm, APl).
"""

import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator

from detectron2_ext import backbone  # noqa: F401  (registers the build_aff3d_resnet*_backbone builders)
from detectron2_ext.config import add_aff3d_config, add_pretrain_config, add_shapes_config
from detectron2_ext.data_catalog import SHAPES_DATASETS, check_dataset_files, register_shapes
from detectron2_ext.pretrain import SettingsMismatch, pretrain


class Trainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)


def build_cfg(args):
    """The run's config: detectron2's defaults, this project's keys, the file, the command line's pairs."""
    cfg = get_cfg()
    add_aff3d_config(cfg)
    add_shapes_config(cfg)
    add_pretrain_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    cfg = build_cfg(args)
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST) & set(SHAPES_DATASETS):
        register_shapes(cfg)
    check_dataset_files(cfg.DATASETS.TEST if args.eval_only else cfg.DATASETS.TRAIN + cfg.DATASETS.TEST)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    if cfg.PRETRAIN.EPOCHS > 0:
        if cfg.MODEL.WEIGHTS:
            raise SystemExit(
                f"error: PRETRAIN.EPOCHS {cfg.PRETRAIN.EPOCHS} trains the backbone's weights, "
                f"and MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r} gives them too: set one of the two"
            )
        try:
            weights = pretrain(cfg)
        except SettingsMismatch as err:
            raise SystemExit(str(err)) from None
        cfg.defrost()
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
