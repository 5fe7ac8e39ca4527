"""The training loop's step: a diverged loss is caught, without reading the device at every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torch_impl.training import engine
from torch_impl.training.distributed import DistContext

HOST_READS = {"__bool__", "__float__", "__int__", "item", "tolist"}  # each waits for the device


class CountHostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in HOST_READS
        return func(*args, **(kwargs or {}))


class LossBecomesNan(nn.Module):
    """A linear classifier whose output turns to nan from call ``at`` on (None: never)."""

    def __init__(self, at: int | None):
        super().__init__()
        self.fc, self.at, self.calls = nn.Linear(4, 3), at, 0

    def forward(self, x):
        out = self.fc(x)
        self.calls += 1
        return out * float("nan") if self.at is not None and self.calls > self.at else out


def epoch(model, steps):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 4, generator=g), torch.tensor([0, 2])) for _ in range(steps)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return engine.train_one_epoch(
        model, batches, steps, optimizer, scheduler, scaler, nn.CrossEntropyLoss(), DistContext(), progress=False
    )


def test_no_host_read_per_step():
    steps = 3 * engine.FINITE_CHECK_EVERY
    with CountHostReads() as reads:
        epoch(LossBecomesNan(at=None), steps)
    # one flag read per FINITE_CHECK_EVERY steps and one at the end, plus the meter's final result
    assert reads.count <= steps // engine.FINITE_CHECK_EVERY + 3, reads.count


@pytest.mark.parametrize("at", [0, 7, engine.FINITE_CHECK_EVERY + 3])
def test_non_finite_loss_names_its_first_step(at):
    with pytest.raises(FloatingPointError, match=rf"non-finite \(inf or nan\) at step {at}; lower --lr"):
        epoch(LossBecomesNan(at=at), 2 * engine.FINITE_CHECK_EVERY + 5)
