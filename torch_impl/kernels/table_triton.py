"""Triton kernels for the table gate's tail on CUDA: the lookup, the sigmoid, eq. 7 and the ReLU.

The table gate (``attention.table_gate``) turns F_ex into per-sample tables alpha, beta (N, K + 1, C):
pixel p of sample n, with spatial value m_p in interval i(p), has the logits z = alpha[n, i] + beta[n, i] m_p.
These kernels are ``gate_cpu``'s pass for CUDA, with the block's norm applied on the fly as the
product-form kernels do (``gate_triton``), so that U = R * scale + shift is never stored
(``aff3d_fast.training.FusedTail``):

Forward, one program per (tile of BLOCK_P pixels of the N * H * W, tile of BLOCK_C channels):
    z = alpha[n, i(p)] + beta[n, i(p)] m_p        (two gathers from the tables, one multiply-add)
    out = act(U sigma(z) [+ X_l])
Backward, one program per (sample n, channel tile), looping over the sample's pixels:
    recompute z, G = sigma(z); dy = dout [out > 0]; write dU = dy G (and dy for the shortcut);
    g = dy U G (1 - G) = dL/dz;   this tile's share of dm_p = beta[n, i(p)] . g(p), written per tile;
    G0[n, i] += sum_{p in i} g(p), G1[n, i] += sum_{p in i} g(p) m_p: a one-hot (pixels x intervals)
    matrix times g, on the tensor cores, accumulated in registers and written once per program.
PyTorch adds the channel tiles' shares of dm (no atomics: runs repeat bit for bit).

Arithmetic is in the tables' type (float32; float64 in Triton's interpreter). The one-hot products
run in "ieee" float32 for 32-bit maps and in TF32 for 16-bit maps (autocast), whose gradients carry
16-bit rounding already. ``table_gate.tail_forward_torch`` / ``tail_backward_torch`` are the
specification (``tests/test_table_triton.py`` holds the kernels to it, in the interpreter on CPU).
"""

from __future__ import annotations

import os

import torch

from .gate_triton import _pow2, _strides, available, tl, triton

MAX_ROWS = 256  # K + 1 table rows held per program in backward (d = 16 up to C = 4080)
# Off unless ``AFF3D_TABLE=1``: on an H200 (ResNet-50 training, batch 256, bf16, channels_last, one
# process, interleaved) the table gate on stages 1 and 2 took 3.71x and 3.56x ResNet-50's step time in two
# runs, against the product form's 2.98x and 2.76x. Its kernels are not the reason (backward 1.06 ms a call against the product
# kernel's 0.74 ms at these stages, forward 0.30 ms); its per-sample graph is: breakpoints, sorting,
# tables, their statistics and autograd through them are some 40 small kernels per block, and the step
# was launch-bound (GPU busy 109 of 202 ms). ``docs/results/benchmark_cuda.json`` has both forms.
_ENV = "AFF3D_TABLE"


def enabled(t: torch.Tensor, rows: int) -> bool:
    """Whether these kernels serve a call: ``AFF3D_TABLE=1`` in the environment (and not
    ``AFF3D_TRITON=0``), a CUDA map of a supported dtype, Triton importable, at most MAX_ROWS table rows."""
    return (
        os.environ.get(_ENV, "0") == "1"
        and os.environ.get("AFF3D_TRITON", "1") != "0"
        and t.is_cuda
        and t.dtype in (torch.float32, torch.bfloat16, torch.float16)
        and rows <= MAX_ROWS
        and available()
    )


if triton is not None:

    @triton.jit
    def _table_fwd_kernel(
        R, X, M, IDX, A, B, SCALE, SHIFT, OUT,
        ROWS, HW, C, KP1,
        s_rn, s_rc, s_rp, s_xn, s_xc, s_xp, s_on, s_oc, s_op,
        HAS_NORM: tl.constexpr, ADD: tl.constexpr, RELU: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        rmask = rows < ROWS
        n = rows // HW
        p = rows - n * HW
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        m2 = rmask[:, None] & cmask[None, :]
        m = tl.load(M + rows, mask=rmask, other=0.0)  # M_s at the pixel
        i = tl.load(IDX + rows, mask=rmask, other=0)  # its interval
        trow = (n * KP1 + i) * C  # the pixel's table row
        a = tl.load(A + trow[:, None] + cols[None, :], mask=m2, other=0.0)
        b = tl.load(B + trow[:, None] + cols[None, :], mask=m2, other=0.0)
        g = tl.sigmoid(a + b * m[:, None])  # X_3D = sigma(alpha[i] + beta[i] m)
        u = tl.load(R + (n * s_rn + p * s_rp)[:, None] + cols[None, :] * s_rc, mask=m2, other=0.0)
        u = u.to(A.dtype.element_ty)
        if HAS_NORM:  # U = BN(R), the block's norm as an affine map
            u = u * tl.load(SCALE + cols, mask=cmask, other=0.0)[None, :] + tl.load(SHIFT + cols, mask=cmask,
                                                                                   other=0.0)[None, :]
        y = u * g  # eq. 7
        if ADD:
            x = tl.load(X + (n * s_xn + p * s_xp)[:, None] + cols[None, :] * s_xc, mask=m2, other=0.0)
            y += x.to(A.dtype.element_ty)
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(OUT + (n * s_on + p * s_op)[:, None] + cols[None, :] * s_oc, y.to(OUT.dtype.element_ty), mask=m2)

    @triton.jit
    def _table_bwd_kernel(
        DOUT, OUTP, R, M, IDX, A, B, SCALE, SHIFT,
        DU, DY, DMP, G0, G1,
        NROWS, HW, C, KP1,
        s_dn, s_dc, s_dp, s_on, s_oc, s_op, s_rn, s_rc, s_rp, s_un, s_uc, s_up, s_yn, s_yc, s_yp,
        HAS_NORM: tl.constexpr, ADD: tl.constexpr, RELU: tl.constexpr, TF32: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    ):
        n = tl.program_id(0)
        pid_c = tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        ivals = tl.arange(0, BLOCK_R)  # the table's rows (intervals)
        if HAS_NORM:
            sc = tl.load(SCALE + cols, mask=cmask, other=0.0)
            sh = tl.load(SHIFT + cols, mask=cmask, other=0.0)
        acc0 = tl.zeros((BLOCK_R, BLOCK_C), dtype=A.dtype.element_ty)  # G0[n, :, cols]
        acc1 = tl.zeros((BLOCK_R, BLOCK_C), dtype=A.dtype.element_ty)  # G1[n, :, cols]
        for start in range(0, HW, BLOCK_P):
            p = start + tl.arange(0, BLOCK_P)
            pmask = p < HW
            m2 = pmask[:, None] & cmask[None, :]
            m = tl.load(M + n * HW + p, mask=pmask, other=0.0)
            i = tl.load(IDX + n * HW + p, mask=pmask, other=0)
            trow = (n * KP1 + i) * C
            a = tl.load(A + trow[:, None] + cols[None, :], mask=m2, other=0.0)
            b = tl.load(B + trow[:, None] + cols[None, :], mask=m2, other=0.0)
            g = tl.sigmoid(a + b * m[:, None])  # G, recomputed
            dy = tl.load(DOUT + (n * s_dn + p * s_dp)[:, None] + cols[None, :] * s_dc, mask=m2, other=0.0)
            dy = dy.to(A.dtype.element_ty)
            if RELU:  # dy = dout [out > 0]
                o = tl.load(OUTP + (n * s_on + p * s_op)[:, None] + cols[None, :] * s_oc, mask=m2, other=0.0)
                dy = tl.where(o > 0, dy, 0.0)
            u = tl.load(R + (n * s_rn + p * s_rp)[:, None] + cols[None, :] * s_rc, mask=m2, other=0.0)
            u = u.to(A.dtype.element_ty)
            if HAS_NORM:
                u = u * sc[None, :] + sh[None, :]
            tl.store(DU + (n * s_un + p * s_up)[:, None] + cols[None, :] * s_uc,
                     (dy * g).to(DU.dtype.element_ty), mask=m2)  # dU = dy G
            if ADD:
                tl.store(DY + (n * s_yn + p * s_yp)[:, None] + cols[None, :] * s_yc,
                         dy.to(DY.dtype.element_ty), mask=m2)  # dX_l = dy
            dz = tl.where(m2, dy * u * g * (1.0 - g), 0.0)  # g = dL/dz
            # this channel tile's share of dm_p = beta[i(p)] . g(p)
            tl.store(DMP + pid_c * NROWS + n * HW + p, tl.sum(b * dz, axis=1), mask=pmask)
            onehot = tl.where((i[:, None] == ivals[None, :]) & pmask[:, None], 1.0, 0.0).to(A.dtype.element_ty)
            oh_t = tl.trans(onehot)  # (intervals, pixels)
            if TF32:
                acc0 += tl.dot(oh_t, dz, input_precision="tf32")  # sum_{p in i} g(p)
                acc1 += tl.dot(oh_t, dz * m[:, None], input_precision="tf32")  # sum_{p in i} g(p) m_p
            else:
                acc0 += tl.dot(oh_t, dz, input_precision="ieee")
                acc1 += tl.dot(oh_t, dz * m[:, None], input_precision="ieee")
        out_off = (n * KP1 + ivals)[:, None] * C + cols[None, :]
        omask = (ivals < KP1)[:, None] & cmask[None, :]
        tl.store(G0 + out_off, acc0, mask=omask)
        tl.store(G1 + out_off, acc1, mask=omask)


def _flat(m: torch.Tensor, idx: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
    """m as (N * H * W) in the tables' type, idx as (N * H * W), the tables contiguous."""
    return (m.reshape(-1).to(alpha.dtype).contiguous(), idx.reshape(-1).contiguous(), alpha.contiguous(),
            beta.contiguous())


def tail_forward(R, X, m, idx, alpha, beta, scale, shift, add: bool, relu: bool,
                 block_p: int = 64, block_c: int | None = None) -> torch.Tensor:
    """out = act(U sigma(alpha[i] + beta[i] m) [+ X_l]), U = R * scale + shift (or R): (N, C, H, W) in
    R's dtype and memory format. m (N, 1, H, W), idx (N, H*W) from ``table_gate.interval_index``,
    alpha, beta (N, K + 1, C), scale, shift (C) or None."""
    N, C, H, W = R.shape
    mf, idxf, a, b = _flat(m, idx, alpha, beta)
    out = torch.empty_like(R)
    Xt = X if add else R
    bc = block_c or min(128, _pow2(C))
    dummy = a
    grid = (triton.cdiv(N * H * W, block_p), triton.cdiv(C, bc))
    _table_fwd_kernel[grid](
        R, Xt, mf, idxf, a, b, scale if scale is not None else dummy, shift if shift is not None else dummy, out,
        N * H * W, H * W, C, a.shape[1],
        *_strides(R), *_strides(Xt), *_strides(out),
        HAS_NORM=scale is not None, ADD=add, RELU=relu, BLOCK_P=block_p, BLOCK_C=bc,
        num_warps=8 if block_p * bc >= 8192 else 4,
    )
    return out


def _bwd_block_c(rows_p2: int, C: int) -> int:
    """Channels per backward program: the two (rows x channels) accumulators stay within 8192 values."""
    return max(16, min(64, _pow2(C), 4096 // rows_p2))


def tail_backward(dout, out, R, m, idx, alpha, beta, scale, shift, add: bool, relu: bool,
                  block_p: int = 64, block_c: int | None = None):
    """Gradients of ``tail_forward``: (dU, dX_l or None, dm (N, 1, H, W), G0, G1 (N, K + 1, C)); dU is
    with respect to U (the caller applies the norm's backward), in R's dtype."""
    N, C, H, W = R.shape
    mf, idxf, a, b = _flat(m, idx, alpha, beta)
    KP1 = a.shape[1]
    br = _pow2(KP1)
    bc = block_c or _bwd_block_c(br, C)
    ctiles = triton.cdiv(C, bc)
    dU = torch.empty_like(R)
    dy = torch.empty_like(R) if add else dU
    dmp = torch.empty(ctiles, N * H * W, device=R.device, dtype=a.dtype)
    G0 = torch.empty_like(a)
    G1 = torch.empty_like(a)
    outp = out if relu else dout  # unused by the kernel without the ReLU
    dummy = a
    _table_bwd_kernel[(N, ctiles)](
        dout, outp, R, mf, idxf, a, b, scale if scale is not None else dummy, shift if shift is not None else dummy,
        dU, dy, dmp, G0, G1,
        N * H * W, H * W, C, KP1,
        *_strides(dout), *_strides(outp), *_strides(R), *_strides(dU), *_strides(dy),
        HAS_NORM=scale is not None, ADD=add, RELU=relu, TF32=R.dtype in (torch.bfloat16, torch.float16),
        BLOCK_P=block_p, BLOCK_C=bc, BLOCK_R=br, num_warps=4 if br * bc <= 2048 else 8,
    )
    dm = dmp.sum(0).view(N, 1, H, W)
    return dU, (dy if add else None), dm, G0, G1
