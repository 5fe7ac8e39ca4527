"""Shared test set-up: the `cuda` marker skips without a GPU; BN statistics made non-trivial."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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
