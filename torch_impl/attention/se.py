"""Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

s = sigma(W_2 delta(W_1 GAP(U))), output U * s. Reduction r = 16 as in the SE paper; the two fully
connected layers are 1x1 convolutions with biases (the same arithmetic as nn.Linear).
The shortcut is accepted for the shared interface and not used.
"""

from __future__ import annotations

import torch
from torch import nn

from .validation import check_pair


class SE(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        if reduction < 1 or reduction > channels:
            raise ValueError(f"SE reduction: expected 1 <= r <= C={channels}, got {reduction}")
        self.channels = channels
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        check_pair("SE", residual, shortcut, self.channels)
        s = residual.mean(dim=(2, 3), keepdim=True)
        return residual * torch.sigmoid(self.fc2(self.act(self.fc1(s))))
