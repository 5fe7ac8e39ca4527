"""The fast 3D-AFF: the same function as ``AFF3D``'s straightforward path, with less arithmetic.

Nothing here approximates. Every step is an identity of linear algebra (``algebra.py``, one per
function), proved by a test in ``tests/test_fast_path.py`` (float64, 1e-10, against the
straightforward module and the NumPy reference ``reference_numpy.aff3d``); only the order of
floating-point additions changes. Symbols as in the paper: U the residual, X_l the shortcut,
M_c (eq. 4), M_s (eq. 5), M_3D = M_c (+) M_s (eq. 1), X_3D = sigma(W_2 delta(W_1 M_3D)) (eqs. 2, 6),
d the reduction, K = C/d F_ex's hidden units, k F_conv's kernel size.

1. Split convolution over a concatenation: conv([U, X_l], W') = conv(U, W_U) + conv(X_l, W_X);
   the 2C-channel copy is never made.
2. A one-output k x k convolution is k^2 one-by-one projections T_t (one product that reads the
   map once), then shifts of one-channel maps.
3. F_ex's first convolution is rank one over M_3D: W_1 M_3D[:, h, w] = v + r M_s[h, w], with
   v = W_1 M_c per sample and r = W_1 1 per module. Every channel's attention is then a function
   of the one scalar M_s at its pixel: X_3D[c, h, w] = sigma(b_2[c] + sum_j W_2[c, j] relu(v_j + r_j M_s)),
   and between F_ex's K breakpoints a line in M_s (the table gate, ``table_gate.py``).
4. Batch norm: at inference an affine map folded into the convolution before it (``inference.py``);
   in training batch statistics as tensor ops on the small maps (``norms.batch_statistics``).
5. One pass for the gate, eq. 7 and the block's ReLU: out = relu(U * sigma(W_2' h + b_2') + X_l)
   (``product_gate.py``, at inference), or through the table (``table_gate_cpu_pass.py``).

Multiply-accumulates per pixel of the final design (concatenation, k = 3, d = 16): straightforward
18C + 2C^2/16, fast 18C + C^2/16 + C/16. Over ResNet-50 that removes 0.21 of the module's 0.51
GMACs: 4.09 + 0.30 GMACs, 1.07x ResNet-50, is the fast path's floor.

The dispatch is data: ``ROUTES``, walked in order by ``choose_route``; the first route whose
``applies`` holds runs. Before it, an empty batch and a norm the fast algebra does not cover
(``norms.unsupported_reason``: GroupNorm, SyncBatchNorm in training) take the straightforward path,
the latter with a warning that names the reason. Each route stands on committed measurements
(``docs/speed.md``; ``tests/test_benchmark_routes.py`` checks the CPU training rule against
``docs/results/benchmark_routes.json``):

    folded           inference, F_ex over M_3D: weights folded once and cached (CPU inference 1.32x
                     ResNet-50 against 1.68x straightforward, batch 1; 1.16x against 2.00x, batch 32)
    straightforward  training on CUDA (2.76x ResNet-50 against 3.00x for the product form, H200),
                     and CPU training on maps under SIZE_RULE["straightforward"] pixels
    table            CPU training on channels_last maps, H W >= SIZE_RULE["table"] (K + 1): F_ex as a
                     lookup table, one compiled pass (``table_gate``)
    autograd         everything else: under torch.compile or tracing (dynamo traces it), the SE and
                     parallel designs, batch statistics without a gradient, smaller CPU maps: the
                     equations under autograd with eq. 5's convolution split (``equations``)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from . import inference as _inference
from . import table_gate, table_gate_cpu_pass
from .algebra import (
    autocast_off,
    channel_squeeze_split,
    channels_last,
    compute_dtype,
    fold_bn,
    rank1_fex_input,
    shift_kernel,
    shift_sum,
    shift_sum_strided,
    spatial_conv_split,
    spatial_taps,
    split_spatial_weight,
    tap_weights,
)
from .norms import spatial_norm, unsupported_reason, uses_batch_stats

__all__ = [
    "fast_forward", "run_route", "choose_route", "Route", "ROUTES", "ROUTE_NAMES", "Call", "Choice", "SIZE_RULE",
    "clear_folded", "equations",
    "split_spatial_weight", "tap_weights", "spatial_taps", "shift_kernel", "shift_sum", "shift_sum_strided",
    "spatial_conv_split", "channel_squeeze_split", "rank1_fex_input", "fold_bn",
]

# Where CPU training changes route, from one module's forward + backward with the block norm, batch 32, one
# thread (``python -m torch_impl.benchmark --sections routes`` -> ``docs/results/benchmark_routes.json``):
#   "straightforward": below this many pixels (H W) the equations as written were fastest (3 x 3 maps:
#       7.2 ms against 8.0 for the next route in NCHW, 5.3 against 5.4 in channels_last);
#   "table": the table gate does O(K C) work per sample (breakpoints, the (K + 1, C) tables, their batch
#       statistics): it paid from H W >= 16 (K + 1) pixels (0.89-0.91x the next route's time there);
# (The product form with a memory-saving custom Function, once route "fused_tail" for NCHW training, is gone:
# since the autograd route's tap projections are one batched product it measured slower than that route at
# every shape, the detection backbone's stages included; ``docs/speed.md``.)
SIZE_RULE = {"straightforward": 16, "table": 16}


class Call(NamedTuple):
    """What the routes' conditions read, computed once per call."""

    cpu: bool
    fex_over_M3D: bool  # F_conv's M_s fused into F_ex (eq. 1): the designs steps 3-5 shorten
    inference: bool  # no gradient needed and every norm fixed
    grad: bool  # autograd differentiates this call
    traced: bool  # torch.compile, TorchScript or tracing
    channels_last: bool
    table: bool  # the table gate serves it: plain BN in F_ex, the compiled CPU pass available
    pixels: int  # H W
    rows: int  # K + 1, the table's rows


def _straightforward(m, R, X, norm, add, relu):
    """The equations as written (``AFF3D.forward_straightforward``), with the block's tail around them."""
    U = R if norm is None else norm(R)
    out = m.forward_straightforward(U, X)
    if add:
        out = out + X
    return torch.relu(out) if relu else out


def equations(m, R, X, norm, add, relu):
    """The equations under plain autograd, with eq. 5's one-output k x k convolution split into k^2
    projections and shifts (steps 1, 2) and its BN as tensor ops: any design, any grad mode, what dynamo
    traces; on small maps the other routes' fixed costs outweigh their per-pixel saving."""
    design = m.design
    U = R if norm is None else norm(R)
    if not design.has_spatial:
        return _straightforward(m, U, X, None, add, relu)  # SE: nothing to shorten
    M_c = channel_squeeze_split(U, X, design)[:, :, None, None]  # eq. 4
    M_s = spatial_norm(m.spatial.bn, spatial_conv_split(U, X, m.spatial.conv.weight, design), True)  # eq. 5
    if design.fusion == "parallel":  # two gates; U a_c + U a_s = U (a_c + a_s)
        a_c, a_s = torch.sigmoid(m.fex(M_c)), torch.sigmoid(M_s)
        X_3D = a_c + a_s if design.parallel_gate == "sum" else a_c * a_s
    else:
        X_3D = torch.sigmoid(m.fex(M_c + M_s))  # eqs. 1, 6, 2
    out = torch.addcmul(X, U, X_3D) if add else U * X_3D  # eq. 7
    return torch.relu(out) if relu else out


def _folded(m, R, X, norm, add, relu):
    traced = tracing()
    with autocast_off(R):
        f = _inference.folded(m, compute_dtype(R), cache=not traced)
        return _inference.inference(m, f, R, X, add, relu, norm, plain_ops=traced)


def _table(m, R, X, norm, add, relu):
    with autocast_off(R):
        return table_gate.table_forward(m, R, X, norm, add, relu)


@dataclass(frozen=True)
class Route:
    """One route: its name, when the dispatch takes it (in words and as a condition), and what it runs."""

    name: str
    when: str
    applies: Callable[[Call], bool]
    run: Callable[..., torch.Tensor]  # (m, R, X, norm, add, relu) -> act(U * X_3D [+ X_l])


ROUTES = (
    Route("folded", "inference (no gradient, every norm fixed): weights folded once",
          lambda c: c.inference and c.fex_over_M3D, _folded),
    Route("straightforward", "training on CUDA, or on a CPU map under SIZE_RULE['straightforward'] pixels: "
          "measured faster than the fast forms there",
          lambda c: not c.inference and not c.traced and (not c.cpu or c.pixels < SIZE_RULE["straightforward"]),
          _straightforward),
    Route("table", "CPU training on channels_last maps of H W >= SIZE_RULE['table'] (K + 1): F_ex as a lookup table",
          lambda c: (c.table and not c.inference and not c.traced and c.fex_over_M3D
                     and c.pixels >= SIZE_RULE["table"] * c.rows), _table),
    Route("autograd", "the equations under autograd, eq. 5's convolution split (tracing, SE and parallel designs, "
          "batch statistics without a gradient, smaller CPU maps)", lambda c: True, equations),
)
ROUTE_NAMES = tuple(r.name for r in ROUTES)
_BY_NAME = {r.name: r for r in ROUTES}


class Choice(NamedTuple):
    name: str  # one of ROUTE_NAMES
    reason: str  # why, in words
    warn: bool = False  # the straightforward path because the fast algebra does not cover a norm


def tracing() -> bool:
    """Under torch.compile, TorchScript or tracing: no caches, no custom autograd Function."""
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()


def _norms(m: nn.Module, norm: nn.Module | None) -> tuple:
    return (norm, m.spatial.bn if m.spatial is not None else None, m.fex.bn1, m.fex.bn2)


def call_facts(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None) -> Call:
    """What ``ROUTES``' conditions read about one call (the norms already known to be covered)."""
    design = m.design
    batch_stats = any(bn is not None and not isinstance(bn, nn.Identity) and uses_batch_stats(bn)
                      for bn in _norms(m, norm))
    params = (*m.parameters(), *(norm.parameters() if norm is not None else ()))
    grad = torch.is_grad_enabled() and (R.requires_grad or X.requires_grad or any(p.requires_grad for p in params))
    cpu = R.device.type == "cpu"
    fex_over_M3D = design.has_spatial and design.fusion != "parallel"
    _, _, H, W = R.shape
    table = cpu and fex_over_M3D and table_gate_cpu_pass.enabled(R) and table_gate.supports(m, norm)
    return Call(cpu=cpu, fex_over_M3D=fex_over_M3D, inference=not grad and not batch_stats, grad=grad,
                traced=tracing(), channels_last=channels_last(R), table=table,
                pixels=H * W, rows=m.fex.conv1.out_channels + 1)


def choose_route(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None) -> Choice:
    """Which route ``fast_forward`` runs for this call, and why (see the module docstring)."""
    if R.numel() == 0:
        return Choice("straightforward", "an empty batch: nothing to compute")
    for bn in _norms(m, norm):
        reason = None if bn is None or type(bn) is nn.BatchNorm2d else unsupported_reason(bn)
        if reason is not None:
            return Choice("straightforward", reason, warn=True)
    call = call_facts(m, R, X, norm)
    route = next(r for r in ROUTES if r.applies(call))
    return Choice(route.name, route.when)


def clear_folded(m: nn.Module) -> None:
    """Drop ``m``'s cached inference folding (see ``inference.py`` for when this happens by itself)."""
    _inference.clear(m)


def fast_forward(m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None,
                 add: bool = False, relu: bool = False) -> torch.Tensor:
    """act(U * X_3D [+ X_l]) with U = norm(R) (or R): the fast path of ``AFF3D``, by ``choose_route``."""
    name, reason, warn = choose_route(m, R, X, norm)
    if warn:
        warnings.warn(f"AFF3D: impl='fast' runs the straightforward path: {reason}", stacklevel=3)
    return run_route(name, m, R, X, norm, add, relu)


def run_route(route: str, m: nn.Module, R: torch.Tensor, X: torch.Tensor, norm: nn.Module | None = None,
              add: bool = False, relu: bool = False) -> torch.Tensor:
    """One route of ``ROUTES`` by name, whichever ``choose_route`` would take (tests and the benchmark
    force routes this way). The caller answers for the route fitting the call: "folded" uses running
    statistics, "table" an F_ex design with plain BN (``table_gate.supports``)."""
    if route not in _BY_NAME:
        raise ValueError(f"aff3d_fast.run_route: expected one of {list(ROUTE_NAMES)}, got {route!r}")
    if route != "folded":
        _inference.clear(m)  # a call with autograd or batch statistics: the weights may change after it
    return _BY_NAME[route].run(m, R, X, norm, add, relu)
