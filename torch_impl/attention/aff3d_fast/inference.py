"""Inference: every norm folded into the convolution before it, once, and cached on the module.

When no gradient is needed and every norm of the module is a fixed affine map (BN in eval mode,
frozen BN), the module is three small matrices and a few vectors (``Folded``): the taps of F_conv
with its BN folded in, F_ex's first convolution with its BN folded in (W_1', b_1', r = W_1' 1), and
its second ([W_2', b_2']).

The cache. ``folded(m, dtype, device)`` builds the folding on first use and keeps it in
``m._folded``. It is dropped explicitly (``clear``) by everything that changes what it was built
from: ``AFF3D.train()``/``eval()`` (and so ``model.train()``/``model.eval()``), ``load_state_dict``,
``.to()``/``.cuda()``/``.double()`` (``AFF3D._apply``), and every call that runs with autograd
(an optimizer step may follow it). Weights edited in place under ``torch.no_grad()`` while the
module stays in eval mode are the one change it cannot see: call ``AFF3D.clear_folded()`` after.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import product_gate
from .algebra import affine, fold_bn, shift_sum_strided, spatial_taps, split_spatial_weight, tap_weights


@dataclass
class Folded:
    """The module at inference as plain tensors: taps (spatial BN folded), F_ex's convs (BNs folded)."""

    dtype: torch.dtype
    device: torch.device
    taps_U: torch.Tensor  # (k^2, C)
    taps_X: torch.Tensor | None  # (k^2, C) or None (residual-only spatial input)
    b_s: torch.Tensor  # (1,) spatial BN shift
    W1t: torch.Tensor  # (C, C/d): W_1'^T
    b1: torch.Tensor  # (C/d,)
    r: torch.Tensor  # (C/d,): W_1' 1
    W2: torch.Tensor  # (C, C/d)
    b2: torch.Tensor  # (C,)
    W2b: torch.Tensor  # (C, C/d + 1): [W_2', b_2'], for a hidden map with a row of ones appended


def _fold_norm(bn: nn.Module, W: torch.Tensor, b: torch.Tensor):
    """BN(W x + b) = (scale W) x + (scale b + shift): a norm after a 1x1 convolution, folded into it."""
    if isinstance(bn, nn.Identity):
        return W, b
    scale, shift = fold_bn(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    return scale[:, None] * W, scale * b + shift


@torch.no_grad()
def fold_module(m: nn.Module, dtype: torch.dtype) -> Folded:
    """``m``'s running statistics folded into its weights, as ``dtype``."""
    design = m.design
    sbn = m.spatial.bn
    s_scale, s_shift = fold_bn(sbn.weight, sbn.bias, sbn.running_mean, sbn.running_var, sbn.eps)
    W_U, W_X = split_spatial_weight(m.spatial.conv.weight * s_scale, design, m.channels)
    f = m.fex
    W1 = f.conv1.weight.flatten(1)
    W1, b1 = _fold_norm(f.bn1, W1, f.conv1.bias if f.conv1.bias is not None else W1.new_zeros(W1.shape[0]))
    W2 = f.conv2.weight.flatten(1)
    W2, b2 = _fold_norm(f.bn2, W2, f.conv2.bias if f.conv2.bias is not None else W2.new_zeros(W2.shape[0]))
    cast = lambda t: None if t is None else t.detach().to(dtype).contiguous()  # noqa: E731
    return Folded(
        dtype, W1.device, cast(tap_weights(W_U)), cast(None if W_X is None else tap_weights(W_X)),
        cast(s_shift), cast(W1.t()), cast(b1), cast(W1.sum(1)), cast(W2), cast(b2),
        cast(torch.cat([W2, b2[:, None]], 1)),
    )


def folded(m: nn.Module, dtype: torch.dtype, cache: bool = True) -> Folded:
    """The cached folding of ``m`` for ``dtype``, built when missing (not stored with ``cache=False``)."""
    f = m.__dict__.get("_folded")
    if f is not None and f.dtype == dtype and f.device == m.fex.conv2.weight.device:
        return f
    f = fold_module(m, dtype)
    if cache:
        m.__dict__["_folded"] = f
    return f


def clear(m: nn.Module) -> None:
    """Drop ``m``'s cached folding; the next inference call folds the current weights again."""
    m.__dict__["_folded"] = None


def _inference_norm(norm: nn.Module | None, R: torch.Tensor) -> torch.Tensor:
    """U = norm(R) at inference, in R's dtype: PyTorch's own batch-norm kernel where the dtypes allow
    (on CPU about 3x faster than the same affine map as a broadcast ``addcmul``), else the affine map."""
    if norm is None:
        return R
    if norm.weight is not None and norm.weight.dtype == R.dtype:
        return F.batch_norm(R, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
    return affine(R, *fold_bn(norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps)).to(R.dtype)


def inference(m: nn.Module, f: Folded, R, X, add: bool, relu: bool, norm: nn.Module | None = None,
              plain_ops: bool = False):
    """No autograd, every norm fixed: folded weights, one product per full-map step.

    ``plain_ops``: no strided ``out=`` writes (what torch.compile needs), the same operations otherwise.
    """
    design = m.design
    cdt = f.dtype
    U = _inference_norm(norm, R)
    N, C, H, W = U.shape
    M_c = U.mean((2, 3), dtype=cdt)  # eq. 4
    if design.channel_input == "residual+skip":
        M_c = M_c + X.mean((2, 3), dtype=cdt)
    T = spatial_taps(U, f.taps_U).to(cdt)  # steps 1-2: the projections ...
    if f.taps_X is not None:
        T = T + spatial_taps(X, f.taps_X).to(cdt)
    M_s = shift_sum_strided(T.view(N, -1, H, W), design.kernel_size, f.b_s)  # ... and the shifts: eq. 5
    v = torch.addmm(f.b1, M_c, f.W1t)  # step 3: W_1 M_3D = v + r M_s
    Cd = v.shape[1]
    # h with a row of ones appended, so that [W_2', b_2'] [h; 1] = W_2' h + b_2' is one product.
    if plain_ops:  # the same values without a strided out= write (which dynamo refuses)
        h = torch.addcmul(v[:, :, None], f.r[None, :, None], M_s.view(N, 1, H * W)).relu_()
        hb = torch.cat([h, h.new_ones(N, 1, H * W)], 1)
    else:
        hb = torch.empty(N, Cd + 1, H * W, dtype=cdt, device=U.device)
        hb[:, Cd].fill_(1)
        torch.addcmul(v[:, :, None], f.r[None, :, None], M_s.view(N, 1, H * W), out=hb[:, :Cd]).relu_()
    return product_gate.gate_forward(U, X, hb.view(N, Cd + 1, H, W), f.W2b, None, None, None, add, relu)  # eqs. 6, 2, 7
