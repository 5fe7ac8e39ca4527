"""Train a classifier: ``python -m torch_impl.train [--recipe NAME|FILE] [--key value ...]``.

    python -m torch_impl.train                                   # quickstart: shapes, ~1.5 min on 2 CPU cores
    python -m torch_impl.train --recipe cifar100_paper --data-dir ~/data --model se_resnet164_cifar
    torchrun --nproc_per_node 8 -m torch_impl.train --recipe imagenet_paper --data-dir /data/imagenet
    python -m torch_impl.train --resume runs/quickstart-aff3d_resnet20_cifar   # continue an interrupted run
    python -m torch_impl.train --resume runs/quickstart-aff3d_resnet20_cifar --lr 0.01   # a diverged run, at a lower lr

Every recipe key is a flag (``--batch-size 256``, ``--no-channels-last``, ``--model-kwargs '{reduction: 8}'``);
``--list-recipes`` and ``--list-models`` show the choices.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .cli import exit_on_user_error
from .models import list_models
from .training.config import FIELDS, add_config_arguments, config_from_args, recipe_names
from .training.run_folder import check_resume_folder
from .training.runner import TrainingInterrupted, config_for_resume, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m torch_impl.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list-recipes", action="store_true", help="print the shipped recipes and exit")
    parser.add_argument("--list-models", action="store_true", help="print the model names and exit")
    add_config_arguments(parser)
    return parser


def _raise_interrupt(signum, frame) -> None:
    """SIGTERM (a job scheduler's stop, ``kill``) ends the run like Ctrl-C: files intact, a resume hint."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_recipes:
        print("\n".join(recipe_names()))
        return 0
    if args.list_models:
        print("\n".join(list_models()))
        return 0
    given = {k: v for k, v in vars(args).items() if k in FIELDS and k not in ("recipe", "resume")}
    if getattr(args, "resume", None):
        check_resume_folder(args.resume, given)
    if getattr(args, "resume", None) and args.recipe is None:
        cfg = config_for_resume(args.resume, **given)  # the checkpoint's own settings; flags given on top
    else:
        cfg = config_from_args(args)
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        run(cfg)
    except TrainingInterrupted as err:
        if err.is_main:
            print(str(err), file=sys.stderr, flush=True)
        return 128 + signal.Signals[err.signal_name].value  # the shell's status for death by that signal
    except KeyboardInterrupt as err:  # before the first epoch began: nothing of this run was saved
        name = err.args[0] if err.args and str(err.args[0]).startswith("SIG") else "SIGINT"
        print(f"interrupted by {name} before training began; nothing new was saved", file=sys.stderr, flush=True)
        return 128 + signal.Signals[name].value
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
