"""CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018).

Channel attention then spatial attention, applied in sequence (section 3 of the CBAM paper):
    M_c = sigma(MLP(AvgPool(U)) + MLP(MaxPool(U)))       shared MLP C -> C/r -> C, r = 16
    U'  = U * M_c
    M_s = sigma(BN(conv7x7([mean_c(U'), max_c(U')])))   2 -> 1 channels, k = 7
    out = U' * M_s
The shared MLP uses biases and the 7x7 conv is followed by batch norm, as in the authors' code.
The pooled maps are stacked [mean, max] as in the paper's eq. 3 (the authors' code stacks
[max, mean]: swap the two input channels of ``spatial_conv`` to load their checkpoints).
"""

from __future__ import annotations

import torch
from torch import nn

from .validation import check_pair


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        if reduction < 1 or reduction > channels:
            raise ValueError(f"CBAM reduction: expected 1 <= r <= C={channels}, got {reduction}")
        self.channels = channels
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        check_pair("CBAM", residual, shortcut, self.channels)
        avg = residual.mean(dim=(2, 3), keepdim=True)
        mx = residual.amax(dim=(2, 3), keepdim=True)
        x = residual * torch.sigmoid(self._mlp(avg) + self._mlp(mx))
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_bn(self.spatial_conv(pooled)))
