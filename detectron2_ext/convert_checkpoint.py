"""ImageNet weights into detection: a torch_impl (torchvision-layout) ResNet -> a detectron2 checkpoint.

    python -m detectron2_ext.convert_checkpoint aff3d_resnet50_imagenet.pth aff3d_r50.d2.pth

The input is any ImageNet network of ``torch_impl.create_model`` (resnet50, se_resnet50,
aff3d_resnet50, ...) or a torchvision ResNet: a state_dict, or a training checkpoint holding one
under ``"model"`` or ``"state_dict"``. Keys are renamed to detectron2's ``ResNet``
(``stem``, ``res2``..``res5``, ``convN.norm``, ``shortcut``); each block's ``attn.*`` keeps its
name, as ``detectron2_ext.blocks`` keeps torch_impl's attention modules. The classifier ``fc`` is
dropped. The output names the backbone alone and sets ``matching_heuristics``, so detectron2's
``DetectionCheckpointer`` finds ``res2.0.conv1.weight`` under ``backbone.bottom_up.`` (FPN) or
``backbone.`` (C4) by suffix, as for its own ImageNet models.

torchvision conventions differ from detectron2's MSRA defaults, so converted weights only see the
inputs they were trained on under these settings, which every config here uses:

    MODEL.RESNETS.STRIDE_IN_1X1  False   stride 2 in the 3x3 conv, not the first 1x1
    INPUT.FORMAT                 RGB     torchvision reads RGB; MSRA weights want BGR
    MODEL.PIXEL_MEAN / PIXEL_STD ImageNet mean / std x 255: detectron2 feeds 0-255 pixels,
                                 (x - 255 m) / (255 s) = (x / 255 - m) / s, torchvision's Normalize
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from torch_impl.atomic import remove_stale_temporaries, write_bytes
from torch_impl.cli import exit_on_user_error
from torch_impl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from torch_impl.pretrained import read_state_dict

# torchvision's ImageNet normalisation (transforms.Normalize), in detectron2's 0-255 pixel scale.
PIXEL_MEAN = tuple(round(255 * m, 3) for m in IMAGENET_MEAN)  # (123.675, 116.28, 103.53)
PIXEL_STD = tuple(round(255 * s, 3) for s in IMAGENET_STD)  # (58.395, 57.12, 57.375)
INPUT_FORMAT = "RGB"
STRIDE_IN_1X1 = False

# The config values the converted weights need, as detectron2 config keys.
REQUIRED_CONFIG = {
    "MODEL.RESNETS.STRIDE_IN_1X1": STRIDE_IN_1X1,
    "INPUT.FORMAT": INPUT_FORMAT,
    "MODEL.PIXEL_MEAN": list(PIXEL_MEAN),
    "MODEL.PIXEL_STD": list(PIXEL_STD),
}

_NORM_PARAM = r"(weight|bias|running_mean|running_var)"
_BLOCK_KEY = re.compile(r"layer([1-4])\.(\d+)\.(.+)")
_BLOCK_RULES = (  # inside a block: torchvision name -> detectron2 name
    (re.compile(r"conv([1-3])\.weight"), r"conv\1.weight"),
    (re.compile(rf"bn([1-3])\.{_NORM_PARAM}"), r"conv\1.norm.\2"),
    (re.compile(r"downsample\.0\.weight"), "shortcut.weight"),
    (re.compile(rf"downsample\.1\.{_NORM_PARAM}"), r"shortcut.norm.\1"),
    (re.compile(r"attn\.(.+)"), r"attn.\1"),
)
_STEM_RULES = (
    (re.compile(r"conv1\.weight"), "stem.conv1.weight"),
    (re.compile(rf"bn1\.{_NORM_PARAM}"), r"stem.conv1.norm.\1"),
)
_DROPPED = re.compile(r"fc\.(weight|bias)|(.+\.)?num_batches_tracked")


def convert_key(key: str) -> str | None:
    """detectron2's name for a torch_impl/torchvision ResNet key; None for a key detection drops.

    >>> convert_key("layer1.0.downsample.1.running_var")
    'res2.0.shortcut.norm.running_var'
    >>> convert_key("layer3.5.attn.fex.bn2.weight")
    'res4.5.attn.fex.bn2.weight'
    """
    if _DROPPED.fullmatch(key):
        return None
    for pattern, replacement in _STEM_RULES:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    block = _BLOCK_KEY.fullmatch(key)
    if block:
        layer, index, rest = block.groups()
        for pattern, replacement in _BLOCK_RULES:
            if pattern.fullmatch(rest):
                return f"res{int(layer) + 1}.{index}.{pattern.sub(replacement, rest)}"
    raise ValueError(
        f"cannot convert key {key!r}: expected an ImageNet ResNet in torchvision layout (conv1, bn1, "
        "layer1..layer4 with conv/bn/downsample/attn, fc); CIFAR networks have no detectron2 counterpart"
    )


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key with ``convert_key`` and drop ``fc`` and BN counters; tensors are shared."""
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        new = convert_key(key)
        if new is not None:
            out[new] = value
    if "stem.conv1.weight" not in out or not any(k.startswith("res5.") for k in out):
        raise ValueError(f"expected a full ResNet (stem and layer1..layer4), got keys {sorted(state)[:8]}...")
    return out


def convert_checkpoint(source: str | Path | Mapping[str, torch.Tensor], destination: str | Path) -> dict:
    """Convert ``source`` (a path or a state_dict) and write detectron2's checkpoint to ``destination``.

    The file is written atomically (a temporary file, then a rename); ``destination`` may not be the
    source file itself. A training checkpoint's checksum is verified. Returns what was written.
    """
    destination = Path(destination).expanduser()
    if isinstance(source, (str, Path)) and _same_file(source, destination):
        raise ValueError(
            f"the destination {destination} is the source checkpoint itself; write the detectron2 weights "
            "to another file (the converted file cannot be converted back)"
        )
    model = convert_state_dict(read_state_dict(source))
    checkpoint = {
        "model": model,
        "__author__": "aff3d-resnet torch_impl (torchvision layout)",
        "matching_heuristics": True,
        "required_config": REQUIRED_CONFIG,
    }
    buffer = io.BytesIO()  # serialised in memory: a full disk then fails with its reason (ENOSPC)
    torch.save(checkpoint, buffer)
    remove_stale_temporaries(destination.parent, [destination.name])  # left by a killed earlier write
    write_bytes(destination, buffer.getbuffer())
    return checkpoint


def _same_file(a: str | Path, b: Path) -> bool:
    a = Path(a).expanduser()
    if a.exists() and b.exists():
        return a.samefile(b)
    return a.resolve() == b.resolve()


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="torch_impl / torchvision ResNet state_dict or training checkpoint (.pth)")
    parser.add_argument("destination", help="detectron2 checkpoint to write (.pth), for MODEL.WEIGHTS")
    args = parser.parse_args(argv)
    checkpoint = convert_checkpoint(args.source, args.destination)
    n_attn = sum("attn" in k.split(".") for k in checkpoint["model"])
    print(f"wrote {args.destination}: {len(checkpoint['model'])} tensors ({n_attn} attention)")
    print("the config must set: " + ", ".join(f"{k} {v}" for k, v in REQUIRED_CONFIG.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
