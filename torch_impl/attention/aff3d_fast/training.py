"""Training on the product form: ``FusedTail``, the memory-saving autograd Function of route ``fused_tail``.

The forward splits into three parts by the size of what they touch:

    full maps   U = BN(R) (the block's norm, optional) and X_l, (N, C, H, W): the k^2 tap
                projections T and the per-sample sums S (``full_map.full_map_reductions``);
    small graph T, S -> M_s, M_c -> F_ex's hidden map h (N, C/d, H, W) and F_ex's second
                convolution with its BN folded, (W_2', b_2') (``small_graph``): maps of at most
                C/d channels and vectors;
    gate        out = act(U * sigma(W_2' h + b_2') [+ X_l]), one pass (``product_gate``).

``FusedTail`` keeps for backward only R, X_l, the output (which the plain ResNet block keeps too)
and T, S; U, the gate and its logits are recomputed. Its backward re-runs the small graph under
autograd, so the gradients of everything small, batch statistics included, are autograd's own;
only the full-map steps are written out by hand, each with its math beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from . import product_gate
from .algebra import (
    compute_dtype,
    fex_hidden,
    fold_bn,
    linear_batch_stats,
    rank1_fex_input,
    shift_sum,
    split_spatial_weight,
    tap_weights,
)
from .full_map import autocast_off, full_map_reductions, memory_format, project_back, tap_weight_grad
from .norms import batch_statistics, norm_backward, norm_small_map, normalized


@dataclass
class Plan:
    """What one call computes (everything that is not a tensor argument of ``FusedTail``)."""

    module: nn.Module
    norm: nn.Module | None  # the block's last norm, applied on the fly (U = norm(R)), or None (U = R)
    add: bool  # add the shortcut X_l (eq. 7)
    relu: bool  # the block's ReLU


def weights(m: nn.Module, norm: nn.Module | None) -> list:
    """The tensors ``FusedTail`` differentiates, in its argument order (None where a layer has none)."""
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


def residual_and_norm(plan: Plan, R: torch.Tensor, nw, nb, update: bool):
    """U = norm(R) (or R itself), the per-channel (scale, shift) that make it, and the (mean, var) used."""
    if plan.norm is None:
        return R, None, None, None, None
    bn = plan.norm
    mean, var = batch_statistics(bn, R, update, dtype=compute_dtype(R))
    scale, shift = fold_bn(nw, nb, mean, var, bn.eps)
    return normalized(R, mean, var, nw, nb, bn.eps), scale, shift, mean, var


def small_graph(plan: Plan, T, S, HW: int, w: list, update: bool):
    """From taps T and sums S to F_ex's hidden map h and the folded second convolution (W_2', b_2').

    ``w`` is ``weights``' list (the module's tensors, or detached leaves in backward).
    """
    m = plan.module
    _, _, _, _, _, W1, b1, bn1_w, bn1_b, W2, b2, bn2_w, bn2_b = w
    M_c = S / HW  # eq. 4
    M_s = norm_small_map(m.spatial.bn, shift_sum(T, m.design.kernel_size), update, w[3], w[4])  # eq. 5
    v, r = rank1_fex_input(M_c, W1.flatten(1), b1)  # eqs. 1, 6: W_1 M_3D = v + r M_s
    h = F.relu(norm_small_map(m.fex.bn1, fex_hidden(v, r, M_s), update, bn1_w, bn1_b))
    W2m = W2.flatten(1)
    bn2 = m.fex.bn2
    if isinstance(bn2, nn.Identity):
        return h, W2m, (b2 if b2 is not None else W2m.new_zeros(W2m.shape[0]))
    # F_ex's second BN acts on z = W_2 h + b_2 (C channels), whose moments follow from h alone
    mean, var = batch_statistics(bn2, h, update, moments=lambda x: linear_batch_stats(x, W2m, b2))
    scale, shift = fold_bn(bn2_w, bn2_b, mean, var, bn2.eps)
    b2f = shift if b2 is None else shift + scale * b2
    return h, scale[:, None] * W2m, b2f


def tail_forward(plan: Plan, R, X, w: list, update: bool):
    """The fast forward without autograd; returns out and what ``FusedTail``'s backward needs."""
    m = plan.module
    U, scale, shift, mean, var = residual_and_norm(plan, R, w[0], w[1], update)
    T, S = full_map_reductions(m, U, X, w[2])
    h, W2f, b2f = small_graph(plan, T, S, R.shape[2] * R.shape[3], w, update)
    out = product_gate.gate_forward(R, X, h, W2f, b2f, scale, shift, plan.add, plan.relu)  # U = R scale + shift
    return out, T, S, (scale, shift, mean, var)


def _as_kernel(g: torch.Tensor, k: int) -> torch.Tensor:
    """(k^2, C) tap gradients -> F_conv's (1, C, k, k) layout (the inverse of ``tap_weights``)."""
    return g.t().reshape(1, -1, k, k)


class FusedTail(torch.autograd.Function):
    """out = act(U * X_3D [+ X_l]), U = norm(R); backward keeps R, X_l, out and the small maps only."""

    @staticmethod
    def forward(ctx, plan: Plan, R, X, *w):
        with torch.no_grad(), autocast_off(R):
            out, T, S, norm_stats = tail_forward(plan, R, X, list(w), update=True)
        ctx.plan = plan
        ctx.needs = ctx.needs_input_grad
        ctx.save_for_backward(R, X, out if plan.relu else None, T, S, *norm_stats, *w)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        plan = ctx.plan
        design = plan.module.design
        R, X, out, T, S, scale, shift, mean, var, *w = ctx.saved_tensors
        N, C, H, W = R.shape
        cdt = compute_dtype(R)

        # Small graph again, under autograd: T, S -> h, (W_2', b_2'). Batch
        # statistics are recomputed from the same T and S (equal to forward's), running statistics left alone.
        with torch.enable_grad(), autocast_off(R):
            T_ = T.detach().requires_grad_()
            S_ = S.detach().requires_grad_()
            w_ = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in w]
            h, W2f, b2f = small_graph(plan, T_, S_, H * W, w_, update=False)

        # The gate, by hand (one pass; ``product_gate.gate_backward`` gives the formulas), with
        # G = sigma(W_2' h + b_2'), y = U * G (+ X_l), out = act(y):
        #   dy = dout * [out > 0];  dU = dy * G (the direct term);  dX_l = dy;
        #   dz = dy * U * G (1 - G);  dh = W_2'^T dz;  dW_2' = sum dz h^T;  db_2' = sum dz
        dout = dout.contiguous(memory_format=memory_format(R))
        with torch.no_grad(), autocast_off(R):
            dU, dy, dh, dW2f, db2f = product_gate.gate_backward(
                dout, out, R, h.detach(), W2f.detach(), b2f.detach(), scale, shift, plan.add, plan.relu,
            )
            small_outs = ((h, dh), (W2f, dW2f), (b2f, db2f))

        # From the small outputs' gradients back to T, S and the small layers' weights: autograd.
        small_leaves = [t for t in w_[3:] if t is not None and t.requires_grad]
        outs = [(o, g) for o, g in small_outs if o.requires_grad]  # (frozen BN: b_2' fixed)
        with autocast_off(R):
            grads = torch.autograd.grad([o for o, _ in outs], [T_, S_, *small_leaves], [g for _, g in outs],
                                        allow_unused=True)
        dT, dS = grads[0], grads[1]  # (N, k^2, H, W) and (N, C)
        leaf_grads = iter(grads[2:])
        d_small = [next(leaf_grads) if (t is not None and t.requires_grad) else None for t in w_[3:]]

        # Through the full-map reductions, T = W_U U (+ W_X X_l) tap by tap and S = sum_p U (+ X_l):
        with torch.no_grad(), autocast_off(R):
            W_U, W_X = split_spatial_weight(w[2], design, C)
            dU = project_back(dU, dT, tap_weights(W_U), dS)  # dU += W_U^T dT + dS (broadcast over pixels)
            U = R if plan.norm is None else normalized(R, mean, var, w[0], w[1], plan.norm.eps)  # recomputed
            dW_U = tap_weight_grad(dT, U, cdt)  # dW_U = sum_{n,p} dT U^T
            del U
            dS_X = dS if design.channel_input == "residual+skip" else None  # M_c^{r+s} sums X_l too
            dX = dy  # the shortcut's share of eq. 7 (None without the add)
            if W_X is not None:
                dX = project_back(dX, dT, tap_weights(W_X), dS_X, like=R)  # dX_l += W_X^T dT (+ dS)
                dW_X = tap_weight_grad(dT, X, cdt)  # dW_X = sum_{n,p} dT X_l^T
            elif dS_X is not None:
                dS_map = dS_X[:, :, None, None]
                dX = dS_map.to(R.dtype).expand(N, C, H, W) if dX is None else dX + dS_map
            k = design.kernel_size
            if W_X is None:  # step 1 backwards: W' = W_U, [W_U, W_X] (concat) or W_U = W_X = W' (sum)
                dW_sp = _as_kernel(dW_U, k)
            elif design.merge == "concat":
                dW_sp = torch.cat([_as_kernel(dW_U, k), _as_kernel(dW_X, k)], 1)
            else:
                dW_sp = _as_kernel(dW_U + dW_X, k)
            if plan.norm is None:  # U = R
                dR, dnw, dnb = dU, None, None
            else:  # U = BN(R): PyTorch's batch-norm backward, with the statistics forward used
                dR, dnw, dnb = norm_backward(plan.norm, R, dU, w[0], mean, var)

        grads_out = [None, dR.to(R.dtype), None if dX is None else dX.to(X.dtype), dnw, dnb, dW_sp.to(w[2].dtype)]
        grads_out += d_small
        return tuple(g if need else None for g, need in zip(grads_out, ctx.needs))
