"""The one conversion from PyTorch weights to the NumPy reference's parameter dicts."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn


def to_numpy_params(source: nn.Module | Mapping[str, torch.Tensor], dtype=np.float64) -> dict[str, np.ndarray]:
    """state_dict (parameters and BN running statistics) -> {same name: ndarray of ``dtype``}.

    ``num_batches_tracked`` counters are dropped: inference never reads them. Names are kept as
    they are, so ``reference_numpy`` functions find ``attn.fex.conv1.weight`` under the name
    PyTorch gives it.
    """
    state = source.state_dict() if isinstance(source, nn.Module) else source
    return {
        name: t.detach().to("cpu", torch.float64).numpy().astype(dtype, copy=False)
        for name, t in state.items()
        if not name.endswith("num_batches_tracked")
    }
