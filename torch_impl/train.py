"""Train a classifier: ``python -m torch_impl.train [--recipe NAME|FILE] [--key value ...]``.

    python -m torch_impl.train                                   # quickstart: shapes, ~1.5 min on 2 CPU cores
    python -m torch_impl.train --recipe cifar100_paper --data-dir ~/data --model se_resnet164_cifar
    torchrun --nproc_per_node 8 -m torch_impl.train --recipe imagenet_paper --data-dir /data/imagenet
    python -m torch_impl.train --resume runs/quickstart-aff3d_resnet20_cifar   # continue an interrupted run

Every recipe key is a flag (``--batch-size 256``, ``--no-channels-last``, ``--model-kwargs '{reduction: 8}'``);
``--list-recipes`` and ``--list-models`` show the choices.
"""

from __future__ import annotations

import argparse
import sys

from .models import list_models
from .training.config import FIELDS, add_config_arguments, config_from_args, recipe_names
from .training.runner import config_for_resume, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torch_impl.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list-recipes", action="store_true", help="print the shipped recipes and exit")
    parser.add_argument("--list-models", action="store_true", help="print the model names and exit")
    add_config_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_recipes:
        print("\n".join(recipe_names()))
        return 0
    if args.list_models:
        print("\n".join(list_models()))
        return 0
    try:
        if getattr(args, "resume", None) and args.recipe is None:
            # Resume from the checkpoint's own settings; flags given on top still apply.
            overrides = {k: v for k, v in vars(args).items() if k in FIELDS and k not in ("recipe", "resume")}
            cfg = config_for_resume(args.resume, **overrides)
        else:
            cfg = config_from_args(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
