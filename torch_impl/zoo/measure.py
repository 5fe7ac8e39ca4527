"""Parameters and multiply-accumulates of a network, measured with torch's own FLOP counter.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-accumulate of every
convolution and matrix product (and nothing for BN, ReLU, pooling, sigmoid or element-wise
products); papers on ResNets call MACs "FLOPs" (ResNet-50: "4.1 GFLOPs"), so ``count_macs``
returns the counter's total / 2.

The counter needs only shapes, so ``measure`` builds the network on the ``meta`` device: no
memory is allocated and no arithmetic is done, and ResNet-152 at 224 x 224 is counted in well
under a second on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..attention import AFF3D
from ..models import create_model


def count_params(model: nn.Module) -> int:
    """Learnable parameters (BN running statistics, being buffers, are not counted; nor are they in papers)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int, int] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass over an input of ``input_size`` (per batch).

    The input is created on the model's device (``meta`` works and costs nothing).
    """
    if len(input_size) != 4 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"count_macs: expected input_size (N, C, H, W) of positive ints, got {tuple(input_size)}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return flops // 2


@dataclass(frozen=True)
class Measurement:
    params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def macs_g(self) -> float:
        return self.macs / 1e9


def measure(model_name: str, input_size: int = 224, num_classes: int | None = None, **kwargs) -> Measurement:
    """Parameters and MACs (one image, ``input_size`` x ``input_size``) of ``create_model(model_name, **kwargs)``.

    Built on the meta device: nothing is allocated or computed. 3D-AFF is counted as written
    (``as_written``).
    """
    with torch.device("meta"):
        model = create_model(model_name, num_classes=num_classes, **kwargs)
    params = count_params(as_written(model))
    return Measurement(params, count_macs(without_batch_norm(model), (1, 3, input_size, input_size)))


def without_batch_norm(model: nn.Module) -> nn.Module:
    """Make every batch norm pass its input through, in place: same MACs, about 3x faster to count on meta.

    FlopCounterMode assigns batch norm no FLOPs, but its meta-device kernel is a Python
    decomposition that dominates the counting time of a deep network. Only ``forward`` is
    replaced (per instance), so the modules and their attributes stay where blocks look for them.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = _pass_through
    return model


def _pass_through(x: torch.Tensor) -> torch.Tensor:
    return x


def as_written(model: nn.Module) -> nn.Module:
    """Every 3D-AFF module to ``impl="straightforward"``: the equations' arithmetic, as the paper counts it.

    The default ``"fast"`` implementation computes the same function with fewer MACs (it never
    runs the first F_ex convolution over a C x H x W map), so counting it would not measure the
    network the paper describes.
    """
    for m in model.modules():
        if isinstance(m, AFF3D):
            m.impl = "straightforward"
    return model
