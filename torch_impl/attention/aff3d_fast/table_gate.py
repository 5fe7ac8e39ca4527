"""The table gate: 3D-AFF's F_ex as a per-sample lookup table, C operations per pixel instead of C * C/d.

The fast path's route ``table`` (CPU training on channels_last maps). Exact: every step below is an identity, proved in float64 to 1e-10 by
``tests/test_table_gate.py`` against the straightforward module and ``reference_numpy``.

Symbols as in the paper: U the residual, X_l the shortcut, M_c (eq. 4: M_c^r = F_sq(U) or
M_c^{r+s} = F_sq(U + X_l)), M_s (eq. 5: M_s^{r+s} = F_conv(U (+) X_l, W') or M_s^r), the 3D map
M_3D = M_c (+) M_s (eq. 1), F_ex (eq. 6: W_1, delta = ReLU, W_2, with BNs when ``fex_norm``),
X_3D = sigma(F_ex(M_3D)) (eq. 2), d the reduction, K = C/d hidden units, k the spatial kernel.

1. The hidden pre-activation is rank one (``aff3d_fast`` step 3). At a pixel whose spatial value
   is m = M_s[h, w], W_1 M_3D = v + r m with v = W_1 M_c (+ b_1) per sample and r = W_1 1. F_ex's
   first BN is a per-channel affine map a x + c (running or batch statistics), so after it the
   pre-activation is still v_j + r_j m, with v <- a v + c and r <- a r (``fold_hidden_norm``).

2. Breakpoints (``breakpoints``). Unit j switches at t_j = -v_j / r_j (r_j != 0); units with
   r_j = 0 are constant (t_j = +inf: never crossed). Sorted, the K breakpoints cut the m axis into
   K + 1 intervals; inside interval i the set A_i of active units (v_j + r_j m > 0) is fixed.

3. Tables (``interval_tables``). On interval i every channel's logit is affine in m:
       z_c(m) = alpha[i, c] + beta[i, c] m,
       alpha[i, c] = b_2[c] + sum_{j in A_i} W_2[c, j] v_j,    beta[i, c] = sum_{j in A_i} W_2[c, j] r_j.
   A_0 (m -> -inf) holds the units with r_j < 0 (and r_j = 0, v_j > 0); crossing t_j upwards
   adds unit j when r_j > 0 and removes it when r_j < 0, so row i + 1 = row i + sign(r_j) W_2[:, j]
   (v_j, r_j): the (K + 1, C) tables are cumulative sums along the sorted breakpoints, O(K C) per
   sample.

4. Lookup (``interval_index``, ``TableLogits``). Per pixel: find i(m) among K sorted values, then
   one multiply-add per channel. The function is continuous (a unit on its breakpoint adds
   relu(0) = 0), so a pixel on a breakpoint gets the same value from either side. Its gradient
   follows autograd's convention relu'(0) = 0: within a group of equal breakpoints the units with
   r_j < 0 are sorted first, and a pixel with m = t is sent to the (empty) interval after them and
   before the r_j > 0 ones, where exactly the units with t_j = m are inactive.

5. Backward (``lookup_backward``). With g_c(p) = dL/dz_c at pixel p and the per-interval sums
       G0[i, c] = sum_{p in i} g_c(p),     G1[i, c] = sum_{p in i} g_c(p) m_p      (2C per pixel)
   the map gradient is dL/dm_p = beta[i(p)] . g(p) and the tables' gradients are G0, G1. Through
   step 3 (autograd of the cumulative sums, O(K C) per sample) these give the closed-form gradients
       dL/dW_2[c, j] = sum_i [j in A_i] (v_j G0[i, c] + r_j G1[i, c]),
       dL/dv_j = sum_i [j in A_i] sum_c W_2[c, j] G0[i, c],   dL/dr_j: the same with G1,
   checked term by term in the tests. Training is O(C) per pixel too.

6. Batch statistics without the maps (``hidden_batch_stats``, ``table_batch_stats``). F_ex's BNs
   in training need mean and variance over (N, H, W). With the per-sample (or per-interval) counts
   and sums of m and m^2 (O(1) per pixel), the hidden pre-activation's come from (v, r) and the
   logits' from the tables: sum_p z_c = sum_i alpha S0_i + beta S1_i, and the centred square
   sum (alpha - mu)^2 S0 + 2 (alpha - mu) beta S1 + beta^2 S2 (m centred first, for rounding).
   F_ex's second BN then folds into the tables: alpha <- s alpha + t, beta <- s beta.

Cost for the final design (concatenation, k = 3, d = 16), multiply-accumulates per pixel:
18C for the spatial projection, C for the lookup, and 5 C K per sample for v and the tables
(``torch_impl.benchmark.sections.network_macs`` counts a whole network: 0.111 G over ResNet-50's
4.09 G, a floor of 1.027x, against 0.306 G for ``aff3d_fast``).
The tail (the lookup, the sigmoid, eq. 7 and the block's ReLU) is specified, and compiled into one
CPU pass, in ``table_gate_cpu_pass``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import table_gate_cpu_pass
from .algebra import channel_squeeze_split, compute_dtype, fold_bn, rank1_fex_input, spatial_conv_split
from .norms import batch_statistics, spatial_norm

# ---------------------------------------------------------------------------------------------
# The algebra, pure functions (steps 2-6)
# ---------------------------------------------------------------------------------------------


def fold_hidden_norm(v: torch.Tensor, r: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None):
    """Step 1: BN_1(v + r m) = (a v + c) + (a r) m for the affine map (a, c) = (scale, shift)."""
    if scale is None:
        return v, r
    return v * scale + shift, r * scale


def breakpoints(v: torch.Tensor, r: torch.Tensor):
    """Step 2: the sorted breakpoints t_j = -v_j / r_j of each sample, and how to read them.

    v (N, K), r (K). Returns
      edges (N, K): sorted t, +inf for r_j = 0; ties ordered r_j < 0 first (step 4);
      order (N, K): the unit at each sorted position;
      neg_before (N, K + 1): how many units with r_j < 0 sit before each sorted position.
    """
    N, K = v.shape
    t = torch.where(r != 0, -v / torch.where(r != 0, r, 1), torch.inf)
    pos_first = (r > 0).expand(N, K).to(torch.int8)
    order = torch.sort(pos_first, dim=1, stable=True).indices  # r < 0 (and 0) before r > 0 ...
    t_sorted, o2 = torch.sort(t.gather(1, order), dim=1, stable=True)  # ... kept within equal t
    order = order.gather(1, o2)
    neg = (r < 0)[order].to(torch.long)
    neg_before = torch.cat([neg.new_zeros(N, 1), neg.cumsum(1)], 1)
    return t_sorted, order, neg_before


def interval_tables(v: torch.Tensor, r: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor | None,
                    order: torch.Tensor):
    """Step 3: alpha, beta (N, K + 1, C), row i the affine logit on interval i (rows contiguous in C).

    v (N, K) and r (K) after F_ex's first BN, W2 (C, K), b2 (C) or None, ``order`` from ``breakpoints``.
    """
    N, K = v.shape
    sign = torch.sign(r)
    base = ((r < 0) | ((r == 0) & (v > 0))).to(v.dtype)  # A_0, the units active as m -> -inf
    alpha0 = (base * v) @ W2.t()
    if b2 is not None:
        alpha0 = alpha0 + b2
    beta0 = (base * r) @ W2.t()
    W2_sorted = W2.t()[order]  # (N, K, C): column j of W_2 at j's sorted position
    d_alpha = (sign * v).gather(1, order)[:, :, None] * W2_sorted  # crossing t_j: +- W_2[:, j] v_j
    d_beta = (sign * r)[order][:, :, None] * W2_sorted  # ... and +- W_2[:, j] r_j
    alpha = torch.cat([alpha0[:, None], alpha0[:, None] + d_alpha.cumsum(1)], 1)
    beta = torch.cat([beta0[:, None], beta0[:, None] + d_beta.cumsum(1)], 1)
    return alpha, beta


def interval_index(m: torch.Tensor, edges: torch.Tensor, neg_before: torch.Tensor) -> torch.Tensor:
    """Step 4: i(m) per pixel, (N, 1, H, W) -> (N, H*W) int64: #{t_j < m}, plus, for m on a group of
    equal breakpoints, the group's units with r_j < 0 (so that exactly the group is inactive)."""
    flat = m.reshape(m.shape[0], -1).contiguous()
    edges = edges.to(flat.dtype).contiguous()
    left = torch.searchsorted(edges, flat)
    right = torch.searchsorted(edges, flat, right=True)
    return left + neg_before.gather(1, right) - neg_before.gather(1, left)


def lookup(m: torch.Tensor, idx: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Step 4: z[n, c, h, w] = alpha[n, i, c] + beta[n, i, c] m[n, h, w], i = idx[n, h*W + w].

    Returns (N, C, H, W) in channels_last memory (each pixel reads one row of C values)."""
    N, _, H, W = m.shape
    C = alpha.shape[2]
    rows = idx[:, :, None].expand(N, H * W, C)
    z = torch.addcmul(alpha.gather(1, rows), beta.gather(1, rows), m.reshape(N, H * W, 1))
    return z.view(N, H, W, C).permute(0, 3, 1, 2)


def lookup_backward(g: torch.Tensor, m: torch.Tensor, idx: torch.Tensor, beta: torch.Tensor):
    """Step 5: from g = dL/dz (N, C, H, W) to (dL/dm (N, 1, H, W), G0, G1 (N, K + 1, C))."""
    N, C, H, W = g.shape
    gT = g.permute(0, 2, 3, 1).reshape(N, H * W, C)
    rows = idx[:, :, None].expand(N, H * W, C)
    dm = (beta.gather(1, rows) * gT).sum(2).view(N, 1, H, W)  # beta[i(p)] . g(p)
    G0 = torch.zeros_like(beta).scatter_add_(1, rows, gT)  # sum_{p in i} g(p)
    G1 = torch.zeros_like(beta).scatter_add_(1, rows, gT * m.reshape(N, H * W, 1))  # sum_{p in i} g(p) m_p
    return dm, G0, G1


def hidden_batch_stats(v: torch.Tensor, r: torch.Tensor, m: torch.Tensor):
    """Step 6: mean and biased variance over (N, H, W) of q_j = v_j + r_j m, from sums of m and m^2."""
    N = v.shape[0]
    flat = m.reshape(N, -1)
    P = flat.shape[1]
    c = flat.detach().mean()  # any constant centre is exact; this one keeps the rounding small
    mc = flat - c
    S1, S2 = mc.sum(1), (mc * mc).sum(1)
    vc = v + r * c  # q = vc + r (m - c)
    mean = (vc * P + r * S1[:, None]).sum(0) / (N * P)
    dv = vc - mean
    var = (dv * dv * P + 2 * dv * r * S1[:, None] + r * r * S2[:, None]).sum(0) / (N * P)
    return mean, var.clamp_min(0)


def interval_moments(m: torch.Tensor, idx: torch.Tensor, rows: int, centre: torch.Tensor):
    """Step 6: per sample and interval, S0 = #pixels, S1 = sum (m - centre), S2 = sum (m - centre)^2: (N, rows)."""
    N = m.shape[0]
    mc = m.reshape(N, -1) - centre
    z = mc.new_zeros(N, rows)
    return (z.scatter_add(1, idx, torch.ones_like(mc)), z.scatter_add(1, idx, mc), z.scatter_add(1, idx, mc * mc))


def table_batch_stats(alpha: torch.Tensor, beta: torch.Tensor, m: torch.Tensor, idx: torch.Tensor):
    """Step 6: mean and biased variance over (N, H, W) of z_c = alpha[i, c] + beta[i, c] m, per channel."""
    centre = m.detach().mean()
    S0, S1, S2 = interval_moments(m, idx, alpha.shape[1], centre)
    a = alpha + beta * centre  # z = a + beta (m - centre)
    count = S0.sum()
    mean = (a * S0[:, :, None] + beta * S1[:, :, None]).sum((0, 1)) / count
    da = a - mean
    var = (da * da * S0[:, :, None] + 2 * da * beta * S1[:, :, None] + beta * beta * S2[:, :, None]).sum((0, 1))
    return mean, (var / count).clamp_min(0)


# ---------------------------------------------------------------------------------------------
# The lookup as an autograd Function (step 5's backward, no (N, C, H, W) map kept)
# ---------------------------------------------------------------------------------------------


class TableLogits(torch.autograd.Function):
    """z = alpha[i(m)] + beta[i(m)] m (step 4) with step 5's backward; keeps m, i and beta only."""

    @staticmethod
    def forward(ctx, m, idx, alpha, beta):
        ctx.save_for_backward(m, idx, beta)
        return lookup(m, idx, alpha, beta)

    @staticmethod
    def backward(ctx, g):
        m, idx, beta = ctx.saved_tensors
        dm, G0, G1 = lookup_backward(g, m, idx, beta)
        return dm, None, G0, G1


class TableTail(torch.autograd.Function):
    """act(U * sigma(alpha[i(m)] + beta[i(m)] m) [+ X_l]) keeping U, the output, m, i and the tables:
    the (N, C, H, W) logits and gate are recomputed in backward, never stored (``table_gate_cpu_pass``)."""

    @staticmethod
    def forward(ctx, U, X, m, idx, alpha, beta, add: bool, relu: bool):
        out = table_gate_cpu_pass.tail_forward(U, X, m, idx, alpha, beta, add, relu)
        ctx.flags = add, relu
        ctx.save_for_backward(U, out if relu else None, m, idx, alpha, beta)
        return out

    @staticmethod
    def backward(ctx, dout):
        U, out, m, idx, alpha, beta = ctx.saved_tensors
        dU, dX, dm, G0, G1 = table_gate_cpu_pass.tail_backward(dout, out, U, m, idx, alpha, beta, *ctx.flags)
        return dU, dX, dm, None, G0, G1, None, None


# ---------------------------------------------------------------------------------------------
# The module's forward through the table (F_ex designs), for the dispatch
# ---------------------------------------------------------------------------------------------


def _bn_affine(bn: nn.Module, weight, bias, M_s: torch.Tensor, moments, update: bool, dtype):
    """(scale, shift) of a BatchNorm2d with this ``weight`` and ``bias`` as nn.BatchNorm2d would apply it
    to a map of M_s's N * H * W positions (None for nn.Identity); ``moments(M_s)`` gives (mean, biased var)
    when the batch's statistics are used (``norms.batch_statistics``, which also moves the running ones)."""
    if isinstance(bn, nn.Identity):
        return None, None
    mean, var = batch_statistics(bn, M_s, update, moments=moments, dtype=dtype)
    return fold_bn(weight, bias, mean, var, bn.eps)


def supports(m: nn.Module, norm: nn.Module | None = None) -> bool:
    """Whether ``table_forward`` serves this module: an F_ex design (M_3D through F_ex), and plain
    BatchNorm2d (or none) in F_ex. The spatial BN and the block's ``norm`` are called as modules."""
    design = m.design
    f = m.fex
    plain = all(isinstance(b, nn.Identity) or type(b) is nn.BatchNorm2d for b in (f.bn1, f.bn2))
    return design.has_spatial and design.fusion == "fex" and plain


def fex_weights(m: nn.Module) -> list:
    """F_ex's tensors in ``tables``' order: W_1, b_1, BN_1 weight, bias, W_2, b_2, BN_2 weight, bias."""
    f = m.fex
    return [f.conv1.weight, f.conv1.bias, getattr(f.bn1, "weight", None), getattr(f.bn1, "bias", None),
            f.conv2.weight, f.conv2.bias, getattr(f.bn2, "weight", None), getattr(f.bn2, "bias", None)]


def tables(m: nn.Module, M_c: torch.Tensor, M_s: torch.Tensor, update: bool = True, w: list | None = None):
    """Steps 1-6 from M_c (N, C) and M_s (N, 1, H, W), both in the compute type: each pixel's interval
    (N, H*W) and the tables alpha, beta (N, K + 1, C) with F_ex's second BN folded in; also the sorted
    breakpoints and ``neg_before`` (N, K), (N, K + 1) from ``breakpoints``. ``w``: F_ex's tensors
    (``fex_weights``; detached leaves when re-run under autograd), by default the module's own.
    Differentiable (autograd) in everything but the interval index."""
    f = m.fex
    W1, b1, bn1_w, bn1_b, W2, b2, bn2_w, bn2_b = fex_weights(m) if w is None else w
    cdt = M_s.dtype
    v, r = rank1_fex_input(M_c, W1.flatten(1).to(cdt), b1)  # W_1 M_3D = v + r M_s
    a1, c1 = _bn_affine(f.bn1, bn1_w, bn1_b, M_s, lambda ms: hidden_batch_stats(v, r, ms), update, cdt)
    v, r = fold_hidden_norm(v, r, a1, c1)
    edges, order, neg_before = breakpoints(v, r)
    idx = interval_index(M_s.detach(), edges, neg_before)
    alpha, beta = interval_tables(v, r, W2.flatten(1).to(cdt), b2, order)
    a2, c2 = _bn_affine(f.bn2, bn2_w, bn2_b, M_s, lambda ms: table_batch_stats(alpha, beta, ms, idx), update, cdt)
    if a2 is not None:  # F_ex's second BN folds into the tables
        alpha, beta = alpha * a2 + c2, beta * a2
    return idx, alpha, beta, edges, neg_before


def gate_tables(m: nn.Module, U: torch.Tensor, X: torch.Tensor, update: bool = True):
    """Eqs. 4, 5 from the maps U, X_l, then ``tables``: (M_s (N, 1, H, W), idx, alpha, beta, edges, neg_before)."""
    design = m.design
    cdt = compute_dtype(U)
    M_c = channel_squeeze_split(U, X, design).to(cdt)  # eq. 4
    M_s = spatial_norm(m.spatial.bn, spatial_conv_split(U, X, m.spatial.conv.weight, design), update).to(cdt)  # eq. 5
    return (M_s, *tables(m, M_c, M_s, update))


def table_forward(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None,
                  add: bool = False, relu: bool = False) -> torch.Tensor:
    """act(U * X_3D [+ X_l]) with U = norm(R) (or R), X_3D through the table: the entry point.

    ``m`` an ``AFF3D`` with ``supports(m)``; R, X (N, C, H, W); any grad mode, train or eval (BN
    running statistics updated as nn.BatchNorm2d does). The lookup, sigmoid, eq. 7 and ReLU run as one
    compiled pass (``table_gate_cpu_pass``) where it serves the call, else as its specification.
    """
    if not supports(m, norm):
        raise ValueError(f"table gate: needs an F_ex design with BatchNorm2d or no norm in F_ex, got {m.design}")
    U = R if norm is None else norm(R)
    M_s, idx, alpha, beta, _, _ = gate_tables(m, U, X)
    return TableTail.apply(U, X, M_s, idx, alpha, beta, add, relu)


@torch.no_grad()
def logit_curve(m: nn.Module, U: torch.Tensor, X: torch.Tensor, sample: int = 0, channel: int = 0,
                points: int = 401, margin: float = 0.5):
    """One channel's logit z_c against m (F_ex's output before the sigmoid), for a plot.

    Returns (m_grid (points,), logits (points,), breakpoints (finite t_j, sorted)) for sample
    ``sample`` of the batch (U, X), the module in its current mode (eval: running statistics,
    nothing updated). The grid spans the breakpoints and the sample's M_s values, ``margin`` wider.
    """
    M_s, _, alpha, beta, edges, neg_before = gate_tables(m, U, X, update=False)
    t = edges[sample]
    t = t[torch.isfinite(t)]
    ms = M_s[sample].flatten()
    lo = float(torch.cat([t, ms]).min()) - margin
    hi = float(torch.cat([t, ms]).max()) + margin
    grid = torch.linspace(lo, hi, points, dtype=alpha.dtype).view(1, 1, 1, points)
    one = slice(sample, sample + 1)
    i = interval_index(grid, edges[one], neg_before[one])
    z = lookup(grid, i, alpha[one], beta[one])
    return grid.flatten(), z[0, channel, 0], t
