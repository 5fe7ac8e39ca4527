"""What the benchmark measures: the networks, the baseline every ratio divides by, and the targets."""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("resnet50", "se_resnet50", "aff3d_resnet50_straightforward", "aff3d_resnet50_fast")
BASELINE = "resnet50"
# The networks of the compiled measurement (``compiled``): as a GPU user runs them, 3D-AFF with its default path.
COMPILED_MODELS = ("resnet50", "se_resnet50", "aff3d_resnet50_fast")
TARGETS = {"cpu_latency_b1": 1.10, "cpu_throughput": 1.10, "cuda_train_time": 1.10, "cuda_peak_memory": 1.10}
# The compiled measurement's targets (cost ratios to ResNet-50 in the same mode), reported, not claimed.
COMPILED_TARGETS = {"train_time_ratio_compiled": 1.30, "train_time_ratio_compiled_moonshot": 1.10,
                    "train_time_ratio_eager": 2.0, "peak_memory_ratio": 1.10}


def build_models(seed: int = 0, names=MODELS) -> dict[str, nn.Module]:
    """The named models (default: the four of the CPU and CUDA sections), randomly initialised (timing needs
    no trained weights); the two 3D-AFF variants share one set of weights."""
    import torchvision

    from ..attention.aff3d import AFF3D
    from ..models.registry import create_model

    torch.manual_seed(seed)
    models = {"resnet50": torchvision.models.resnet50(), "se_resnet50": create_model("se_resnet50")}
    ref = create_model("aff3d_resnet50")
    fast = create_model("aff3d_resnet50")
    fast.load_state_dict(ref.state_dict())
    for model, impl in ((ref, "straightforward"), (fast, "fast")):
        for m in model.modules():
            if isinstance(m, AFF3D):
                m.impl = impl
    models["aff3d_resnet50_straightforward"], models["aff3d_resnet50_fast"] = ref, fast
    return {n: models[n] for n in names}


def fused_block_tail(model: nn.Module) -> bool:
    """Whether the model's residual blocks take the fused tail (``Bottleneck.fused_tail``)."""
    from ..models.blocks import Bottleneck

    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    return bool(blocks) and all(b.fused_tail for b in blocks)
