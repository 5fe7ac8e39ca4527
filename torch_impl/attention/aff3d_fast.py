"""The fast 3D-AFF: the same function as ``aff3d.AFF3D``'s straightforward path, with less arithmetic.

Nothing here approximates. Every step below is an identity of linear algebra, proved by a test in
``tests/test_fast_path.py`` (float64, 1e-10, against the straightforward module and the NumPy
reference ``reference_numpy.aff3d``); only the order of floating-point additions changes.

Symbols as in the paper: U (N, C, H, W) the residual, X_l the shortcut, M_c (N, C) the channel
feature (eq. 4), M_s (N, 1, H, W) the spatial feature (eq. 5), M_3D = M_c (+) M_s (eq. 1),
X_3D = sigma(W_2 delta(W_1 M_3D)) (eqs. 2, 6), d the reduction, k the spatial kernel size.

1. Split convolution over a concatenation (``spatial_conv_split``).
   A convolution is linear in its input channels, so with W' = [W_U, W_X] split along them:
       conv(concat(U, X_l), W') = conv(U, W_U) + conv(X_l, W_X)
   and for the summation design conv(U + X_l, W') = conv(U, W') + conv(X_l, W'). The 2C-channel
   concatenated copy is never made.

2. A one-output k x k convolution is k^2 one-by-one projections, then shifts (``spatial_taps``,
   ``shift_sum``). With T_t = sum_c W[c, t] x[c] for each tap t = (dy, dx):
       conv_k(x)[h, w] = sum_t T_t[h + dy - k//2, w + dx - k//2]      (zero outside the map)
   The projections are one matrix product (k^2 x C) @ (C x HW) that reads x once; the shifted sum
   runs over k^2 maps of one channel each. (Zero padding commutes with the projection, which has
   no bias.)

3. Rank-1 first F_ex convolution (``rank1_fex_input``, ``fex_hidden``).
   M_3D[c, h, w] = M_c[c] + M_s[h, w], so for W_1 (C/d x C):
       W_1 M_3D[:, h, w] = W_1 M_c + (W_1 1) M_s[h, w] = v + r M_s[h, w]
   v = W_1 M_c (+ b_1) is one vector per sample and r = W_1 1 one vector per module: the first
   convolution never runs over a C x H x W map (C^2/d multiply-adds per pixel saved), and
   M_3D is never formed. Per sample, then,
       X_3D[c, h, w] = sigma(b_2[c] + sum_j W_2[c, j] relu(v_j + r_j M_s[h, w]))
   every channel's attention is a piecewise-linear function of the one scalar M_s at that pixel,
   followed by a sigmoid.

4. Batch norm. At inference each BN is an affine map and folds into the convolution before it
   (``fold_bn``): the spatial BN into the tap weights, F_ex's BNs into (v, r) and into W_2.
   In training BN uses batch statistics. The spatial BN and F_ex's first BN act on maps of 1 and
   C/d channels, computed as they are. F_ex's second BN needs the mean and variance over
   (N, H, W) of z = W_2 h + b_2 (C channels), which follow from the C/d-channel map h alone
   (``linear_batch_stats``):
       mean(z) = W_2 mean(h) + b_2,     var(z)_c = w_c^T Cov(h) w_c
   so z is never stored; the batch-statistics BN then folds into W_2 like the inference one.
   Running statistics are updated exactly as ``nn.BatchNorm2d`` does.

5. One pass for the gate, eq. 7 and the block's ReLU (``torch_impl.kernels.gate``):
       out = relu(U * sigma(W_2' h + b_2') + X_l)
   computing the second convolution tile by tile inside the pass (Triton on CUDA).

Multiply-accumulates per pixel of the final design (concatenation, k = 3, d = 16):
straightforward 18C + 2C^2/16, fast 18C + C^2/16 + C/16. Over ResNet-50 that removes 0.21 of the
module's 0.51 GMACs (about 40%): 4.09 + 0.30 GMACs, 1.07x ResNet-50, is the fast path's floor.

Memory in training (``_FusedTail``): a custom autograd Function keeps only the block's own tensors
(the pre-BN residual R, the shortcut X_l, the output, which plain ResNet keeps too) and the small
maps (k^2 taps and per-sample sums); U = BN(R), the gate and its logits are recomputed in backward.
The small graph (maps of at most C/d channels, and the vectors) is re-run under autograd in
backward, so its gradients, batch statistics included, come from autograd itself.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from reference_numpy.designs import AFF3DDesign

from ..kernels import gate as gate_kernels

# ---------------------------------------------------------------------------------------------
# The algebra, one identity per function (each proved in tests/test_fast_path.py).
# ---------------------------------------------------------------------------------------------


def split_spatial_weight(weight: torch.Tensor, design: AFF3DDesign, channels: int):
    """Step 1: the weights W_U, W_X acting on U and on X_l, so conv(U (+) X_l) = conv_U(U) + conv_X(X_l).

    weight: F_conv's (1, C_in, k, k). Concatenation: W_U, W_X = W'[:, :C], W'[:, C:]. Summation:
    both are W'. Residual-only spatial input: (W', None).
    """
    if design.spatial_input == "residual":
        return weight, None
    if design.merge == "concat":
        return weight[:, :channels], weight[:, channels:]
    return weight, weight


def tap_weights(weight: torch.Tensor) -> torch.Tensor:
    """(1, C, k, k) -> (k^2, C): row t = dy * k + dx is the 1x1 filter of tap (dy, dx)."""
    _, C, k, _ = weight.shape
    return weight[0].permute(1, 2, 0).reshape(k * k, C)


def spatial_taps(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Step 2, projection: T_t = sum_c taps[t, c] x[c], (N, C, H, W) -> (N, k^2, H, W), one product."""
    N, C, H, W = x.shape
    T = torch.matmul(taps.to(x.dtype), x.flatten(2))
    return T.view(N, taps.shape[0], H, W)


def shift_kernel(k: int, like: torch.Tensor) -> torch.Tensor:
    """The (1, k^2, k, k) one-hot kernel E with E[0, t, dy, dx] = 1 where t = dy * k + dx."""
    return torch.eye(k * k, dtype=like.dtype, device=like.device).view(1, k * k, k, k)


def shift_sum(T: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Step 2, shifts: sum_t T_t[h + dy - k//2, w + dx - k//2] (zero outside), (N, k^2, H, W) -> (N, 1, H, W).

    A convolution with the one-hot kernel E computes exactly this sum (its products are by 1 or 0).
    """
    return F.conv2d(T, shift_kernel(k, T), bias, padding=k // 2)


def shift_sum_strided(T: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``shift_sum`` as one reduction over a strided view of the zero-padded taps (inference only).

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
    """Steps 1 + 2: conv_k(U (+) X_l, W') without the merged input, as shift_sum(taps(U) + taps(X_l)).

    Returns F_conv's convolution before its batch norm, (N, 1, H, W).
    """
    W_U, W_X = split_spatial_weight(weight, design, U.shape[1])
    T = spatial_taps(U, tap_weights(W_U))
    if W_X is not None:
        T = T + spatial_taps(X_l, tap_weights(W_X))
    return shift_sum(T, weight.shape[-1])


def channel_squeeze_split(U: torch.Tensor, X_l: torch.Tensor, design: AFF3DDesign) -> torch.Tensor:
    """Eq. 4, (N, C): M_c^r = mean(U); M_c^{r+s} = mean(U + X_l) = mean(U) + mean(X_l) (no U + X_l map)."""
    M_c = U.mean((2, 3))
    return M_c + X_l.mean((2, 3)) if design.channel_input == "residual+skip" else M_c


def rank1_fex_input(M_c: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor | None = None):
    """Step 3: W_1 M_3D[:, h, w] = v + r M_s[h, w] with v = W_1 M_c (+ b_1) (N, C/d), r = W_1 1 (C/d).

    W1: F_ex's first convolution as a (C/d, C) matrix.
    """
    v = M_c @ W1.t()
    if b1 is not None:
        v = v + b1
    return v, W1.sum(1)


def fex_hidden(v: torch.Tensor, r: torch.Tensor, M_s: torch.Tensor) -> torch.Tensor:
    """Step 3: the (N, C/d, H, W) map v_j + r_j M_s[h, w] (= W_1 M_3D, before F_ex's first BN)."""
    return torch.addcmul(v[:, :, None, None], r[None, :, None, None], M_s)


def linear_batch_stats(h: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor | None = None):
    """Step 4: batch mean and (biased) variance over (N, H, W) of z = W_2 h + b_2, without forming z.

    mean(z) = W_2 mean(h) + b_2 and var(z)_c = w_c^T Cov(h) w_c, Cov(h) the (C/d x C/d) covariance
    of h's channels over all N * H * W positions. Returns two (C,) vectors.
    """
    Cd = h.shape[1]
    flat = h.transpose(0, 1).reshape(Cd, -1)
    mu = flat.mean(1)
    centered = flat - mu[:, None]
    cov = centered @ centered.t() / flat.shape[1]
    mean = W2 @ mu
    if b2 is not None:
        mean = mean + b2
    var = ((W2 @ cov) * W2).sum(1).clamp_min(0)
    return mean, var


def fold_bn(weight, bias, mean, var, eps: float):
    """Step 4: BN(x) = scale * x + shift per channel, scale = gamma / sqrt(var + eps), shift = beta - mean * scale."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


# ---------------------------------------------------------------------------------------------
# Batch norm, as nn.BatchNorm2d does it (mode, running statistics, momentum).
# ---------------------------------------------------------------------------------------------


def supported_norm(bn: nn.Module | None) -> bool:
    """Plain BatchNorm2d (or no norm) only: SyncBatchNorm and frozen norms take the reference path."""
    return bn is None or isinstance(bn, nn.Identity) or type(bn) is nn.BatchNorm2d


def _uses_batch_stats(bn: nn.BatchNorm2d) -> bool:
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def _momentum_step(bn: nn.BatchNorm2d) -> float | None:
    """Count one training batch like ``_BatchNorm.forward`` and return the averaging factor (None: no update)."""
    if not (bn.training and bn.track_running_stats):
        return None
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    if bn.momentum is None:
        return 1.0 / float(bn.num_batches_tracked)
    return bn.momentum


def _batch_norm(bn: nn.Module, x: torch.Tensor, update: bool, weight=None, bias=None) -> torch.Tensor:
    """BN on a small map (1 or C/d channels) with nn.BatchNorm2d's semantics, as plain tensor ops.

    ``update=False`` leaves the running statistics alone (the re-run in backward). ``weight``/``bias``
    default to the module's (passed explicitly when re-run under autograd). Written out rather than
    F.batch_norm because cuDNN's kernel for a one-channel map is slow (it parallelises over channels),
    and autograd through ``var_mean`` gives batch norm's exact gradient.
    """
    if isinstance(bn, nn.Identity):
        return x
    weight = bn.weight if weight is None else weight
    bias = bn.bias if bias is None else bias
    if _uses_batch_stats(bn):
        count = x.numel() // x.shape[1]
        _check_batch_count(count, x.shape)
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        if update:
            _update_running_stats(bn, mean, var, count)
    else:
        mean, var = bn.running_mean.to(x.dtype), bn.running_var.to(x.dtype)
    scale, shift = fold_bn(weight, bias, mean, var, bn.eps)
    return torch.addcmul(shift[:, None, None], x, scale[:, None, None])


def _check_batch_count(count: int, shape) -> None:
    if count <= 1:  # what nn.BatchNorm2d says, for the same input
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(shape)}")


@torch.no_grad()
def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """running <- (1 - m) running + m batch, with the unbiased variance, as nn.BatchNorm2d."""
    momentum = _momentum_step(bn)
    if momentum is None or bn.running_mean is None:
        return
    bn.running_mean.mul_(1 - momentum).add_(mean.detach().to(bn.running_mean.dtype), alpha=momentum)
    unbiased = var.detach().to(bn.running_var.dtype) * (count / (count - 1))
    bn.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def _norm_stats(bn: nn.BatchNorm2d, x: torch.Tensor, update: bool):
    """(mean, biased var) over (N, H, W) in training (float32 or wider), running statistics otherwise."""
    if not _uses_batch_stats(bn):
        return bn.running_mean, bn.running_var
    count = x.numel() // x.shape[1]
    _check_batch_count(count, x.shape)
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        mean, invstd = torch.batch_norm_stats(x, 0.0)  # float32 statistics of a 16-bit map, one pass
        var = invstd.pow(-2)
    else:
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    if update:
        _update_running_stats(bn, mean, var, count)
    return mean, var


# ---------------------------------------------------------------------------------------------
# The fast forward of the F_ex designs (final design and its ablations), shared by all paths.
# ---------------------------------------------------------------------------------------------


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _autocast_off(t: torch.Tensor):
    """Autocast off inside the fast path, which picks its own precisions (16-bit maps, 32-bit small graph)."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


@dataclass
class _Plan:
    """What one call computes (everything that is not a tensor argument of ``_FusedTail``)."""

    module: nn.Module
    norm: nn.BatchNorm2d | None
    add: bool
    relu: bool


def _weights(m: nn.Module, norm: nn.Module | None) -> list:
    """The tensors ``_FusedTail`` differentiates, in its argument order."""
    f = m.fex
    return [
        None if norm is None else norm.weight,
        None if norm is None else norm.bias,
        m.spatial.conv.weight,
        m.spatial.bn.weight,
        m.spatial.bn.bias,
        f.conv1.weight,
        f.conv1.bias,
        getattr(f.bn1, "weight", None),
        getattr(f.bn1, "bias", None),
        f.conv2.weight,
        f.conv2.bias,
        getattr(f.bn2, "weight", None),
        getattr(f.bn2, "bias", None),
    ]


def _residual_and_norm(plan: _Plan, R: torch.Tensor, nw, nb, update: bool):
    """U = BN(R) with the block's norm (or R itself), the per-channel (scale, shift) that make it, and
    the batch (mean, var) that BN's backward needs."""
    if plan.norm is None:
        return R, None, None, None, None
    bn = plan.norm
    cdt = _compute_dtype(R)
    mean, var = _norm_stats(bn, R, update)
    mean, var = mean.to(cdt), var.to(cdt)
    scale, shift = fold_bn(nw, nb, mean, var, bn.eps)
    return _normalized(R, mean, var, nw, nb, bn.eps), scale, shift, mean, var


def _normalized(R, mean, var, weight, bias, eps):
    """BN(R) with given statistics, in R's dtype and memory format (one pass, PyTorch's own kernel)."""
    return F.batch_norm(R, mean, var, weight, bias, False, 0.0, eps)


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _pad_rows(taps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """taps with zero rows up to a multiple of 16 on CUDA: k^2 = 9 columns make cuBLAS fall back to
    unaligned kernels several times slower; the zero rows add exact zeros, sliced off after."""
    k2 = taps.shape[0]
    if not x.is_cuda or k2 % 16 == 0:
        return taps
    return torch.cat([taps, taps.new_zeros(16 - k2 % 16, taps.shape[1])])


def _project(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``spatial_taps`` in x's memory format: with channels_last, one (NHW x C) @ (C x k^2) product."""
    if not _channels_last(x):
        return spatial_taps(x, taps)
    N, C, H, W = x.shape
    k2 = taps.shape[0]
    rows = x.permute(0, 2, 3, 1).reshape(N * H * W, C)  # a view
    T = rows @ _pad_rows(taps, x).to(x.dtype).t()
    return T[:, :k2].view(N, H, W, k2).permute(0, 3, 1, 2)


def _add_projected_back(base: torch.Tensor | None, dT: torch.Tensor, taps: torch.Tensor, dS=None, like=None):
    """base + taps^T dT (+ dS broadcast over pixels): the adjoint of ``_project`` (and of the sums), one
    batched product in base's memory format. dT (N, k^2, H, W), taps (k^2, C), dS (N, C) or None."""
    like = base if base is not None else like
    N, C, H, W = like.shape
    dt = like.dtype
    k2 = taps.shape[0]
    if _channels_last(like):
        A = dT.permute(0, 2, 3, 1).reshape(N, H * W, k2)
        B = taps.expand(N, k2, C)
        if dS is not None:
            A = torch.cat([A, A.new_ones(N, H * W, 1)], 2)
            B = torch.cat([B, dS[:, None, :].to(B.dtype)], 1)
        if like.is_cuda and A.shape[2] % 16:  # aligned inner dimension (see _pad_rows)
            pad = 16 - A.shape[2] % 16
            A = torch.cat([A, A.new_zeros(N, H * W, pad)], 2)
            B = torch.cat([B, B.new_zeros(N, pad, C)], 1)
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


def _tap_weight_grad(dT: torch.Tensor, x: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
    """(k^2, C): sum over samples and pixels of dT[t] x[c], the gradient of ``_project``'s taps."""
    N, C, H, W = x.shape
    k2 = dT.shape[1]
    if _channels_last(x):
        A = dT.permute(0, 2, 3, 1).reshape(N * H * W, k2).to(x.dtype)
        if x.is_cuda and k2 % 16:  # aligned shapes (see _pad_rows)
            A = torch.cat([A, A.new_zeros(N * H * W, 16 - k2 % 16)], 1)
        return (A.t() @ x.permute(0, 2, 3, 1).reshape(N * H * W, C))[:k2].to(cdt)
    return torch.bmm(dT.reshape(N, k2, H * W).to(x.dtype), x.flatten(2).transpose(1, 2)).to(cdt).sum(0)


def _full_map_reductions(m: nn.Module, U: torch.Tensor, X: torch.Tensor, W_sp: torch.Tensor):
    """What the small graph needs from the C x H x W maps: taps T (N, k^2, H, W) and sums of U (and X_l)."""
    d = m.design
    cdt = _compute_dtype(U)
    W_U, W_X = split_spatial_weight(W_sp, d, U.shape[1])
    T = _project(U, tap_weights(W_U)).to(cdt)
    if W_X is not None:
        T = T + _project(X, tap_weights(W_X)).to(cdt)
    S = U.sum((2, 3), dtype=cdt)
    if d.channel_input == "residual+skip":
        S = S + X.sum((2, 3), dtype=cdt)
    return T, S


def _small_graph(plan: _Plan, T, S, HW: int, w: list, update: bool):
    """From taps T and sums S to F_ex's hidden map h and the folded second convolution (W_2', b_2').

    Maps here have 1 or C/d channels; ``w`` is ``_weights``' list (tensors, maybe detached leaves).
    """
    m = plan.module
    _, _, _, s_w, s_b, W1, b1, bn1_w, bn1_b, W2, b2, bn2_w, bn2_b = w
    k = m.design.kernel_size
    M_c = S / HW  # eq. 4
    M_s = _batch_norm(m.spatial.bn, shift_sum(T, k), update, s_w, s_b)  # eq. 5
    v, r = rank1_fex_input(M_c, W1.flatten(1), b1)  # eqs. 1, 6: W_1 M_3D = v + r M_s
    h = F.relu(_batch_norm(m.fex.bn1, fex_hidden(v, r, M_s), update, bn1_w, bn1_b))
    W2m = W2.flatten(1)
    bn2 = m.fex.bn2
    if isinstance(bn2, nn.Identity):
        return h, W2m, (b2 if b2 is not None else W2m.new_zeros(W2m.shape[0]))
    if _uses_batch_stats(bn2):
        count = h.numel() // h.shape[1]
        _check_batch_count(count, (h.shape[0], W2m.shape[0], *h.shape[2:]))
        mean, var = linear_batch_stats(h, W2m, b2)
        if update:
            _update_running_stats(bn2, mean, var, count)
    else:
        mean, var = bn2.running_mean.to(h.dtype), bn2.running_var.to(h.dtype)
    scale, shift = fold_bn(bn2_w, bn2_b, mean, var, bn2.eps)
    b2f = shift if b2 is None else shift + scale * b2
    return h, scale[:, None] * W2m, b2f


def _tail_forward(plan: _Plan, R, X, w: list, update: bool, gate_fn):
    """The whole fast forward (any grad mode); returns out and what backward needs."""
    m = plan.module
    U, scale, shift, mean, var = _residual_and_norm(plan, R, w[0], w[1], update)
    T, S = _full_map_reductions(m, U, X, w[2])
    h, W2f, b2f = _small_graph(plan, T, S, R.shape[2] * R.shape[3], w, update)
    if gate_fn is gate_kernels.gate_forward_torch:
        out = gate_fn(U, X, h, W2f, b2f, None, None, plan.add, plan.relu)
    else:  # the fused kernel re-derives U from R on the fly
        out = gate_fn(R, X, h, W2f, b2f, scale, shift, plan.add, plan.relu)
    return out, T, S, (scale, shift, mean, var)


class _FusedTail(torch.autograd.Function):
    """act(U * X_3D [+ X_l]) with U = norm(R), keeping only R, X_l, out and the small maps for backward."""

    @staticmethod
    def forward(ctx, plan: _Plan, R, X, *w):
        with torch.no_grad(), _autocast_off(R):
            out, T, S, norm_stats = _tail_forward(plan, R, X, list(w), True, gate_kernels.gate_forward)
        ctx.plan = plan
        ctx.needs = ctx.needs_input_grad
        ctx.save_for_backward(R, X, out if plan.relu else None, T, S, *norm_stats, *w)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        plan = ctx.plan
        m = plan.module
        R, X, out, T, S, scale, shift, mean, var, *w = ctx.saved_tensors
        N, C, H, W = R.shape
        d = m.design
        cdt = _compute_dtype(R)
        with torch.enable_grad(), _autocast_off(R):
            # Re-run the small graph under autograd (batch statistics recomputed, not updated).
            T_ = T.detach().requires_grad_()
            S_ = S.detach().requires_grad_()
            w_ = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in w]
            h, W2f, b2f = _small_graph(plan, T_, S_, H * W, w_, update=False)
        with torch.no_grad(), _autocast_off(R):
            dU, dy, dh, dW2f, db2f = gate_kernels.gate_backward(
                dout.contiguous(memory_format=_memory_format(R)), out, R, h.detach(), W2f.detach(), b2f.detach(),
                scale, shift, plan.add, plan.relu,
            )
        small_inputs = [T_, S_] + [t for t in w_[3:] if t is not None and t.requires_grad]
        with _autocast_off(R):
            grads = torch.autograd.grad((h, W2f, b2f), small_inputs, (dh, dW2f, db2f), allow_unused=True)
        dT, dS = grads[0], grads[1]
        small_grads = iter(grads[2:])
        d_small = [next(small_grads) if (t is not None and t.requires_grad) else None for t in w_[3:]]
        with torch.no_grad(), _autocast_off(R):
            # Through the taps and the sums: dU += W_U^T dT + dS, dX_l += W_X^T dT (+ dS) (+ dy).
            W_U, W_X = split_spatial_weight(w[2], d, C)
            taps_U = tap_weights(W_U)
            dU = _add_projected_back(dU, dT, taps_U, dS)
            U = R if plan.norm is None else _normalized(R, mean, var, w[0], w[1], plan.norm.eps)
            dW_U = _tap_weight_grad(dT, U, cdt)
            del U
            dS_X = dS if d.channel_input == "residual+skip" else None
            dX = dy
            if W_X is not None:
                dX = _add_projected_back(dX, dT, tap_weights(W_X), dS_X, like=R)
                dW_X = _tap_weight_grad(dT, X, cdt)
            elif dS_X is not None:
                dS_map = dS_X[:, :, None, None]
                dX = dS_map.to(R.dtype).expand(N, C, H, W) if dX is None else dX + dS_map
            k = d.kernel_size
            as_weight = lambda g: g.t().reshape(1, -1, k, k)  # noqa: E731  (k^2, C) -> (1, C, k, k)
            if W_X is None:
                dW_sp = as_weight(dW_U)
            elif d.merge == "concat":
                dW_sp = torch.cat([as_weight(dW_U), as_weight(dW_X)], 1)
            else:
                dW_sp = as_weight(dW_U + dW_X)
            if plan.norm is None:
                dR, dnw, dnb = dU, None, None
            else:
                dR, dnw, dnb = _norm_backward(plan.norm, R, dU, w[0], mean, var)
        grads_out = [None, dR.to(R.dtype), None if dX is None else dX.to(X.dtype), dnw, dnb, dW_sp.to(w[2].dtype)]
        grads_out += d_small
        return tuple(g if need else None for g, need in zip(grads_out, ctx.needs))


def _memory_format(t: torch.Tensor):
    return torch.channels_last if (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
                                   and not t.is_contiguous()) else torch.contiguous_format


def _norm_backward(bn: nn.BatchNorm2d, R, dU, weight, mean, var):
    """Gradients of U = BN(R) through PyTorch's own batch-norm backward (batch or running statistics)."""
    train = _uses_batch_stats(bn)
    invstd = torch.rsqrt(var + bn.eps)
    if not R.is_cuda and weight is not None and R.dtype != weight.dtype:  # the CPU kernel wants one dtype
        dR, dw, db = _norm_backward(bn, R.to(weight.dtype), dU.to(weight.dtype), weight, mean, var)
        return dR.to(R.dtype), dw, db
    dR, dw, db = torch.ops.aten.native_batch_norm_backward(
        dU, R, weight, bn.running_mean, bn.running_var, mean if train else None, invstd if train else None,
        train, bn.eps, [True, weight is not None, weight is not None],
    )
    return dR, dw, db


# ---------------------------------------------------------------------------------------------
# Inference: every BN folded once and cached until a weight, a BN mode or the dtype changes.
# ---------------------------------------------------------------------------------------------


def _leaf_modules(m: nn.Module, norm: nn.Module | None) -> tuple:
    """The modules whose tensors the folded weights come from (direct dict access: this runs per call)."""
    sp, fx = m._modules["spatial"]._modules, m._modules["fex"]._modules
    return (sp["conv"], sp["bn"], fx["conv1"], fx["bn1"], fx["conv2"], fx["bn2"], norm)


def _state_key(mods: tuple, dtype: torch.dtype) -> tuple:
    """Identifies the weights' current values: each module, its mode, and each tensor's storage and
    in-place version (an optimizer step or ``load_state_dict`` bumps the version)."""
    key = [dtype]
    for mod in mods:
        if mod is None:
            key.append(None)
            continue
        key += (id(mod), mod.training)
        for t in (*mod._parameters.values(), *mod._buffers.values()):
            if t is not None:
                key += (t.data_ptr(), t._version)
    return tuple(key)


@dataclass
class _Folded:
    """The module at inference as plain tensors: taps (spatial BN folded), F_ex's convs (BNs folded)."""

    key: tuple
    taps_U: torch.Tensor  # (k^2, C)
    taps_X: torch.Tensor | None  # (k^2, C) or None (residual-only spatial input)
    b_s: torch.Tensor  # (1,) spatial BN shift
    W1t: torch.Tensor  # (C, C/d): W_1'^T
    b1: torch.Tensor  # (C/d,)
    r: torch.Tensor  # (C/d,): W_1' 1
    W2: torch.Tensor  # (C, C/d)
    b2: torch.Tensor  # (C,)
    W2b: torch.Tensor  # (C, C/d + 1): [W_2', b_2'], for a hidden map with a row of ones appended
    norm_scale: torch.Tensor | None  # the block's norm as an affine map, when given
    norm_shift: torch.Tensor | None


def _fold_module(m: nn.Module, norm: nn.Module | None, dtype: torch.dtype, key: tuple) -> _Folded:
    d = m.design
    sbn = m.spatial.bn
    s_scale, s_shift = fold_bn(sbn.weight, sbn.bias, sbn.running_mean, sbn.running_var, sbn.eps)
    W_U, W_X = split_spatial_weight(m.spatial.conv.weight * s_scale, d, m.channels)
    f = m.fex
    W1 = f.conv1.weight.flatten(1)
    b1 = f.conv1.bias if f.conv1.bias is not None else W1.new_zeros(W1.shape[0])
    if not isinstance(f.bn1, nn.Identity):
        a1, c1 = fold_bn(f.bn1.weight, f.bn1.bias, f.bn1.running_mean, f.bn1.running_var, f.bn1.eps)
        W1, b1 = a1[:, None] * W1, a1 * b1 + c1
    W2 = f.conv2.weight.flatten(1)
    b2 = f.conv2.bias if f.conv2.bias is not None else W2.new_zeros(W2.shape[0])
    if not isinstance(f.bn2, nn.Identity):
        a2, c2 = fold_bn(f.bn2.weight, f.bn2.bias, f.bn2.running_mean, f.bn2.running_var, f.bn2.eps)
        W2, b2 = a2[:, None] * W2, a2 * b2 + c2
    n_scale = n_shift = None
    if norm is not None:
        n_scale, n_shift = fold_bn(norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps)
    cast = lambda t: None if t is None else t.detach().to(dtype).contiguous()  # noqa: E731
    return _Folded(
        key, cast(tap_weights(W_U)), cast(None if W_X is None else tap_weights(W_X)),
        cast(s_shift), cast(W1.t()), cast(b1), cast(W1.sum(1)),
        cast(W2), cast(b2), cast(torch.cat([W2, b2[:, None]], 1)), cast(n_scale), cast(n_shift),
    )


def _folded(m: nn.Module, norm: nn.Module | None, dtype: torch.dtype, cache: bool) -> _Folded:
    key = _state_key(_leaf_modules(m, norm), dtype)
    f = m.__dict__.get("_fast_folded")
    if f is not None and f.key == key:
        return f
    with torch.no_grad():
        f = _fold_module(m, norm, dtype, key)
    if cache:
        m.__dict__["_fast_folded"] = f
    return f


def _inference_norm(f: _Folded, norm: nn.Module | None, R: torch.Tensor) -> torch.Tensor:
    """U = norm(R) at inference, in R's dtype: PyTorch's own batch-norm kernel where the dtypes allow
    (on CPU about 3x faster than the same affine map as a broadcast ``addcmul``), else the folded map."""
    if f.norm_scale is None:
        return R
    if type(norm) is nn.BatchNorm2d and norm.weight is not None and norm.weight.dtype == R.dtype:
        return F.batch_norm(R, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
    return torch.addcmul(f.norm_shift[:, None, None], R, f.norm_scale[:, None, None]).to(R.dtype)


def _inference(m: nn.Module, f: _Folded, R, X, add: bool, relu: bool, norm: nn.Module | None = None):
    """No autograd, every BN in inference mode: folded weights, one product per full-map step."""
    d = m.design
    cdt = f.W2.dtype
    U = _inference_norm(f, norm, R)
    N, C, H, W = U.shape
    M_c = U.mean((2, 3), dtype=cdt)  # eq. 4
    if d.channel_input == "residual+skip":
        M_c = M_c + X.mean((2, 3), dtype=cdt)
    taps = f.taps_U if U.dtype == cdt else f.taps_U.to(U.dtype)
    T = torch.matmul(taps, U.flatten(2))  # steps 1-2: the projections ...
    if f.taps_X is not None:
        taps = f.taps_X if X.dtype == cdt else f.taps_X.to(X.dtype)
        T = torch.baddbmm(T, taps.expand(N, -1, -1), X.flatten(2))
    if T.dtype != cdt:
        T = T.to(cdt)
    M_s = shift_sum_strided(T.view(N, -1, H, W), d.kernel_size, f.b_s)  # ... and the shifts: eq. 5
    v = torch.addmm(f.b1, M_c, f.W1t)  # step 3: W_1 M_3D = v + r M_s
    Cd = v.shape[1]
    if gate_kernels.triton_enabled(U, Cd) or _tracing():  # (dynamo refuses the strided out= below)
        h = torch.addcmul(v[:, :, None], f.r[None, :, None], M_s.view(N, 1, H * W)).relu_().view(N, Cd, H, W)
        return gate_kernels.gate_forward(U, X, h, f.W2, f.b2, None, None, add, relu)  # eqs. 6, 2, 7
    # h with a row of ones appended, so that [W_2', b_2'] [h; 1] = W_2' h + b_2' is one product.
    hb = torch.empty(N, Cd + 1, H * W, dtype=cdt, device=U.device)
    hb[:, Cd].fill_(1)
    h = hb[:, :Cd]
    torch.addcmul(v[:, :, None], f.r[None, :, None], M_s.view(N, 1, H * W), out=h).relu_()
    return gate_kernels.gate_forward(U, X, hb.view(N, Cd + 1, H, W), f.W2b, None, None, None, add, relu)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _reference(m, R, X, norm, add, relu):
    U = R if norm is None else norm(R)
    out = m.forward_reference(U, X)
    if add:
        out = out + X
    return torch.relu(out) if relu else out


def _vector_gate(m, R, X, norm, add, relu):
    """SE and parallel designs: the gate is (N, C, 1, 1) and/or (N, 1, H, W); only the spatial conv is split."""
    d = m.design
    U = R if norm is None else norm(R)
    if not d.has_spatial:
        return _reference(m, U, X, None, add, relu)  # SE exactly: nothing to shorten
    M_c = channel_squeeze_split(U, X, d)[:, :, None, None]
    a_c = torch.sigmoid(m.fex(M_c))
    a_s = torch.sigmoid(m.spatial.bn(spatial_conv_split(U, X, m.spatial.conv.weight, d)))
    gate = a_c + a_s if d.parallel_gate == "sum" else a_c * a_s  # U a_c + U a_s = U (a_c + a_s)
    out = torch.addcmul(X, U, gate) if add else U * gate
    return torch.relu(out) if relu else out


def _tracing() -> bool:
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def fast_forward(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None,
                 add: bool = False, relu: bool = False) -> torch.Tensor:
    """act(U * X_3D [+ X_l]) with U = norm(R) (or R): the fast path of ``AFF3D``.

    Picks, for the module's design and the call's mode:
      - SE / parallel designs: ``_vector_gate`` (autograd);
      - inference (no autograd, BNs in eval mode): ``_inference``, weights folded and cached;
      - otherwise ``_FusedTail`` (autograd Function, small memory, Triton on CUDA); under
        torch.compile / tracing the same algebra with plain autograd (``_tail_forward``).
    Norms other than plain BatchNorm2d (SyncBatchNorm, frozen BN) take the straightforward path.
    """
    tracing = _tracing()
    no_grad = not torch.is_grad_enabled()
    if no_grad and not tracing:  # the common inference call: one cache lookup
        f = m.__dict__.get("_fast_folded")
        if f is not None and f.key == _state_key(_leaf_modules(m, norm), _compute_dtype(R)):
            with _autocast_off(R):
                return _inference(m, f, R, X, add, relu, norm)
    d = m.design
    if not all(supported_norm(b) for b in (norm, m.spatial and m.spatial.bn, m.fex.bn1, m.fex.bn2)):
        return _reference(m, R, X, norm, add, relu)
    if not d.has_spatial or d.fusion == "parallel":
        return _vector_gate(m, R, X, norm, add, relu)
    w = _weights(m, norm)
    needs_grad = not no_grad and (
        R.requires_grad or X.requires_grad or any(t is not None and t.requires_grad for t in w)
    )
    bns = [b for b in (norm, m.spatial.bn, m.fex.bn1, m.fex.bn2) if isinstance(b, nn.BatchNorm2d)]
    with _autocast_off(R):
        if not needs_grad and not any(_uses_batch_stats(b) for b in bns):
            return _inference(m, _folded(m, norm, _compute_dtype(R), cache=not tracing), R, X, add, relu, norm)
        if tracing or not needs_grad:
            return _tail_forward(_Plan(m, norm, add, relu), R, X, w, True, gate_kernels.gate_forward_torch)[0]
    return _FusedTail.apply(_Plan(m, norm, add, relu), R, X, *w)
