"""The identities behind the fast 3D-AFF, one per function, each a pure function of tensors.

Every identity is proved by a test in ``tests/test_fast_path.py`` (float64, 1e-10). Symbols as in
the paper: U (N, C, H, W) the residual, X_l the shortcut, M_c the channel feature (eq. 4), M_s
(N, 1, H, W) the spatial feature (eq. 5), M_3D = M_c (+) M_s (eq. 1), W_1 (C/d x C) and W_2
(C x C/d) F_ex's convolutions (eq. 6), W' F_conv's k x k kernel (eq. 5).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from reference_numpy.designs import AFF3DDesign

# ---------------------------------------------------------------------------------------------
# Layout, precision and the block's norm as an affine map: one definition each for every route.
# ---------------------------------------------------------------------------------------------


def channels_last(t: torch.Tensor) -> bool:
    """A 4-D map stored channels_last (and not also contiguous, as maps with C = 1 or H = W = 1 are)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The small graph's precision: float32, or the input's if wider (16-bit maps, 32-bit statistics)."""
    return torch.promote_types(t.dtype, torch.float32)


def autocast_off(t: torch.Tensor):
    """Autocast off inside the fast path, which picks its own precisions (``compute_dtype``)."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def affine(R: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None) -> torch.Tensor:
    """U = R * scale + shift per channel (a batch norm as the map it is for one call), or R itself."""
    if scale is None:
        return R
    return torch.addcmul(shift[:, None, None], R, scale[:, None, None])

# ---------------------------------------------------------------------------------------------
# Step 1: a convolution over a merged input is the sum of convolutions of its parts.
# ---------------------------------------------------------------------------------------------


def split_spatial_weight(weight: torch.Tensor, design: AFF3DDesign, channels: int):
    """The weights W_U, W_X acting on U and on X_l, so conv(U (+) X_l, W') = conv(U, W_U) + conv(X_l, W_X).

    weight: F_conv's (1, C_in, k, k). Concatenation: W_U, W_X = W'[:, :C], W'[:, C:] (the kernel is
    linear in its input channels). Summation: both are W'. Residual-only spatial input: (W', None).
    """
    if design.spatial_input == "residual":
        return weight, None
    if design.merge == "concat":
        return weight[:, :channels], weight[:, channels:]
    return weight, weight


# ---------------------------------------------------------------------------------------------
# Step 2: a one-output k x k convolution is k^2 one-by-one projections, then shifts:
#     conv_k(x)[h, w] = sum_t T_t[h + dy - k//2, w + dx - k//2],   T_t = sum_c W[c, t] x[c]
# ---------------------------------------------------------------------------------------------


def tap_weights(weight: torch.Tensor) -> torch.Tensor:
    """(1, C, k, k) -> (k^2, C): row t = dy * k + dx is the 1x1 filter of tap (dy, dx)."""
    _, C, k, _ = weight.shape
    return weight[0].permute(1, 2, 0).reshape(k * k, C)


def spatial_taps(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The projections T_t = sum_c taps[t, c] x[c], (N, C, H, W) -> (N, k^2, H, W), in x's memory layout.

    NCHW: one batched (k^2 x C) @ (C x HW) product per sample. channels_last: a 1x1 convolution to k^2
    channels, which reads each pixel's C values in a row (on CPU up to 4x faster there than the product,
    which would copy x). The taps are expanded over the batch: ``matmul`` of the 2-D taps would fold the
    batch into rows, which copies x transposed whenever the taps need a gradient (measured 3-10x slower
    on CPU than this, forward and backward, at the small networks' and ResNet-50's shapes).
    """
    taps = taps.to(x.dtype)
    if channels_last(x):
        return F.conv2d(x, taps[:, :, None, None])
    N, C, H, W = x.shape
    return torch.bmm(taps.expand(N, -1, -1), x.flatten(2)).view(N, taps.shape[0], H, W)


def shift_kernel(k: int, like: torch.Tensor) -> torch.Tensor:
    """The (1, k^2, k, k) one-hot kernel E with E[0, t, dy, dx] = 1 where t = dy * k + dx."""
    return torch.eye(k * k, dtype=like.dtype, device=like.device).view(1, k * k, k, k)


def shift_sum(T: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The shifts: sum_t T_t[h + dy - k//2, w + dx - k//2] (zero outside), (N, k^2, H, W) -> (N, 1, H, W).

    A convolution with the one-hot kernel E computes exactly this sum (its products are by 1 or 0).
    Zero padding commutes with the projection, which has no bias.
    """
    return F.conv2d(T, shift_kernel(k, T), bias, padding=k // 2)


def shift_sum_strided(T: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``shift_sum`` as one reduction over a strided view of the zero-padded taps (no autograd needed).

    Element (n, dy, dx, h, w) of the view is T_pad[n, dy * k + dx, h + dy, w + dx], so summing over
    (dy, dx) is the shifted sum. Cheaper than a convolution call for a k^2-channel map on CPU.
    """
    p = k // 2
    N, _, H, W = T.shape
    Tp = F.pad(T, (p, p, p, p))
    sN, sC, sH, sW = Tp.stride()
    out = Tp.as_strided((N, k, k, H, W), (sN, k * sC + sH, sC + sW, sH, sW)).sum((1, 2)).unsqueeze(1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def spatial_conv_split(U: torch.Tensor, X_l: torch.Tensor, weight: torch.Tensor, design: AFF3DDesign) -> torch.Tensor:
    """Steps 1 + 2: conv_k(U (+) X_l, W') as shift_sum(taps(U) + taps(X_l)), the merged map never made.

    Returns F_conv's convolution before its batch norm, (N, 1, H, W).
    """
    W_U, W_X = split_spatial_weight(weight, design, U.shape[1])
    T = spatial_taps(U, tap_weights(W_U))
    if W_X is not None:
        T = T + spatial_taps(X_l, tap_weights(W_X))
    return shift_sum(T, weight.shape[-1])


# ---------------------------------------------------------------------------------------------
# Eq. 4 of a sum, and step 3: F_ex's first convolution is rank one over M_3D.
# ---------------------------------------------------------------------------------------------


def channel_squeeze_split(U: torch.Tensor, X_l: torch.Tensor, design: AFF3DDesign) -> torch.Tensor:
    """Eq. 4, (N, C): M_c^r = mean(U); M_c^{r+s} = mean(U + X_l) = mean(U) + mean(X_l) (no U + X_l map)."""
    M_c = U.mean((2, 3))
    return M_c + X_l.mean((2, 3)) if design.channel_input == "residual+skip" else M_c


def rank1_fex_input(M_c: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor | None = None):
    """Step 3: W_1 M_3D[:, h, w] = v + r M_s[h, w], v = W_1 M_c (+ b_1) (N, C/d), r = W_1 1 (C/d).

    Because M_3D[c, h, w] = M_c[c] + M_s[h, w]. W1: F_ex's first convolution as a (C/d, C) matrix.
    """
    v = M_c @ W1.t()
    if b1 is not None:
        v = v + b1
    return v, W1.sum(1)


# ---------------------------------------------------------------------------------------------
# Step 4: batch norm as an affine map.
# ---------------------------------------------------------------------------------------------


def fold_bn(weight, bias, mean, var, eps: float):
    """BN(x) = scale * x + shift per channel: scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift
