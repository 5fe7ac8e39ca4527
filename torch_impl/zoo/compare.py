"""Paper vs ours: measure every build of every row and decide which builds reproduce which cell.

A cell is *reproduced* by a build when our measurement is within the tolerance of the printed
number: 0.05M parameters; for FLOPs, 0.05G on the *increase* over the plain ResNet of the same
depth (absolute for the plain rows themselves), because the paper does not say what its counter
includes. Nothing here is hard-coded: every "ours" value is measured when this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..models import parse_model_name
from .measure import Measurement, measure
from .paper import PAPER_TABLES, Build, PaperRow, PaperTable

PARAMS_TOLERANCE_M = 0.05
FLOPS_TOLERANCE_G = 0.05


@dataclass(frozen=True)
class CellCheck:
    """One printed number against our value for each build of the row.

    ``paper`` and ``ours`` are the compared quantities: parameters in M, or FLOPs in G (the
    increase over the plain ResNet when ``increase``).
    """

    paper: float
    ours: tuple[tuple[str, float], ...]
    tolerance: float
    increase: bool = False

    @property
    def matches(self) -> tuple[str, ...]:
        """Labels of the builds that reproduce the cell."""
        return tuple(label for label, value in self.ours if abs(value - self.paper) <= self.tolerance)

    @property
    def reproduced(self) -> bool:
        return bool(self.matches)

    def difference(self, label: str) -> float:
        return dict(self.ours)[label] - self.paper


@dataclass(frozen=True)
class RowResult:
    table: PaperTable
    row: PaperRow
    measured: tuple[tuple[Build, Measurement], ...]  # empty for COCO rows: nothing to measure
    baseline: Measurement | None  # the plain ResNet of the same depth
    params: CellCheck | None
    flops: CellCheck | None

    def measurement(self, label: str) -> Measurement:
        return next(m for b, m in self.measured if b.label == label)


@lru_cache(maxsize=None)
def _measure(b: Build, input_size: int, num_classes: int) -> Measurement:
    return measure(b.model, input_size=input_size, num_classes=num_classes, **b.options)


def _plain(b: Build) -> Build:
    return Build(parse_model_name(b.model).arch)


def _paper_baseline_flops(table: PaperTable, row: PaperRow) -> float | None:
    """The printed FLOPs of the plain ResNet of the row's depth, from the same table."""
    plain = _plain(row.primary).model
    for r in table.rows:
        if r.primary.model == plain and len(r.builds) == 1 and r.flops_g is not None:
            return r.flops_g
    return None


def compare_row(table: PaperTable, row: PaperRow) -> RowResult:
    if table.kind == "coco":
        return RowResult(table, row, (), None, None, None)
    size, classes = table.input_size, table.num_classes
    measured = tuple((b, _measure(b, size, classes)) for b in row.builds)
    baseline = _measure(_plain(row.primary), size, classes)
    params = None
    if row.params_m is not None:
        ours = tuple((b.label, m.params_m) for b, m in measured)
        params = CellCheck(row.params_m, ours, PARAMS_TOLERANCE_M)
    flops = None
    if row.flops_g is not None:
        paper_base = _paper_baseline_flops(table, row)
        is_plain = row.primary.model == _plain(row.primary).model
        if is_plain or paper_base is None:
            flops = CellCheck(row.flops_g, tuple((b.label, m.macs_g) for b, m in measured), FLOPS_TOLERANCE_G)
        else:
            ours = tuple((b.label, m.macs_g - baseline.macs_g) for b, m in measured)
            flops = CellCheck(row.flops_g - paper_base, ours, FLOPS_TOLERANCE_G, increase=True)
    return RowResult(table, row, measured, baseline, params, flops)


def compare_tables(tables: tuple[PaperTable, ...] = PAPER_TABLES) -> list[RowResult]:
    """Every row of ``tables``, measured (one build is measured once, however many rows share it)."""
    return [compare_row(t, r) for t in tables for r in t.rows]
