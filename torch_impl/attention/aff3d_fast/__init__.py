"""The fast 3D-AFF: the same function as ``AFF3D``'s straightforward path, with less arithmetic.

Nothing here approximates. Every step is an identity of linear algebra (``algebra.py``, one per
function), proved by a test in ``tests/test_fast_path.py`` (float64, 1e-10, against the
straightforward module and the NumPy reference ``reference_numpy.aff3d``); only the order of
floating-point additions changes. Symbols as in the paper: U the residual, X_l the shortcut,
M_c (eq. 4), M_s (eq. 5), M_3D = M_c (+) M_s (eq. 1), X_3D = sigma(W_2 delta(W_1 M_3D)) (eqs. 2, 6).

1. Split convolution over a concatenation: conv([U, X_l], W') = conv(U, W_U) + conv(X_l, W_X);
   the 2C-channel copy is never made.
2. A one-output k x k convolution is k^2 one-by-one projections T_t (one matrix product that
   reads the map once), then shifts of one-channel maps.
3. F_ex's first convolution is rank one over M_3D: W_1 M_3D[:, h, w] = v + r M_s[h, w], with
   v = W_1 M_c per sample and r = W_1 1 per module. Every channel's attention is then a function
   of the one scalar M_s at its pixel: X_3D[c, h, w] = sigma(b_2[c] + sum_j W_2[c, j] relu(v_j + r_j M_s)).
4. Batch norm: at inference an affine map folded into the convolution before it (``inference.py``);
   in training the batch statistics of F_ex's second convolution follow from the C/d-channel
   hidden map (``algebra.linear_batch_stats``, ``norms.batch_statistics``).
5. One pass for the gate, eq. 7 and the block's ReLU: out = relu(U * sigma(W_2' h + b_2') + X_l)
   (``torch_impl.kernels.gate``; Triton on CUDA).

Multiply-accumulates per pixel of the final design (concatenation, k = 3, d = 16): straightforward
18C + 2C^2/16, fast 18C + C^2/16 + C/16. Over ResNet-50 that removes 0.21 of the module's 0.51
GMACs: 4.09 + 0.30 GMACs, 1.07x ResNet-50, is the fast path's floor.

The dispatch (``choose_route``), in the order it is decided:

    route             when                                           what runs
    straightforward   an empty batch, or a norm the fast algebra     ``AFF3D.forward_straightforward``
                      does not cover (``norms.unsupported_reason``:   (a warning names the reason)
                      GroupNorm, SyncBatchNorm in training)
    vector_gate       SE or parallel designs: the gate is a (C, 1, 1) ``vector_gate``: only the
                      and/or (1, H, W) map, nothing to shorten       spatial conv is split
    small_map         CPU, not inference, not tracing, a map too    ``small_map_forward``: the equations
                      small for the fast form (``small_map``)         under autograd, eq. 5's conv split
    table             CPU maps in channels_last, the compiled pass   ``table_gate.table_forward``:
                      available (``kernels.gate_cpu``), plain BN in   F_ex as a per-sample lookup
                      F_ex, not tracing, a mode in TABLE_MODES        table, C MACs per pixel
    folded            no gradient needed, every norm fixed (BN in    ``inference.inference``: weights
                      eval, frozen BN, SyncBN in eval)                folded once and cached
    autograd          under torch.compile / tracing, or no gradient  ``training.tail_forward`` under
                      but batch statistics (training mode, no_grad)   plain autograd
    fused_table       CUDA training with AFF3D_TABLE=1 (off by       ``training.FusedTail`` with
                      default: slower measured), Triton, plain BN     ``Plan.table``: F_ex as the
                      in F_ex, H W >= CUDA_TABLE_MIN (C/d + 1)        table gate, small memory
    fused_tail        otherwise (training with autograd)             ``training.FusedTail``: small
                                                                     memory, Triton gate on CUDA
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import torch
from torch import nn

from ...kernels import gate as gate_kernels
from ...kernels import gate_cpu
from .. import table_gate
from . import inference as _inference
from .algebra import (
    channel_squeeze_split,
    fex_hidden,
    fold_bn,
    linear_batch_stats,
    rank1_fex_input,
    shift_kernel,
    shift_sum,
    shift_sum_strided,
    spatial_conv_layout,
    spatial_conv_split,
    spatial_taps,
    split_spatial_weight,
    tap_weights,
)
from .full_map import autocast_off, compute_dtype
from .norms import spatial_norm, unsupported_reason, uses_batch_stats
from .training import FusedTail, Plan, tail_forward, weights

__all__ = [
    "fast_forward", "run_route", "choose_route", "Route", "ROUTES", "SMALL_MAP", "small_map", "clear_folded",
    "CUDA_TABLE_MIN", "cuda_table",
    "split_spatial_weight", "tap_weights", "spatial_taps", "shift_kernel", "shift_sum", "shift_sum_strided",
    "spatial_conv_split", "channel_squeeze_split", "rank1_fex_input", "fex_hidden", "linear_batch_stats",
    "fold_bn",
]

ROUTES = ("straightforward", "vector_gate", "small_map", "table", "folded", "autograd", "fused_table", "fused_tail")
# CPU training takes the small_map route (``small_map_forward``) where a fast form's fixed costs outweigh
# its per-pixel saving (``small_map``). The table gate does O(K C) work per sample (breakpoints, the
# (K + 1, C) tables, their batch statistics): it pays from H W >= SMALL_MAP["table"] (K + 1) pixels.
# The product form (``fused_tail``) has a fixed cost per call (its custom Function, re-running the small
# graph in backward): it pays from C H W >= SMALL_MAP["product"] values per sample. Chosen from module
# forward + backward times with the block norm, batch 32, one thread
# (``python -m torch_impl.benchmark --sections routes`` -> ``docs/results/benchmark_routes.json``;
# ``tests/test_benchmark_routes.py`` checks the rule against that file).
SMALL_MAP = {"table": 16, "product": 16384}
# The modes in which the table gate is the default where it can run (CPU, channels_last maps, the
# compiled pass available): where it measured faster than the product form. Module forward +
# backward with the block norm, one thread, CPU channels_last (2-vCPU VM under load 8, medians of 7
# interleaved): 0.60-0.93x the product form's time in the same layout at six shapes from the
# notebooks' networks to ResNet-50's stages; at inference 1.5-12x slower (the product form is folded
# and cached there, the table is rebuilt per sample), so inference keeps the product form.
TABLE_MODES = ("train",)
# With ``AFF3D_TABLE=1`` (off by default: slower on the GPU measured, ``kernels.table_triton``), CUDA
# training takes the table gate (route ``fused_table``) on maps of at least CUDA_TABLE_MIN pixels per table
# row (H W >= CUDA_TABLE_MIN (K + 1)): below that the (N, K + 1, C) tables, built and differentiated in
# float32, move more memory than the 16-bit map the product form's kernel reads. Set from that count before
# measuring; ResNet-50: stages 1 and 2 (184 and 24 pixels per row) take the table, 3 and 4 (3.0 and 0.4)
# the product form. ``python -m torch_impl.benchmark --sections cuda`` times both.
CUDA_TABLE_MIN = 4


class Route(NamedTuple):
    name: str  # one of ROUTES
    reason: str  # why, in words


def tracing() -> bool:
    """Under torch.compile, TorchScript or tracing: no caches, no custom autograd Function."""
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def _norms(m: nn.Module, norm: nn.Module | None) -> tuple:
    return (norm, m.spatial.bn if m.spatial is not None else None, m.fex.bn1, m.fex.bn2)


def choose_route(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None) -> Route:
    """Which implementation ``fast_forward`` runs for this call, and why (see the module docstring)."""
    design = m.design
    if R.numel() == 0:
        return Route("straightforward", "an empty batch: nothing to compute")
    if not design.has_spatial or design.fusion == "parallel":
        return Route("vector_gate", "SE or parallel design: the gate is a channel vector and/or a spatial map")
    batch_stats = False
    for bn in _norms(m, norm):
        if bn is None or type(bn) is nn.Identity:
            continue
        if type(bn) is not nn.BatchNorm2d:  # (the common case needs no further look)
            reason = unsupported_reason(bn)
            if reason is not None:
                return Route("straightforward", reason)
        batch_stats = batch_stats or uses_batch_stats(bn)
    needs_grad = torch.is_grad_enabled() and (
        R.requires_grad or X.requires_grad or any(t is not None and t.requires_grad for t in weights(m, norm)))
    inference = not needs_grad and not batch_stats
    table = _table_serves(m, R, norm, "eval" if inference else "train")
    if not inference and not tracing() and small_map(m, R, table):
        return Route("small_map", "CPU training on a small map: the equations under autograd, eq. 5's conv split")
    if table:
        return Route("table", "CPU channels_last maps: F_ex as a lookup table, one compiled pass for the tail")
    if inference:
        return Route("folded", "no gradient needed and every norm fixed")
    if tracing():
        return Route("autograd", "under torch.compile or tracing: plain autograd")
    if not needs_grad:
        return Route("autograd", "batch statistics without a gradient")
    if cuda_table(m, R, norm):
        return Route("fused_table", "CUDA training: F_ex as a lookup table, the tail in one Triton pass")
    return Route("fused_tail", "training with autograd")


def small_map(m: nn.Module, R: torch.Tensor, table: bool) -> bool:
    """A CPU map too small for the fast form the call would take: the table gate (``table``) below
    SMALL_MAP["table"] pixels per table row, the product form below SMALL_MAP["product"] values per sample.
    ``AFF3D_SMALL_MAP=0`` in the environment turns the rule off (the tests do, to run the fast forms on tiny maps)."""
    if R.device.type != "cpu" or os.environ.get("AFF3D_SMALL_MAP", "1") == "0":
        return False
    _, C, H, W = R.shape
    if table:
        return H * W < SMALL_MAP["table"] * (m.fex.conv1.out_channels + 1)  # K + 1 rows, K = C/d
    return C * H * W < SMALL_MAP["product"]


def cuda_table(m: nn.Module, R: torch.Tensor, norm: nn.Module | None = None) -> bool:
    """Whether CUDA training takes the table gate: ``AFF3D_TABLE=1`` and its Triton kernels serve the map
    (``kernels.table_triton.enabled``), plain BN in F_ex, and H W >= CUDA_TABLE_MIN (K + 1)."""
    if not R.is_cuda or not table_gate.supports(m, norm):
        return False
    rows = m.fex.conv1.out_channels + 1
    if R.shape[2] * R.shape[3] < CUDA_TABLE_MIN * rows:
        return False
    from ...kernels import table_triton  # (imports Triton: CUDA calls only)

    return table_triton.enabled(R, rows)


def _table_serves(m: nn.Module, R: torch.Tensor, norm: nn.Module | None, mode: str) -> bool:
    """The table gate (``attention.table_gate``) where it runs and measured faster: CPU maps in
    channels_last (its fused pass; in NCHW the lookup is a gather along the innermost axis and loses
    to the product form), plain BatchNorm2d in F_ex, not under tracing, ``mode`` in TABLE_MODES."""
    return mode in TABLE_MODES and gate_cpu.enabled(R) and not tracing() and table_gate.supports(m, norm)


def clear_folded(m: nn.Module) -> None:
    """Drop ``m``'s cached inference folding (see ``inference.py`` for when this happens by itself)."""
    _inference.clear(m)


def fast_forward(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None,
                 add: bool = False, relu: bool = False) -> torch.Tensor:
    """act(U * X_3D [+ X_l]) with U = norm(R) (or R): the fast path of ``AFF3D``, by ``choose_route``."""
    route, reason = choose_route(m, R, X, norm)
    if route == "straightforward" and R.numel():
        warnings.warn(f"AFF3D: impl='fast' runs the straightforward path: {reason}", stacklevel=3)
    return run_route(route, m, R, X, norm, add, relu)


def run_route(route: str, m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None,
              add: bool = False, relu: bool = False) -> torch.Tensor:
    """One route of ``ROUTES``, whichever ``choose_route`` would take (the benchmark times each route
    at one shape). The caller answers for the route fitting the call: "folded" uses running statistics,
    "fused_tail" needs autograd, "table" an F_ex design (``table_gate.supports``)."""
    if route == "straightforward":
        return _straightforward(m, R, X, norm, add, relu)
    if route == "small_map":
        return small_map_forward(m, R, X, norm, add, relu)
    if route == "vector_gate":
        return vector_gate(m, R, X, norm, add, relu)
    with autocast_off(R):
        if route == "table":
            _inference.clear(m)
            return table_gate.table_forward(m, R, X, norm, add, relu)
        if route == "folded":
            traced = tracing()
            f = _inference.folded(m, compute_dtype(R), cache=not traced)
            return _inference.inference(m, f, R, X, add, relu, norm, plain_ops=traced)
        _inference.clear(m)  # a call with autograd or batch statistics: the weights may change after it
        if route == "autograd":
            plan = Plan(m, norm, add, relu)
            return tail_forward(plan, R, X, weights(m, norm), True, gate_kernels.gate_forward_torch)[0]
        if route not in ("fused_tail", "fused_table"):
            raise ValueError(f"aff3d_fast.run_route: expected one of {list(ROUTES)}, got {route!r}")
    plan = Plan(m, norm, add, relu, table=route == "fused_table")
    return FusedTail.apply(plan, R, X, *weights(m, norm))


def _straightforward(m, R, X, norm, add, relu):
    """The equations as written (``AFF3D.forward_straightforward``), with the block's tail around them."""
    U = R if norm is None else norm(R)
    out = m.forward_straightforward(U, X)
    if add:
        out = out + X
    return torch.relu(out) if relu else out


def small_map_forward(m, R, X, norm, add, relu):
    """The equations as written under plain autograd, with eq. 5's one-output k x k convolution split
    into k^2 projections and shifts (steps 1, 2) and its BN as tensor ops: on small maps the fixed cost of
    the other routes' extra steps outweighs their per-pixel saving (``SMALL_MAP``)."""
    U = R if norm is None else norm(R)
    design = m.design
    M_c = channel_squeeze_split(U, X, design)[:, :, None, None]  # eq. 4
    M_s = spatial_norm(m.spatial.bn, spatial_conv_layout(U, X, m.spatial.conv.weight, design), True)  # eq. 5
    X_3D = torch.sigmoid(m.fex(M_c + M_s))  # eqs. 1, 6, 2
    out = torch.addcmul(X, U, X_3D) if add else U * X_3D  # eq. 7
    return torch.relu(out) if relu else out


def vector_gate(m, R, X, norm, add, relu):
    """SE and parallel designs: the gate is (N, C, 1, 1) and/or (N, 1, H, W); only the spatial conv is split."""
    design = m.design
    U = R if norm is None else norm(R)
    if not design.has_spatial:
        return _straightforward(m, U, X, None, add, relu)  # SE exactly: nothing to shorten
    M_c = channel_squeeze_split(U, X, design)[:, :, None, None]
    a_c = torch.sigmoid(m.fex(M_c))
    a_s = torch.sigmoid(m.spatial.bn(spatial_conv_split(U, X, m.spatial.conv.weight, design)))
    gate = a_c + a_s if design.parallel_gate == "sum" else a_c * a_s  # U a_c + U a_s = U (a_c + a_s)
    out = torch.addcmul(X, U, gate) if add else U * gate
    return torch.relu(out) if relu else out
