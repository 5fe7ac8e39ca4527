"""The paper's ablation and comparison tables as experiment grids.

A grid row is a row of ``torch_impl.zoo.paper`` (label, printed numbers, ``create_model`` builds), not a
copy: the grid only says which of the row's builds it trains, gives it a short key (for ``--rows`` and
``--seeds-for``) and a plot symbol, and marks the baseline of the paired differences. The paper's
ImageNet/CIFAR architecture is swapped for the backbone of the budget (``resnet20_cifar`` on the built-in
shapes), so e.g. Table 1's ``aff3d_resnet50(design="mc_r+ms_r")`` trains as
``aff3d_resnet20_cifar(design="mc_r+ms_r")``.

Runs are identified by what they train (``run_key``): the same network appearing in several tables
(3D-AFF with k = 3 is in Tables 1, 2, 3/4, 5 and 6) is trained once per seed and shared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from reference_numpy.designs import AFF3DDesign, resolve_design

from ..models.registry import ARCHITECTURES, parse_model_name
from ..zoo.paper import TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, Build, PaperRow, PaperTable


@dataclass(frozen=True)
class GridRow:
    """One trained row: the paper row(s) it stands for and the build of theirs it trains."""

    key: str  # short name for --rows / --seeds-for, e.g. "aff3d"
    symbol: str  # plot label in the paper's notation, e.g. "M_c^r + M_s^{r+s} (3D-AFF)"
    paper_rows: tuple[tuple[PaperTable, PaperRow], ...]  # (table, row) pairs; the first gives the label
    build: Build  # one of the first row's builds (paper architecture)

    @property
    def label(self) -> str:
        return self.paper_rows[0][1].label

    @property
    def paper_numbers(self) -> list[dict[str, Any]]:
        """The paper's error for this row in each table: ImageNet top-1 error or CIFAR-100 test error."""
        out = []
        for table, row in self.paper_rows:
            value = row.error if table.kind == "cifar" else row.top1
            metric = "CIFAR-100 test error" if table.kind == "cifar" else "ImageNet top-1 error"
            if value is not None:
                out.append({"table": table.number, "row": row.label, "metric": metric, "value": value})
        return out


@dataclass(frozen=True)
class Grid:
    name: str
    title: str
    rows: tuple[GridRow, ...]
    baseline: str  # key of the row the paired differences are taken against

    @property
    def tables(self) -> tuple[int, ...]:
        return tuple(sorted({t.number for r in self.rows for t, _ in r.paper_rows}))

    def row(self, key: str) -> GridRow:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(key)


def _pick(row: PaperRow, label: str | None = None) -> Build:
    """The row's build called ``label`` (default: the first, the paper's own description)."""
    if label is None:
        return row.primary
    for b in row.builds:
        if b.label == label:
            return b
    raise ValueError(f"paper row {row.label!r} has no build labelled {label!r}: {[b.label for b in row.builds]}")


def _row(key: str, symbol: str, table: PaperTable, index: int, build_label: str | None = None, *also) -> GridRow:
    row = table.rows[index]
    return GridRow(key, symbol, ((table, row),) + tuple(also), _pick(row, build_label))


# Tables 1 and 2 have the same five rows (ImageNet ResNet-50 / CIFAR ResNet-164). Row 2 is "M_c^r", the
# 3D-AFF module without its spatial branch; the paper calls it SE-ResNet, so we train SE (FC with bias).
_ABLATION = (
    ("resnet", "ResNet", None),
    ("se", "M_c^r (SE)", "SE (FC with bias)"),
    ("mc_r+ms_r", "M_c^r + M_s^r", None),
    ("aff3d", "M_c^r + M_s^{r+s} (3D-AFF)", "concat"),
    ("mc_rs+ms_rs", "M_c^{r+s} + M_s^{r+s}", "concat"),
)


def _ablation_grid(name: str, table: PaperTable) -> Grid:
    rows = tuple(_row(key, symbol, table, i, label) for i, (key, symbol, label) in enumerate(_ABLATION))
    return Grid(name, f"Table {table.number}: {table.caption}", rows, baseline="resnet")


def _kernel_grid() -> Grid:
    rows = tuple(
        _row(f"k{k}", f"k = {k}", TABLE3, i, "concat", (TABLE4, TABLE4.rows[i])) for i, k in enumerate((1, 3, 5))
    )
    return Grid("table3_4", "Tables 3 and 4: kernel size k of the spatial attention M_s", rows, baseline="k3")


def _fusion_grid() -> Grid:
    keys = (
        ("se", "SENet"),
        ("aff3d", "Fig. 2(a): F_ex, concatenation (3D-AFF)"),
        ("aff3d_sum", "Fig. 2(b): F_ex, summation"),
        ("parallel_sum", "Fig. 2(c): parallel, summation"),
        ("parallel_concat", "Fig. 2(d): parallel, concatenation"),
    )
    rows = tuple(_row(key, symbol, TABLE5, i) for i, (key, symbol) in enumerate(keys))
    return Grid("table5", f"Table 5: {TABLE5.caption}", rows, baseline="aff3d")


def _baselines_grid() -> Grid:
    # The ResNet-50 rows of Table 6 (the depth whose other tables we reproduce).
    keys = {"ResNet": ("resnet", "ResNet"), "SENet": ("se", "SE"), "CBAM": ("cbam", "CBAM"), "ECANet": ("eca", "ECA")}
    keys["3D-AFF-ResNet"] = ("aff3d", "3D-AFF")
    rows = tuple(
        _row(*keys[row.label.split(",")[0]], TABLE6, i, "concat" if row.label.startswith("3D-AFF") else None)
        for i, row in enumerate(TABLE6.rows)
        if row.label.endswith("ResNet-50")
    )
    return Grid("table6", f"Table 6 (ResNet-50 rows): {TABLE6.caption}", rows, baseline="resnet")


# The comparisons the project's question rests on, (row, minus row) by key: what 3D-AFF adds to the plain
# network and to SE (its channel branch alone), and what SE adds. A grid holding all three rows reports them
# with the seeds they need; the budget study measures them at each budget.
MAIN_CONTRASTS = (("aff3d", "resnet"), ("aff3d", "se"), ("se", "resnet"))
MAIN_ROWS = {"resnet": "plain", "se": "SE", "aff3d": "3D-AFF"}  # their rows' short names in reports

GRIDS: dict[str, Grid] = {
    g.name: g
    for g in (
        _ablation_grid("table1", TABLE1),
        _ablation_grid("table2", TABLE2),
        _kernel_grid(),
        _fusion_grid(),
        _baselines_grid(),
    )
}


def get_grid(name: str) -> Grid:
    if name not in GRIDS:
        raise ValueError(f"unknown grid {name!r}: expected one of {list(GRIDS)}")
    return GRIDS[name]


# ----------------------------------------------------------------------------- what a row trains


def swap_backbone(model: str, backbone: str) -> str:
    """``aff3d_resnet50`` with backbone ``resnet20_cifar`` -> ``aff3d_resnet20_cifar``."""
    if backbone not in ARCHITECTURES:
        raise ValueError(f"backbone must be one of {sorted(ARCHITECTURES)}, got {backbone!r}")
    name = parse_model_name(model)
    return backbone if name.attention == "none" else f"{name.attention}_{backbone}"


def canonical_kwargs(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The create_model options that change the network, without those at their defaults.

    For 3D-AFF the named design and switches are resolved to the AFF3DDesign fields that differ from
    the final design, so ``design="aff3d_sum"`` and ``merge="sum"`` (or ``kernel_size=3`` and nothing)
    are the same run."""
    if parse_model_name(model).attention != "aff3d":
        return dict(sorted(kwargs.items()))
    extra = {k: v for k, v in kwargs.items() if k not in {f.name for f in fields(AFF3DDesign)} | {"design"}}
    switches = {k: v for k, v in kwargs.items() if k in {f.name for f in fields(AFF3DDesign)} and k != "reduction"}
    design = resolve_design(kwargs.get("design", "aff3d"), **switches)
    default = AFF3DDesign()
    changed = {f.name: getattr(design, f.name) for f in fields(AFF3DDesign) if f.name != "reduction"}
    changed = {k: v for k, v in changed.items() if v != getattr(default, k)}
    if "reduction" in kwargs:
        changed["reduction"] = kwargs["reduction"]
    return dict(sorted({**extra, **changed}.items()))


@dataclass(frozen=True)
class Variant:
    """A network to train: model name and canonical kwargs on the budget's backbone."""

    model: str
    kwargs: tuple[tuple[str, Any], ...]

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)

    @property
    def key(self) -> str:
        """A file-name-safe identity, e.g. ``aff3d_resnet20_cifar`` or ``aff3d_resnet20_cifar.kernel_size-1``."""
        parts = [self.model] + [f"{k}-{v}" for k, v in self.kwargs]
        return ".".join(parts).replace("+", "p").replace("/", "_")

    def describe(self) -> str:
        return self.model + (json.dumps(self.options, sort_keys=True) if self.kwargs else "")


def variant_of(row: GridRow, backbone: str) -> Variant:
    model = swap_backbone(row.build.model, backbone)
    return Variant(model, tuple(canonical_kwargs(model, row.build.options).items()))


def run_key(variant: Variant, seed: int) -> str:
    return f"{variant.key}.seed{seed}"
