"""Triton kernels for the fused 3D-AFF gate (``gate.py`` holds the PyTorch specification).

Layout: any (N, C, H, W) tensor whose H and W axes merge into one pixel axis p (contiguous NCHW and
channels_last both do), addressed as n * s_n + c * s_c + p * s_p. The N * H * W pixels form the rows
of a matrix, the C channels its columns; a program takes a tile of BLOCK_P rows.

Forward, one program per (row tile, channel tile):
    z = h_tile @ W_2'^T_tile + b_2'     (tl.dot: the 1x1 convolution, never written to memory)
    out = act(U * sigmoid(z) [+ X])     U = R * scale + shift applied on the fly
Backward, one program per (group of row tiles, channel tile):
    recompute z, G; dy = dout * [out > 0]; write dU = dy * G (and dy for the shortcut);
    dz = dy * U * G (1 - G);  the tile's share of dh = dz @ W_2' written per channel tile;
    dW_2' and db_2' accumulated over the group's rows in registers, written once per program.
    PyTorch adds the partial sums up (no atomics: runs repeat bit for bit).
Arithmetic is in the hidden map's type (float32, or float64 where the inputs are; the fast path
makes it at least float32). Matrix products run in that type ("ieee": no TF32) for 32/64-bit
inputs, and in the input's 16-bit type with float32 accumulation under autocast, as the
convolution they replace would.
"""

from __future__ import annotations

import torch

try:  # Triton ships with PyTorch's Linux wheels; elsewhere the PyTorch path serves.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the platform
    triton = None
    tl = None

MAX_HIDDEN = 256  # C/d held in registers per program; larger F_ex bottlenecks use the PyTorch path
_PARTIAL_BUDGET = 1 << 24  # elements of per-program dW_2' partial sums (64 MiB in float32)


def available() -> bool:
    return triton is not None


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << (max(int(n), 1) - 1).bit_length())


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(s_n, s_c, s_p) of a 4-D tensor whose H and W axes merge into one axis."""
    sn, sc, sh, sw = t.stride()
    if t.shape[2] > 1 and t.shape[3] > 1 and sh != t.shape[3] * sw:
        raise ValueError(f"gate kernel: H and W must merge into one axis, got strides {tuple(t.stride())}")
    return sn, sc, sw if t.shape[3] > 1 else (sh if t.shape[2] > 1 else 1)


if triton is not None:

    @triton.jit
    def _gate_fwd_kernel(
        R, X, HID, W2, B2, SCALE, SHIFT, OUT,
        ROWS, HW, C, CD,
        s_rn, s_rc, s_rp, s_xn, s_xc, s_xp, s_hn, s_hc, s_hp, s_on, s_oc, s_op,
        HAS_NORM: tl.constexpr, ADD: tl.constexpr, RELU: tl.constexpr, LOW: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        ks = tl.arange(0, BLOCK_K)
        rmask = rows < ROWS
        cmask = cols < C
        kmask = ks < CD
        n = rows // HW
        p = rows - n * HW
        h = tl.load(HID + (n * s_hn + p * s_hp)[:, None] + ks[None, :] * s_hc,
                    mask=rmask[:, None] & kmask[None, :], other=0.0)
        w = tl.load(W2 + cols[None, :] * CD + ks[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)
        if LOW:
            z = tl.dot(h.to(R.dtype.element_ty), w.to(R.dtype.element_ty))
        else:
            z = tl.dot(h, w, input_precision="ieee")
        z += tl.load(B2 + cols, mask=cmask, other=0.0)[None, :]
        g = tl.sigmoid(z.to(HID.dtype.element_ty))
        m2 = rmask[:, None] & cmask[None, :]
        u = tl.load(R + (n * s_rn + p * s_rp)[:, None] + cols[None, :] * s_rc, mask=m2, other=0.0)
        u = u.to(HID.dtype.element_ty)
        if HAS_NORM:
            sc = tl.load(SCALE + cols, mask=cmask, other=0.0)
            sh = tl.load(SHIFT + cols, mask=cmask, other=0.0)
            u = u * sc[None, :] + sh[None, :]
        y = u * g
        if ADD:
            x = tl.load(X + (n * s_xn + p * s_xp)[:, None] + cols[None, :] * s_xc, mask=m2, other=0.0)
            y += x.to(HID.dtype.element_ty)
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(OUT + (n * s_on + p * s_op)[:, None] + cols[None, :] * s_oc, y.to(OUT.dtype.element_ty), mask=m2)

    @triton.jit
    def _gate_bwd_kernel(
        DOUT, OUTP, R, HID, W2, B2, SCALE, SHIFT,
        DU, DY, DHP, DW2P, DB2P,
        ROWS, HW, C, CD, TILES_PER_PROG,
        s_dn, s_dc, s_dp, s_on, s_oc, s_op, s_rn, s_rc, s_rp, s_hn, s_hc, s_hp,
        s_un, s_uc, s_up, s_yn, s_yc, s_yp,
        HAS_NORM: tl.constexpr, ADD: tl.constexpr, RELU: tl.constexpr, LOW: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        pid_r = tl.program_id(0)
        pid_c = tl.program_id(1)
        ks = tl.arange(0, BLOCK_K)
        kmask = ks < CD
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        w = tl.load(W2 + cols[:, None] * CD + ks[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0)
        b = tl.load(B2 + cols, mask=cmask, other=0.0)
        if HAS_NORM:
            sc = tl.load(SCALE + cols, mask=cmask, other=0.0)
            sh = tl.load(SHIFT + cols, mask=cmask, other=0.0)
        if LOW:
            w_dot = w.to(R.dtype.element_ty)
        else:
            w_dot = w
        acc_w = tl.zeros((BLOCK_C, BLOCK_K), dtype=HID.dtype.element_ty)
        acc_b = tl.zeros((BLOCK_C,), dtype=HID.dtype.element_ty)
        for t in range(0, TILES_PER_PROG):
            rows = (pid_r * TILES_PER_PROG + t) * BLOCK_P + tl.arange(0, BLOCK_P)
            rmask = rows < ROWS
            n = rows // HW
            p = rows - n * HW
            h = tl.load(HID + (n * s_hn + p * s_hp)[:, None] + ks[None, :] * s_hc,
                        mask=rmask[:, None] & kmask[None, :], other=0.0)
            if LOW:
                h_dot = h.to(R.dtype.element_ty)
                z = tl.dot(h_dot, tl.trans(w_dot))
            else:
                h_dot = h
                z = tl.dot(h, tl.trans(w), input_precision="ieee")
            g = tl.sigmoid((z + b[None, :]).to(HID.dtype.element_ty))
            m2 = rmask[:, None] & cmask[None, :]
            dy = tl.load(DOUT + (n * s_dn + p * s_dp)[:, None] + cols[None, :] * s_dc, mask=m2, other=0.0)
            dy = dy.to(HID.dtype.element_ty)
            if RELU:
                o = tl.load(OUTP + (n * s_on + p * s_op)[:, None] + cols[None, :] * s_oc, mask=m2, other=0.0)
                dy = tl.where(o > 0, dy, 0.0)
            u = tl.load(R + (n * s_rn + p * s_rp)[:, None] + cols[None, :] * s_rc, mask=m2, other=0.0)
            u = u.to(HID.dtype.element_ty)
            if HAS_NORM:
                u = u * sc[None, :] + sh[None, :]
            tl.store(DU + (n * s_un + p * s_up)[:, None] + cols[None, :] * s_uc,
                     (dy * g).to(DU.dtype.element_ty), mask=m2)
            if ADD:
                tl.store(DY + (n * s_yn + p * s_yp)[:, None] + cols[None, :] * s_yc,
                         dy.to(DY.dtype.element_ty), mask=m2)
            dz = tl.where(m2, dy * u * g * (1.0 - g), 0.0)
            if LOW:
                dz_dot = dz.to(R.dtype.element_ty)
                dh = tl.dot(dz_dot, w_dot)
                acc_w += tl.dot(tl.trans(dz_dot), h_dot)
            else:
                dh = tl.dot(dz, w, input_precision="ieee")
                acc_w += tl.dot(tl.trans(dz), h, input_precision="ieee")
            acc_b += tl.sum(dz, axis=0)
            # this channel tile's share of dh; PyTorch sums the tiles' shares (no atomics: runs repeat)
            tl.store(DHP + pid_c * ROWS * BLOCK_K + rows[:, None] * BLOCK_K + ks[None, :], dh, mask=rmask[:, None])
        tl.store(DW2P + pid_r * C * BLOCK_K + cols[:, None] * BLOCK_K + ks[None, :], acc_w, mask=cmask[:, None])
        tl.store(DB2P + pid_r * C + cols, acc_b, mask=cmask)


def _is_low(dtype: torch.dtype) -> bool:
    return dtype in (torch.bfloat16, torch.float16)


def _fwd_blocks(C: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of the forward: 64 pixels by up to 128 channels."""
    return 64, min(128, _pow2(C))


def gate_forward(R, X, hid, W2, b2, scale, shift, add, relu, block_p=None, block_c=None) -> torch.Tensor:
    """Triton version of ``gate.gate_forward_torch`` (same arguments)."""
    N, C, H, W = R.shape
    Cd = hid.shape[1]
    hid = hid.contiguous()
    W2 = W2.contiguous()
    out = torch.empty_like(R)  # keeps R's memory format (channels_last stays channels_last)
    rows, HW = N * H * W, H * W
    bp, bc = _fwd_blocks(C)
    bp, bc = block_p or bp, block_c or bc
    bk = _pow2(Cd)
    Xt = X if add else R
    dummy = b2
    grid = (triton.cdiv(rows, bp), triton.cdiv(C, bc))
    _gate_fwd_kernel[grid](
        R, Xt, hid, W2, b2, scale if scale is not None else dummy, shift if shift is not None else dummy, out,
        rows, HW, C, Cd,
        *_strides(R), *_strides(Xt), *_strides(hid), *_strides(out),
        HAS_NORM=scale is not None, ADD=add, RELU=relu, LOW=_is_low(R.dtype),
        BLOCK_P=bp, BLOCK_C=bc, BLOCK_K=bk, num_warps=8 if bp * bc >= 8192 else 4,
    )
    return out


def gate_backward(dout, out, R, hid, W2, b2, scale, shift, add, relu, block_p=64, block_c=None, tiles_per_prog=None):
    """Triton version of ``gate.gate_backward_torch`` (same arguments and results)."""
    N, C, H, W = R.shape
    Cd = hid.shape[1]
    hid = hid.contiguous()
    W2 = W2.contiguous()
    rows, HW = N * H * W, H * W
    bk = _pow2(Cd)
    bc = block_c or min(64, _pow2(C))
    tiles = triton.cdiv(rows, block_p)
    if tiles_per_prog is None:  # bound the per-program dW_2' partial sums to _PARTIAL_BUDGET elements
        tiles_per_prog = max(1, triton.cdiv(tiles * C * bk, _PARTIAL_BUDGET))
    groups = triton.cdiv(tiles, tiles_per_prog)
    ctiles = triton.cdiv(C, bc)
    dU = torch.empty_like(R)
    dy = torch.empty_like(R) if add else dU
    dhp = torch.empty(ctiles, rows, bk, device=R.device, dtype=hid.dtype)
    dW2p = torch.empty(groups, C, bk, device=R.device, dtype=hid.dtype)
    db2p = torch.empty(groups, C, device=R.device, dtype=hid.dtype)
    if not relu:
        out = dout  # unused by the kernel
    dummy = b2
    _gate_bwd_kernel[(groups, ctiles)](
        dout, out, R, hid, W2, b2, scale if scale is not None else dummy, shift if shift is not None else dummy,
        dU, dy, dhp, dW2p, db2p,
        rows, HW, C, Cd, tiles_per_prog,
        *_strides(dout), *_strides(out), *_strides(R), *_strides(hid), *_strides(dU), *_strides(dy),
        HAS_NORM=scale is not None, ADD=add, RELU=relu, LOW=_is_low(R.dtype),
        BLOCK_P=block_p, BLOCK_C=bc, BLOCK_K=bk, num_warps=4 if bk <= 32 else 8,
    )
    dh = dhp.sum(0)[:, :Cd].view(N, H, W, Cd).permute(0, 3, 1, 2).to(hid.dtype)
    dW2 = dW2p.sum(0)[:, :Cd].to(W2.dtype)
    db2 = db2p.sum(0).to(b2.dtype)
    return dU, (dy if add else None), dh, dW2, db2
