"""Shared test set-up: the `cuda` marker skips without a GPU; BN statistics made non-trivial."""

from __future__ import annotations

import pytest
import torch
from torch import nn


# One thread: tiny test tensors run many times faster without thread hand-offs, and results do not
# depend on how many cores the CI machine has.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fast_forms_on_tiny_maps(request, monkeypatch):
    """The tests' maps are tiny, and on tiny CPU maps training takes the straightforward or the autograd
    route (``aff3d_fast.SIZE_RULE``): the size rule is turned off here, so that a test of a fast route
    through the module runs that route. Tests marked ``size_rule`` keep the rule as users get it."""
    if "size_rule" not in request.keywords:
        from torch_impl.attention import aff3d_fast

        monkeypatch.setattr(aff3d_fast, "SIZE_RULE", dict.fromkeys(aff3d_fast.SIZE_RULE, 0))


def _randomize_batch_norm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics.

    Freshly built BN layers are the identity in eval mode (mean 0, var 1, gamma 1, beta 0), which
    would let a wrong parameter mapping pass an equivalence test unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return module


@pytest.fixture
def randomize_bn():
    return _randomize_batch_norm


@pytest.fixture
def bn_twins():
    """Two float64 BatchNorm2d with the same random affine parameters and running statistics: one for
    the path under test, one for the straightforward path, so each keeps its own statistics updates."""

    def make(channels: int, seed: int = 7) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
        a = _randomize_batch_norm(nn.BatchNorm2d(channels), seed).double()
        b = nn.BatchNorm2d(channels).double()
        b.load_state_dict(a.state_dict())
        return a, b

    return make


def _trained_like(model: nn.Module, size: int, seed: int = 0, batch: int = 8) -> nn.Module:
    """Random BN affine parameters, and running statistics measured on a random batch; eval mode.

    Arbitrary random running statistics make a deep network scale its activations (and any
    rounding difference) up by orders of magnitude per stage: float32 alone then disagrees with
    float64 by 0.04-0.15 on ResNet logits (measured), and a comparison would measure the conditioning
    of a nonsensical network, not the implementation. Statistics measured in train mode (cumulative
    average, momentum None) keep activations at a trained network's scale while staying non-trivial.
    The model keeps its dtype.
    """
    _randomize_batch_norm(model, seed=seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size, generator=g, dtype=dtype))
    return model.eval()


@pytest.fixture
def trained_like():
    return _trained_like


@pytest.fixture
def one_error_line(capsys):
    """Reads what a command printed on stderr: exactly one ``error: ...`` line and no traceback; returns it."""

    def read() -> str:
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]

    return read
