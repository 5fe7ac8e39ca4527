"""The layers a ResNet with 3D-AFF attention is built from, written in plain NumPy.

Every function works on one batch in NCHW layout (N images, C channels, H rows, W columns), in
whatever float dtype it is given (the tests use float64). Nothing here learns: batch norm is the
inference-mode formula with stored running statistics, as in ``torch.nn.BatchNorm2d.eval()``.
Each function checks its arguments first (``checks.py``): wrong input raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np

from . import checks


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int = 1,
    padding: int = 0,
) -> np.ndarray:
    """2-D cross-correlation, like ``torch.nn.functional.conv2d`` with groups=1.

    x: (N, C_in, H, W); weight: (C_out, C_in, kh, kw); bias: (C_out,) or None.
    Returns (N, C_out, H_out, W_out) with H_out = (H + 2*padding - kh) // stride + 1.

    Written as im2col + one matrix product: each output pixel is the dot product of a
    C_in*kh*kw patch with each filter.
    """
    checks.nchw("conv2d", "x", x)
    checks.floating("conv2d", "weight", weight, 4, "(C_out, C_in, kh, kw)")
    checks.in_channels("conv2d", "weight", weight, x)
    checks.integer("conv2d", "stride", stride, 1)
    checks.integer("conv2d", "padding", padding, 0)
    checks.kernel_fits("conv2d", "weight", weight.shape[2:], x, padding)  # else an empty output
    if bias is not None:
        checks.vector("conv2d", "bias", bias, weight.shape[0], "C_out")
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    # patches[n, c, i, j, y, x] = xp[n, c, y*stride + i, x*stride + j]
    patches = np.empty((n, c_in, kh, kw, h_out, w_out), dtype=np.result_type(x, weight))
    for i in range(kh):
        for j in range(kw):
            patches[:, :, i, j] = xp[:, :, i : i + stride * h_out : stride, j : j + stride * w_out : stride]
    out = np.einsum("ncijyx,ocij->noyx", patches, weight, optimize=True)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def batch_norm(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float = 1e-5,
) -> np.ndarray:
    """Batch norm in inference mode: y = (x - mean) / sqrt(var + eps) * gamma + beta, per channel."""
    checks.nchw("batch_norm", "x", x)
    C = x.shape[1]
    checks.vector("batch_norm", "weight (gamma)", weight, C, "C")
    checks.vector("batch_norm", "bias (beta)", bias, C, "C")
    checks.vector("batch_norm", "running_mean", running_mean, C, "C")
    checks.vector("batch_norm", "running_var", running_var, C, "C")
    checks.number("batch_norm", "eps", eps, 0)
    shape = (1, -1, 1, 1)
    scale = weight.reshape(shape) / np.sqrt(running_var.reshape(shape) + eps)
    return (x - running_mean.reshape(shape)) * scale + bias.reshape(shape)


def relu(x: np.ndarray) -> np.ndarray:
    """delta(x) = max(x, 0), the paper's delta."""
    checks.floating("relu", "x", x)
    return np.maximum(x, 0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """sigma(x) = 1 / (1 + exp(-x)), computed without overflow for large |x|."""
    checks.floating("sigmoid", "x", x)  # an integer x would keep its dtype: sigma rounded to 0
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, 1, 1): the mean of each channel over its H x W positions."""
    checks.nchw("global_avg_pool", "x", x)
    return x.mean(axis=(2, 3), keepdims=True)


def max_pool2d(x: np.ndarray, kernel_size: int, stride: int, padding: int = 0) -> np.ndarray:
    """Max pooling with -inf padding, like ``torch.nn.MaxPool2d`` (the ResNet stem uses 3, 2, 1)."""
    checks.nchw("max_pool2d", "x", x)
    checks.integer("max_pool2d", "kernel_size", kernel_size, 1)
    checks.integer("max_pool2d", "stride", stride, 1)
    # as torch: a wider padding would give windows of padding alone, whose max is -inf
    checks.integer("max_pool2d", "padding", padding, 0, kernel_size // 2, "kernel_size // 2")
    checks.kernel_fits("max_pool2d", "kernel_size", (kernel_size, kernel_size), x, padding)
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    h_out = (h + 2 * padding - kernel_size) // stride + 1
    w_out = (w + 2 * padding - kernel_size) // stride + 1
    out = np.full((n, c, h_out, w_out), -np.inf, dtype=x.dtype)
    for i in range(kernel_size):
        for j in range(kernel_size):
            out = np.maximum(out, xp[:, :, i : i + stride * h_out : stride, j : j + stride * w_out : stride])
    return out


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """y = x W^T + b, like ``torch.nn.Linear``: x (N, in), weight (out, in), bias (out,)."""
    checks.floating("linear", "x", x, 2, "(N, in)")
    checks.floating("linear", "weight", weight, 2, "(out, in)")
    checks.shape("linear", "weight", weight, (None, x.shape[1]), "(out, in)")
    if bias is not None:
        checks.vector("linear", "bias", bias, weight.shape[0], "out")
    out = x @ weight.T
    return out if bias is None else out + bias
