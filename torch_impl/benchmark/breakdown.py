"""Where a 3D-AFF network's extra training time goes: operator self-times summed by kind of work.

``time_by_kind`` profiles a step (``torch.profiler``) and sums every operator's self time by the kind of
work it does (``KINDS``, first match wins; whatever runs inside the optimizer's step counts as the
optimizer's); the step's wall time not spent in any operator is Python and dispatch between them.
``extra_by_kind`` sets a 3D-AFF network's sums against its plain twin's, kind by kind: the rows that
grow are where the ratio comes from. The other half of the answer, the ratio the step would have if
time followed multiply-accumulates alone, is ``sections.macs_floor``.

The profiler adds its own cost per operator, so its sums are larger than an unprofiled step's time; they
say where the time goes, the timings beside them (interleaved, unprofiled) say how much.
"""

from __future__ import annotations

import time
from collections.abc import Callable

OTHER = "element-wise, reductions, copies"
BETWEEN = "Python and dispatch between operators"
OPTIMIZER = "optimizer"

# (kind, the substrings of a profiler event's name that make it that kind); first match wins.
KINDS = (
    ("compiled pass (inductor)", ("CompiledFxGraph", "Torch-Compiled")),
    ("convolution", ("convolution", "conv2d", "_conv")),
    ("batch norm", ("batch_norm", "var_mean")),
    ("matrix products", ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::addmv")),
    ("sigmoid", ("sigmoid",)),
    ("autograd engine, custom Functions", ("autograd::", "Backward", "FusedTail")),
)
KIND_NAMES = (*(k for k, _ in KINDS), OTHER, OPTIMIZER, BETWEEN)


def kind_of(name: str) -> str:
    """The kind of work of a profiler event, by its name (``KINDS``); aten's other ops are ``OTHER``."""
    for kind, keys in KINDS:
        if any(key in name for key in keys):
            return kind
    return OTHER


def _under_optimizer(event) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer."):
            return True
        event = event.cpu_parent
    return False


def time_by_kind(step: Callable[[], object], steps: int = 3) -> dict[str, float]:
    """Milliseconds per ``step()`` call by kind of work (``KIND_NAMES``), over ``steps`` profiled calls."""
    from torch.profiler import ProfilerActivity, profile

    step()  # the profiler's first call pays for its own set-up: leave it out
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall_us = (time.perf_counter() - t0) * 1e6
    out = dict.fromkeys(KIND_NAMES, 0.0)
    for e in prof.events():
        if e.name.startswith("ProfilerStep"):
            continue
        out[OPTIMIZER if _under_optimizer(e) else kind_of(e.name)] += e.self_cpu_time_total
    out[BETWEEN] = max(0.0, wall_us - sum(out.values()))
    return {k: round(v / steps / 1e3, 2) for k, v in out.items()}


def extra_by_kind(plain: dict[str, float], model: dict[str, float]) -> dict[str, list[float]]:
    """Kind -> [plain ms, 3D-AFF ms, extra ms] (both from ``time_by_kind``), with a ``total`` row."""
    rows = {k: [plain[k], model[k], round(model[k] - plain[k], 2)] for k in KIND_NAMES}
    totals = [round(sum(r[i] for r in rows.values()), 2) for i in range(2)]
    rows["total"] = [*totals, round(totals[1] - totals[0], 2)]
    return rows


def markdown(title: str, split: dict[str, list[float]]) -> list[str]:
    """A table of ``extra_by_kind``'s rows, kinds with nothing in either network left out."""
    lines = [f"| {title} | plain (ms) | 3D-AFF (ms) | extra (ms) | share of the extra |",
             "| --- | ---: | ---: | ---: | ---: |"]
    extra = split["total"][2]
    for kind, (a, b, d) in split.items():
        if a == b == 0.0:
            continue
        share = f"{d / extra:.0%}" if extra > 0 else "–"
        name = f"**{kind}**" if kind == "total" else kind
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {d:+.1f} | {share} |")
    return lines


def largest(split: dict[str, list[float]], n: int = 3) -> str:
    """The ``n`` kinds that add the most time, in words (the console summary)."""
    kinds = sorted((k for k in split if k != "total"), key=lambda k: -split[k][2])[:n]
    return ", ".join(f"{k} {split[k][2]:+.1f} ms" for k in kinds)
