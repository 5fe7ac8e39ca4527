"""Run one of timm's scripts (``train.py``, ``validate.py``, ...) with torch_impl's networks registered.

timm's training and validation scripts are not in the timm wheel (it ships the library: models,
data, optim, scheduler, loss, utils); they live at the top of timm's repository. They build the
model with ``timm.create_model(args.model, ...)``, so our networks only need registering first,
which ``import torch_impl`` does. This launcher imports torch_impl, then runs the script as
``python SCRIPT ARGS`` would:

    git clone --depth 1 --branch v1.0.31 https://github.com/huggingface/pytorch-image-models timm-src
    python -m torch_impl.timm_run timm-src/train.py /data/cifar100 --model aff3d_resnet164_cifar \\
        --num-classes 100 --model-kwargs reduction=4 ...
    python -m torch_impl.timm_run timm-src/validate.py /data/cifar100 --model aff3d_resnet164_cifar \\
        --num-classes 100 --checkpoint output/train/.../model_best.pth.tar

(``train.py`` alone can also import us itself: ``--device-modules torch_impl``; ``validate.py`` has
no such option.)
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from .timm_models import register_timm_models, timm_installed

USAGE = "usage: python -m torch_impl.timm_run PATH/TO/timm/SCRIPT.py [script arguments ...]"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print(USAGE)
        sys.exit(0 if argv else 2)
    script = Path(argv[0])
    if script.suffix != ".py" or not script.is_file():
        print(f"error: {str(script)!r} is not a Python script (timm's train.py or validate.py)", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    if not timm_installed():
        print("error: timm is not installed: pip install timm (see pyproject.toml's dev extra)", file=sys.stderr)
        sys.exit(2)
    register_timm_models()
    # As `python SCRIPT ...`: the script's folder first on sys.path, its name as argv[0].
    sys.path.insert(0, str(script.resolve().parent))
    sys.argv = [str(script), *argv[1:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
