"""Paper-vs-ours tables as Markdown (for the README / docs/results/zoo.md) and as terminal text.

One line per (paper row, build): the first line of a row carries the printed numbers, the
following lines the other readings we measured. ``ok``/``NO`` marks whether our value reproduces
the printed cell; the Verdict column names the builds that do, or says that none does.
"""

from __future__ import annotations

from .compare import FLOPS_TOLERANCE_G, PARAMS_TOLERANCE_M, CellCheck, RowResult
from .paper import PaperTable

YES, NO = "ok", "NO"

CONVENTIONS = f"""\
- **Params**: learnable parameters in millions (BN running statistics are buffers and not counted).
- **FLOPs**: multiply-accumulates of one forward pass (ImageNet 1x3x224x224, CIFAR 1x3x32x32), in G,
  from `torch.utils.flop_counter.FlopCounterMode` (its FLOPs / 2). It counts convolutions and matrix
  products only, not BN, ReLU, pooling, sigmoid or element-wise products. `(+x)` is the increase over
  the plain ResNet of the same depth. 3D-AFF is counted as its equations are written
  (`impl="straightforward"`); the default fast implementation computes the same function with fewer MACs.
- **{YES} / {NO}**: whether our value reproduces the printed cell: within {PARAMS_TOLERANCE_M}M parameters;
  for FLOPs, the increase over the plain ResNet within {FLOPS_TOLERANCE_G}G (the absolute value for the
  plain ResNets themselves), because the paper does not say what its counter includes.
- **Builds**: `concat` is the paper's final design (U and X_l concatenated before the k x k spatial
  conv, section 4.2 "Concatenation or summation"); `sum` is U + X_l (eq. 5 as printed, Fig. 2(b)).
  The first build of a row is the paper's own description of it.
- **Errors and APs** are the paper's, shown for reference: training on ImageNet, CIFAR-100 or COCO
  is not part of this table."""


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _mark(check: CellCheck | None, label: str) -> str:
    if check is None:
        return ""
    return f" {YES}" if label in check.matches else f" {NO}"


def _verdict(result: RowResult) -> str:
    parts = []
    for name, check in (("params", result.params), ("FLOPs", result.flops)):
        if check is None:
            continue
        if not check.reproduced:
            parts.append(f"{name}: **not reproduced**")
        elif len(result.measured) == 1:
            parts.append(f"{name} {YES}")
        else:
            parts.append(f"{name}: {', '.join(check.matches)}")
    return "; ".join(parts)


def _paper_flops(result: RowResult) -> str:
    row, check = result.row, result.flops
    if row.flops_g is None:
        return "—"
    if check is not None and check.increase:
        return f"{row.flops_g:.2f}G (+{check.paper:.2f})"
    return f"{row.flops_g:.2f}G"


def _ours_flops(result: RowResult, label: str) -> str:
    m = result.measurement(label)
    text = f"{m.macs_g:.3f}G"
    if result.baseline is not None and m.macs != result.baseline.macs:
        text += f" (+{(m.macs - result.baseline.macs) / 1e9:.3f})"
    return text + _mark(result.flops, label)


def classification_lines(results: list[RowResult]) -> tuple[list[str], list[list[str]]]:
    """Header and lines for an ImageNet or CIFAR table."""
    cifar = results[0].table.kind == "cifar"
    errors = ["Error (%)"] if cifar else ["Top-1 (%)", "Top-5 (%)"]
    header = [
        "Paper row",
        "create_model",
        "Params paper",
        "Params ours",
        "FLOPs paper",
        "FLOPs ours",
        *errors,
        "Verdict",
    ]
    lines = []
    for r in results:
        for i, (b, m) in enumerate(r.measured):
            first = i == 0
            err = [_num(r.row.error)] if cifar else [_num(r.row.top1), _num(r.row.top5)]
            lines.append(
                [
                    r.row.label if first else "",
                    f"`{b.call()}` ({b.label})" if len(r.measured) > 1 else f"`{b.call()}`",
                    _num(r.row.params_m, suffix="M") if first else "",
                    f"{m.params_m:.3f}M" + _mark(r.params, b.label),
                    _paper_flops(r) if first else "",
                    _ours_flops(r, b.label),
                    *(err if first else [""] * len(err)),
                    _verdict(r) if first else "",
                ]
            )
    return header, lines


def detection_lines(results: list[RowResult]) -> tuple[list[str], list[list[str]]]:
    """Header and lines for a COCO table: the printed APs and the backbone each row stands for."""
    ap_names = [name for name, _ in results[0].row.ap]
    header = ["Backbone (as printed)", "Detector", "Backbone model", *ap_names]
    lines = [
        [r.row.label, r.row.detector, f"`{r.row.primary.call()}`", *(f"{v:.1f}" for _, v in r.row.ap)] for r in results
    ]
    return header, lines


def table_lines(results: list[RowResult]) -> tuple[list[str], list[list[str]]]:
    return detection_lines(results) if results[0].table.kind == "coco" else classification_lines(results)


def _group(results: list[RowResult]) -> list[tuple[PaperTable, list[RowResult]]]:
    groups: dict[int, tuple[PaperTable, list[RowResult]]] = {}
    for r in results:
        groups.setdefault(r.table.number, (r.table, []))[1].append(r)
    return list(groups.values())


def summary_lines(results: list[RowResult]) -> list[str]:
    """Counts of reproduced cells, then every cell the paper's own build does not reproduce."""
    out = []
    for name, get in (("Parameter", lambda r: r.params), ("FLOPs", lambda r: r.flops)):
        checks = [(r, get(r)) for r in results if get(r) is not None]
        by_primary = [(r, c) for r, c in checks if r.row.primary.label in c.matches]
        by_other = [(r, c) for r, c in checks if c.reproduced and r.row.primary.label not in c.matches]
        by_none = [(r, c) for r, c in checks if not c.reproduced]
        out.append(
            f"- {name} cells: {len(checks)} printed; {len(by_primary)} reproduced by the row's own build, "
            f"{len(by_other)} only by another reading, {len(by_none)} by none."
        )
        for r, c in by_other + by_none:
            unit = "M" if name == "Parameter" else "G"
            ours = ", ".join(f"{label} {'+' if c.increase else ''}{v:.3f}{unit}" for label, v in c.ours)
            what = "increase " if c.increase else ""
            fit = f"fits {', '.join(c.matches)}" if c.reproduced else "**nothing reproduces it**"
            out.append(
                f"  - Table {r.table.number}, {r.row.label}: printed {what}{'+' if c.increase else ''}"
                f"{c.paper:.2f}{unit}; ours {ours}: {fit}."
            )
    for r in results:
        if r.params is not None and r.flops is not None and r.params.reproduced and r.flops.reproduced:
            if not set(r.params.matches) & set(r.flops.matches):
                out.append(
                    f"- Table {r.table.number}, {r.row.label}: no single build reproduces both cells: parameters "
                    f"fit {', '.join(r.params.matches)}, FLOPs fit {', '.join(r.flops.matches)}."
                )
    errors = sum((r.row.top1 is not None) + (r.row.top5 is not None) + (r.row.error is not None) for r in results)
    aps = sum(len(r.row.ap) for r in results)
    out.append(
        f"- Not reproduced here (no training in this table): {errors} printed error cells and {aps} COCO AP cells."
    )
    return out


def to_markdown(results: list[RowResult]) -> str:
    parts = [
        "# Paper vs ours: parameters and FLOPs of every network in the paper",
        "",
        "Generated by `python -m torch_impl.zoo` from `torch_impl/zoo/paper.py` (the paper's numbers) and",
        "measurements taken when it runs; do not edit by hand (a test regenerates it and compares).",
        'Paper: Liu et al., "Inner-imaging 3D attention module for residual network" (2022).',
        "",
        CONVENTIONS,
        "",
        "## Summary",
        "",
        *summary_lines(results),
    ]
    for table, rows in _group(results):
        header, lines = table_lines(rows)
        parts += ["", f"## Table {table.number}: {table.caption}", ""]
        parts += [f"> {note}" for note in table.notes] + ([""] if table.notes else [])
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "|".join("---" for _ in header) + "|")
        parts += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(parts) + "\n"


def to_text(results: list[RowResult]) -> str:
    """The same tables, aligned for a terminal."""
    out = []
    for table, rows in _group(results):
        header, lines = table_lines(rows)
        lines = [[cell.replace("`", "").replace("**", "") for cell in line] for line in lines]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out += ["", f"Table {table.number}: {table.caption}"]
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out += ["", "Summary"] + [s.replace("**", "") for s in summary_lines(results)]
    return "\n".join(out) + "\n"
