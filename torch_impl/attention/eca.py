"""ECA (Wang et al., "ECA-Net: Efficient Channel Attention", CVPR 2020).

A 1-D convolution across channels of the pooled vector replaces SE's two FC layers:
    out = U * sigma(conv1d_k(GAP(U)))
with the adaptive kernel size of the ECA paper, eq. 12: k = |log2(C)/gamma + b/gamma|_odd,
gamma = 2, b = 1 (the nearest odd number, rounding up from the integer part).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .validation import check_pair


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """k(C) of ECA-Net eq. 12: 3 for C=64, 5 for C=128..1024, 7 for C=2048."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    def __init__(self, channels: int, gamma: int = 2, b: int = 1):
        super().__init__()
        self.channels = channels
        k = eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        check_pair("ECA", residual, shortcut, self.channels)
        y = residual.mean(dim=(2, 3))  # (N, C)
        y = self.conv(y.unsqueeze(1)).squeeze(1)  # a 1-D conv across the channel axis
        return residual * torch.sigmoid(y)[:, :, None, None]
