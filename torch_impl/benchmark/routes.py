"""The ``routes`` section of ``python -m torch_impl.benchmark``: which route CPU training should take, by size.

One 3D-AFF module with the block's last norm, the block's tail relu(U X_3D + X_l), U = BN(R), forward
and backward, train mode, batch 32, one thread, at shapes (C channels, H x H map, K = C/d hidden units)
from the notebooks' networks (24 and 16 px inputs: 64 / 128 / 256 channels at 24 / 12 / 6 and 16 / 8 / 4
px, d = 4) and a few beside them; then the detection backbone's stages (``DETECTION_SHAPES``: 3D-AFF-R50-FPN
at 256 px, d = 16, batch 2, the block's norm frozen as detectron2's configs train it, NCHW). Each route
is forced (``aff3d_fast.run_route``):

    straightforward   the equations as written (route ``straightforward``)
    small_map         the equations under autograd with eq. 5's convolution split (route ``autograd``,
                      which the dispatch takes on small maps; the form's name is the one the committed
                      file records)
    table             the table gate (route ``table``; channels_last only, where it has its compiled pass)

medians of interleaved repetitions. ``aff3d_fast.SIZE_RULE`` is chosen from these figures, and
``tests/test_benchmark_routes.py`` checks, against the committed file, that at every measured shape the
dispatch takes a route within ``TOLERANCE`` of the fastest form measured there, straightforward included.
"""

from __future__ import annotations

import functools
import statistics
import time

import torch
from torch import nn

from .timing import interleaved_calls, load_average

# (C, H, K): the notebooks' networks at 24 and 16 px, then other sizes around the rule's limit
SHAPES = ((64, 24, 16), (128, 12, 32), (256, 6, 64), (64, 16, 16), (128, 8, 32), (256, 4, 64),
          (64, 12, 16), (128, 24, 32), (256, 12, 64), (256, 12, 16), (256, 3, 64))
# (C, H, K) of res2-res5 of the detection backbone's training step (``--sections detection``)
DETECTION_SHAPES = ((256, 64, 16), (512, 32, 32), (1024, 16, 64), (2048, 8, 128))
DETECTION_BATCH = 2
ROUTE_OF = {"straightforward": "straightforward", "small_map": "autograd", "table": "table"}
# the form a route times; "small_map" is also the route's name in files measured before it was called autograd
FORM_OF = {**{route: form for form, route in ROUTE_OF.items()}, "small_map": "small_map"}
TOLERANCE = 0.15  # a chosen route may be this much slower than the faster one (the noise of one shape)


def _module(C: int, K: int, frozen: bool = False, seed: int = 0):
    """The module and the block's norm: training batch norm, or frozen (fixed statistics and affine)."""
    from ..attention.aff3d import AFF3D

    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(C).train(not frozen)
    bn.requires_grad_(not frozen)
    return AFF3D(C, reduction=C // K).train(), bn


def _maps(C: int, H: int, batch: int, layout: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    R, X = (torch.randn(batch, C, H, H, generator=g) for _ in range(2))
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return R.contiguous(memory_format=fmt), X.contiguous(memory_format=fmt)


def _step(route: str, m, bn, R, X) -> None:
    from ..attention import aff3d_fast

    R, X = R.detach().requires_grad_(), X.detach().requires_grad_()
    aff3d_fast.run_route(ROUTE_OF[route], m, R, X, bn, add=True, relu=True).sum().backward()


def dispatch(C: int, H: int, K: int, layout: str, frozen: bool = False) -> str:
    """The route ``aff3d_fast.choose_route`` takes for a training call at this shape (batch 2 suffices)."""
    from ..attention import aff3d_fast

    m, bn = _module(C, K, frozen)
    R, X = _maps(C, H, 2, layout)
    return aff3d_fast.choose_route(m, R.requires_grad_(), X, bn).name


def cases(batch: int) -> list[tuple]:
    """(C, H, K, layout, batch, frozen norm) of every row the section measures."""
    small = [(C, H, K, layout, batch, False) for C, H, K in SHAPES for layout in ("nchw", "channels_last")]
    return small + [(C, H, K, "nchw", DETECTION_BATCH, True) for C, H, K in DETECTION_SHAPES]


def bench_routes(reps: int, batch: int = 32, threads: int = 1, warmup: int = 2) -> dict:
    """Milliseconds per forward + backward of each route at each case of ``cases`` (see the docstring)."""
    from ..attention.aff3d_fast import SIZE_RULE, table_gate_cpu_pass

    torch.set_num_threads(threads)
    calls, rows = {}, []
    for C, H, K, layout, n, frozen in cases(batch):
        m, bn = _module(C, K, frozen)
        R, X = _maps(C, H, n, layout)
        mod = m.to(memory_format=torch.channels_last) if layout == "channels_last" else m
        forms = ["straightforward", "small_map"] + (["table"] if table_gate_cpu_pass.enabled(R) else [])
        rows.append({"C": C, "H": H, "W": H, "K": K, "layout": layout, "batch": n, "frozen_norm": frozen,
                     "forms": forms, "dispatch": dispatch(C, H, K, layout, frozen)})
        for form in forms:
            calls[(len(rows) - 1, form)] = functools.partial(_step, form, mod, bn, R, X)
    t0 = time.perf_counter()
    for call in calls.values():  # includes the table pass's first-call compilation
        for _ in range(warmup):
            call()
    warm_s = time.perf_counter() - t0
    load_before = load_average()
    samples = interleaved_calls(calls, reps)
    for (i, form), s in samples.items():
        rows[i].setdefault("ms", {})[form] = statistics.median(s) * 1e3
    return {"section": "routes", "batch": batch, "threads": threads, "reps": reps, "mode": "train",
            "size_rule": dict(SIZE_RULE), "shapes": rows, "tolerance": TOLERANCE,
            "warmup_s_incl_compile": round(warm_s, 1), "load_average_before": load_before,
            "load_average_after": load_average()}


def chosen_and_best(row: dict, dispatch: str | None = None) -> tuple[str, str]:
    """(the form the dispatch takes, the fastest form measured) for one measured row; ``dispatch``: the
    route to read instead of the one the row recorded (the dispatch of today's code)."""
    chosen = FORM_OF[dispatch or row["dispatch"]]
    return chosen, min(row["forms"], key=lambda f: row["ms"][f])


def summary(res: dict, loads: str) -> str:
    lines = [f"routes: module forward + backward, train, batch {res['batch']}, {res['threads']} thread, ms ({loads})"]
    for r in res["shapes"]:
        times = "  ".join(f"{f} {r['ms'][f]:7.2f}" for f in r["forms"])
        lines.append(f"  C {r['C']:4d} {r['H']:2d}x{r['W']:<2d} K+1 {r['K'] + 1:3d} {r['layout']:13s} "
                     f"b{r.get('batch', res['batch']):<2d}{' frozen' if r.get('frozen_norm') else '       '} "
                     f"{times}  -> {r['dispatch']}")
    return "\n".join(lines)


def markdown(s: dict, notes: list[str], loads: str) -> list[str]:
    m = s["machine"]
    lines = [f"## Routes of the fast path in CPU training ({m['cpu']}, {s['threads']} thread, batch {s['batch']}, "
             f"torch {m['torch']}, {m['date']})", "", *notes,
             ("One module with the block's norm, forward + backward, ms; 'dispatch' is the route the code that "
              "measured took, 'fastest' the fastest form measured."), "",
             "| C | H x W | K + 1 | layout | batch | block norm | straightforward | small_map | table | dispatch "
             "| fastest |",
             "| ---: | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- |"]
    for r in s["shapes"]:
        t = [f"{r['ms'][f]:.1f}" if f in r["ms"] else "" for f in ("straightforward", "small_map", "table")]
        norm = "frozen" if r.get("frozen_norm") else "training"
        lines.append(f"| {r['C']} | {r['H']} x {r['W']} | {r['K'] + 1} | {r['layout']} | {r.get('batch', s['batch'])} | "
                     f"{norm} | {' | '.join(t)} | {r['dispatch']} | {chosen_and_best(r)[1]} |")
    return lines + ["", f"{s['reps']} repetitions; {loads}.", ""]
