"""The classifier head and stochastic depth, written here so that torch_impl works without timm.

They follow timm's layers of the same purpose (``SelectAdaptivePool2d`` + ``create_classifier``,
``DropPath``) in behaviour and names, so a timm user finds what timm's own ResNet has:

    GlobalPool     pool_type ""  (the map itself), "avg", "max", "avgmax" (their mean) or
                   "catavgmax" (both, concatenated: twice the features); flattens to (N, C)
    create_head    (GlobalPool, fc): fc is nn.Linear, or nn.Identity for num_classes = 0 (embeddings)
    DropPath       drops the residual branch of a whole sample with probability p in training
                   (stochastic depth, Huang et al. 2016), scaling the kept ones by 1 / (1 - p)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL_TYPES = ("", "avg", "max", "avgmax", "catavgmax")


class GlobalPool(nn.Module):
    """Global pooling to (N, C * feat_mult()), or the map unchanged for ``pool_type=""``."""

    def __init__(self, pool_type: str = "avg"):
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool: expected one of {list(POOL_TYPES)}, got {pool_type!r}")
        self.pool_type = pool_type

    def is_identity(self) -> bool:
        return not self.pool_type

    def feat_mult(self) -> int:
        return 2 if self.pool_type == "catavgmax" else 1

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_type:
            return x
        # adaptive_avg_pool2d to (1, 1) is what torchvision's head computes: the same bits as before.
        if self.pool_type == "avg":
            x = F.adaptive_avg_pool2d(x, (1, 1))
        elif self.pool_type == "max":
            x = F.adaptive_max_pool2d(x, (1, 1))
        else:
            avg, mx = F.adaptive_avg_pool2d(x, (1, 1)), F.adaptive_max_pool2d(x, (1, 1))
            x = 0.5 * (avg + mx) if self.pool_type == "avgmax" else torch.cat([avg, mx], dim=1)
        return torch.flatten(x, 1)


def create_head(num_features: int, num_classes: int, pool_type: str = "avg") -> tuple[GlobalPool, nn.Module]:
    """(pool, fc) for ``num_features`` channels; fc is the identity for ``num_classes=0``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes: expected a non-negative integer (0: no classifier), got {num_classes!r}")
    pool = GlobalPool(pool_type)
    if pool.is_identity() and num_classes:
        # a linear layer needs a vector per sample; timm refuses the same combination
        raise ValueError(
            f"global_pool='' (no pooling) needs num_classes=0 (no classifier), got num_classes={num_classes}"
        )
    fc = nn.Linear(num_features * pool.feat_mult(), num_classes) if num_classes else nn.Identity()
    return pool, fc


def drop_path_rates(num_blocks: int, rate: float) -> list[float]:
    """timm's rule: the drop probability grows linearly from 0 (first block) to ``rate`` (last)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate: expected 0 <= rate < 1, got {rate!r}")
    if num_blocks == 1:
        return [rate]
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]


class DropPath(nn.Module):
    """Stochastic depth on a residual branch (N, C, H, W): identity in eval or with p = 0."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: expected 0 <= p < 1, got {p!r}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p:.3f}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)  # one draw per sample
        return x * mask.div_(keep)
