"""The products over the C x H x W maps, in the maps' own memory layout (NCHW or channels_last).

The fast path touches U and X_l only here: the k^2 tap projections of step 2 and the per-sample
sums of eq. 4 in forward, and their adjoints in backward. Everything else runs on maps of at most
C/d channels.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .algebra import channels_last, compute_dtype, spatial_taps, split_spatial_weight, tap_weights


def autocast_off(t: torch.Tensor):
    """Autocast off inside the fast path, which picks its own precisions (16-bit maps, 32-bit small graph)."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def memory_format(t: torch.Tensor):
    return torch.channels_last if channels_last(t) else torch.contiguous_format


def project_back(base: torch.Tensor | None, dT: torch.Tensor, taps: torch.Tensor, dS=None, like=None):
    """base + taps^T dT (+ dS broadcast over pixels): the adjoint of ``spatial_taps`` (and of the sums), one
    batched product in base's memory format. dT (N, k^2, H, W), taps (k^2, C), dS (N, C) or None."""
    like = base if base is not None else like
    N, C, H, W = like.shape
    dt = like.dtype
    k2 = taps.shape[0]
    if channels_last(like):
        A = dT.permute(0, 2, 3, 1).reshape(N, H * W, k2)
        B = taps.expand(N, k2, C)
        if dS is not None:
            A = torch.cat([A, A.new_ones(N, H * W, 1)], 2)
            B = torch.cat([B, dS[:, None, :].to(B.dtype)], 1)
        A, B = A.to(dt), B.to(dt)
        flat = torch.bmm(A, B) if base is None else torch.baddbmm(base.permute(0, 2, 3, 1).reshape(N, H * W, C), A, B)
        return flat.view(N, H, W, C).permute(0, 3, 1, 2)
    A = dT.reshape(N, k2, H * W)
    B = taps.t().expand(N, C, k2)
    if dS is not None:
        A = torch.cat([A, A.new_ones(N, 1, H * W)], 1)
        B = torch.cat([B, dS[:, :, None].to(B.dtype)], 2)
    A, B = A.to(dt), B.to(dt)
    flat = torch.bmm(B, A) if base is None else torch.baddbmm(base.reshape(N, C, H * W), B, A)
    return flat.view(N, C, H, W)


def tap_weight_grad(dT: torch.Tensor, x: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """(k^2, C): sum over samples and pixels of dT[t] x[c], the gradient of ``spatial_taps``' taps."""
    N, C, H, W = x.shape
    k2 = dT.shape[1]
    if channels_last(x):
        A = dT.permute(0, 2, 3, 1).reshape(N * H * W, k2).to(x.dtype)
        return (A.t() @ x.permute(0, 2, 3, 1).reshape(N * H * W, C)).to(cdt)
    return torch.bmm(dT.reshape(N, k2, H * W).to(x.dtype), x.flatten(2).transpose(1, 2)).to(cdt).sum(0)


def full_map_reductions(m: nn.Module, U: torch.Tensor, X: torch.Tensor, W_sp: torch.Tensor):
    """What the small graph needs from the C x H x W maps: taps T (N, k^2, H, W) and sums of U (and X_l)."""
    design = m.design
    cdt = compute_dtype(U)
    W_U, W_X = split_spatial_weight(W_sp, design, U.shape[1])
    T = spatial_taps(U, tap_weights(W_U)).to(cdt)
    if W_X is not None:
        T = T + spatial_taps(X, tap_weights(W_X)).to(cdt)
    S = U.sum((2, 3), dtype=cdt)
    if design.channel_input == "residual+skip":
        S = S + X.sum((2, 3), dtype=cdt)
    return T, S
