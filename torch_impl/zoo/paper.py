"""The paper's tables as data: every row of Tables 1-6 and 8-9, tied to the model that builds it.

Numbers are copied as printed in Liu et al. (2022) ("Inner-imaging 3D attention module for
residual network"): parameters in millions, FLOPs in G (multiply-accumulates, as is usual for
ResNets), errors and APs in percent. Only *our* numbers are absent: ``torch_impl.zoo.compare``
measures them at run time.

Each row names the ``create_model`` call(s) it corresponds to (``builds``). The first build is
the paper's own description of the row; further builds are the other readings of the text that
we also measure, because the paper's numbers sometimes fit one of those instead (the tables say
which). The text extraction lost the row labels of Tables 1 and 4; they are restored from the
text of section 4.2 and from Table 2, which has the same rows as Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..models import create_model


@dataclass(frozen=True)
class Build:
    """One ``create_model(model, **kwargs)`` call; ``label`` names the reading it stands for."""

    model: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def call(self) -> str:
        """The Python call that builds it, e.g. ``create_model("aff3d_resnet50", merge="sum")``."""
        args = "".join(f', {k}="{v}"' if isinstance(v, str) else f", {k}={v!r}" for k, v in self.kwargs)
        return f'create_model("{self.model}"{args})'

    def create(self, **extra) -> nn.Module:
        return create_model(self.model, **self.options, **extra)


def build(model: str, label: str = "", **kwargs) -> Build:
    return Build(model, tuple(kwargs.items()), label or model)


@dataclass(frozen=True)
class PaperRow:
    """One printed row. ``None`` where the paper prints nothing for that column."""

    label: str
    builds: tuple[Build, ...]
    params_m: float | None = None
    flops_g: float | None = None
    top1: float | None = None
    top5: float | None = None
    error: float | None = None  # CIFAR-100 test error
    ap: tuple[tuple[str, float], ...] = ()  # COCO AP columns, in printed order
    detector: str = ""

    @property
    def primary(self) -> Build:
        return self.builds[0]


@dataclass(frozen=True)
class PaperTable:
    number: int
    caption: str  # as printed
    kind: str  # "imagenet", "cifar" or "coco"
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def input_size(self) -> int:
        return 32 if self.kind == "cifar" else 224

    @property
    def num_classes(self) -> int:
        return 100 if self.kind == "cifar" else 1000


def _aff3d(model: str, **kwargs) -> tuple[Build, ...]:
    """A 3D-AFF row: the paper's final concatenation (section 4.2) first, then summation (eq. 5 as printed)."""
    return build(model, "concat", **kwargs), build(model, "sum", **kwargs, merge="sum")


def _se_rows(arch: str) -> tuple[Build, ...]:
    """ResNet + M_c^r: the 3D-AFF module without its spatial branch (F_ex of conv-BN blocks), and SE itself."""
    return (
        build(f"aff3d_{arch}", "M_c^r (conv-BN F_ex)", design="mc_r"),
        build(f"se_{arch}", "SE (FC with bias)"),
    )


TABLE1 = PaperTable(
    1,
    "Comparison of the channel and spatial attention from residual and skip connection branches on ImageNet",
    "imagenet",
    (
        PaperRow("ResNet-50", (build("resnet50"),), 25.56, top1=23.39, top5=6.93),
        PaperRow("ResNet-50 + M_c^r (SE-ResNet-50)", _se_rows("resnet50"), 28.07, top1=22.84, top5=6.35),
        PaperRow(
            "ResNet-50 + M_c^r + M_s^r",
            (build("aff3d_resnet50", "M_s^r", design="mc_r+ms_r"),),
            28.24,
            top1=22.51,
            top5=6.32,
        ),
        PaperRow(
            "ResNet-50 + M_c^r + M_s^{r+s} (3D-AFF-ResNet-50)", _aff3d("aff3d_resnet50"), 28.38, top1=22.20, top5=6.17
        ),
        PaperRow(
            "ResNet-50 + M_c^{r+s} + M_s^{r+s}",
            _aff3d("aff3d_resnet50", design="mc_rs+ms_rs"),
            28.38,
            top1=22.21,
            top5=6.21,
        ),
    ),
    notes=("Row labels were lost in the text extraction; restored from section 4.2 and Table 2.",),
)

TABLE2 = PaperTable(
    2,
    "Comparison of the channel and spatial attention from residual and skip connection branches on CIFAR-100",
    "cifar",
    (
        PaperRow("ResNet-164", (build("resnet164_cifar"),), 1.7, error=22.72),
        PaperRow("ResNet-164 + M_c^r (SE-ResNet-164)", _se_rows("resnet164_cifar"), 2.52, error=22.00),
        PaperRow(
            "ResNet-164 + M_c^r + M_s^r",
            (build("aff3d_resnet164_cifar", "M_s^r", design="mc_r+ms_r"),),
            2.59,
            error=21.65,
        ),
        PaperRow(
            "ResNet-164 + M_c^r + M_s^{r+s} (3D-AFF-ResNet-164)", _aff3d("aff3d_resnet164_cifar"), 2.66, error=21.23
        ),
        PaperRow(
            "ResNet-164 + M_c^{r+s} + M_s^{r+s}",
            _aff3d("aff3d_resnet164_cifar", design="mc_rs+ms_rs"),
            2.66,
            error=21.52,
        ),
    ),
    notes=(
        "d = 4 on CIFAR-100 (section 4.1), also for the SE row. ResNet-164's parameters are printed "
        "with one decimal (1.7M).",
    ),
)

TABLE3 = PaperTable(
    3,
    "Comparison of kernel size in the spatial attention module on ImageNet",
    "imagenet",
    tuple(
        PaperRow(f"3D-AFF-ResNet(k = {k})", _aff3d("aff3d_resnet50", kernel_size=k), p, top1=t1, top5=t5)
        for k, p, t1, t5 in ((1, 28.13, 22.38, 6.35), (3, 28.38, 22.20, 6.17), (5, 28.86, 22.35, 6.27))
    ),
)

TABLE4 = PaperTable(
    4,
    "Comparison of kernel size in the spatial attention module on CIFAR-100",
    "cifar",
    tuple(
        PaperRow(f"3D-AFF-ResNet-164(k = {k})", _aff3d("aff3d_resnet164_cifar", kernel_size=k), p, error=e)
        for k, p, e in ((1, 2.52, 22.38), (3, 2.59, 22.20), (5, 2.72, 22.35))
    ),
    notes=(
        "Likely mistyped: the test errors (22.38, 22.20, 22.35) repeat Table 3's ImageNet top-1 errors "
        "digit for digit, and the k = 3 row (2.59M) disagrees with the same network in Table 2 (2.66M). "
        "Row labels were lost in the extraction; k = 1, 3, 5 from section 4.2. We build each row at its "
        "k with both readings of eq. 5; the verdict column says which one the printed parameters fit.",
    ),
)

TABLE5 = PaperTable(
    5,
    "Testing results on ImageNet dataset with different fusing methods",
    "imagenet",
    (
        PaperRow("SENet-50", (build("se_resnet50"),), top1=22.84, top5=6.35),
        PaperRow("3D-AFF-ResNet-50, Fig. 2(a)", (build("aff3d_resnet50", "concat"),), top1=22.20, top5=6.17),
        PaperRow(
            "3D-AFF-ResNet-50(summation), Fig. 2(b)",
            (build("aff3d_resnet50", "sum", design="aff3d_sum"),),
            top1=22.35,
            top5=6.24,
        ),
        PaperRow(
            "Parallel fusion (summation), Fig. 2(c)",
            (build("aff3d_resnet50", "parallel sum", design="parallel_sum"),),
            top1=22.49,
            top5=6.28,
        ),
        PaperRow(
            "Parallel fusion (concatenation), Fig. 2(d)",
            (build("aff3d_resnet50", "parallel concat", design="parallel_concat"),),
            top1=22.46,
            top5=6.27,
        ),
    ),
    notes=("The paper prints no parameters or FLOPs here; ours are listed for reference.",),
)


# Table 6 as printed: (backbone depth, method, params M, FLOPs G, top-1 %, top-5 %).
_TABLE6_PRINTED = (
    (34, "ResNet", 21.80, 3.68, 26.69, 8.60),
    (34, "SENet", 21.95, 3.68, 26.13, 8.35),
    (34, "ECANet", 21.80, 3.68, 25.79, 8.17),
    (34, "3D-AFF-ResNet", 22.00, 3.73, 25.32, 8.04),
    (50, "ResNet", 25.56, 4.12, 23.39, 6.93),
    (50, "SENet", 28.07, 4.13, 22.84, 6.35),
    (50, "CBAM", 28.07, 4.14, 22.61, 6.31),
    (50, "ECANet", 25.56, 4.13, 22.70, 6.32),
    (50, "3D-AFF-ResNet", 28.24, 4.64, 22.20, 6.17),
    (101, "ResNet", 44.55, 7.85, 23.17, 6.52),
    (101, "SENet", 49.29, 7.86, 22.38, 6.07),
    (101, "CBAM", 49.30, 7.88, 21.51, 5.69),
    (101, "ECANet", 44.55, 7.86, 21.35, 5.68),
    (101, "3D-AFF-ResNet", 49.65, 8.87, 21.19, 5.73),
)
_PREFIX = {"ResNet": "", "SENet": "se_", "CBAM": "cbam_", "ECANet": "eca_"}


def _table6_row(depth: int, method: str, params: float, flops: float, top1: float, top5: float) -> PaperRow:
    arch = f"resnet{depth}"
    builds = _aff3d(f"aff3d_{arch}") if method == "3D-AFF-ResNet" else (build(_PREFIX[method] + arch),)
    return PaperRow(f"{method}, ResNet-{depth}", builds, params, flops, top1, top5)


TABLE6 = PaperTable(
    6,
    "Comparison of baseline methods on ImageNet",
    "imagenet",
    tuple(_table6_row(*printed) for printed in _TABLE6_PRINTED),
    notes=(
        "The 3D-AFF parameter column and FLOPs column fit different readings of eq. 5 (see the verdict "
        "column); Table 1 lists 28.38M for the same ResNet-50 model that has 28.24M here.",
        "FLOPs are compared as the increase over the plain ResNet of the same depth: the paper does "
        "not say how it counted, and our counter counts only convolutions and matrix products.",
    ),
)

_AP = ("AP", "AP50", "AP75", "APS", "APM", "APL")
_BACKBONES = {
    "ResNet-50": "resnet50",
    "SE-ResNet-50": "se_resnet50",
    "CBAM-50": "cbam_resnet50",
    "ECANet-50": "eca_resnet50",
    "3D-AFF-ResNet-50": "aff3d_resnet50",
}
# Table 8 as printed: (detector, backbone, AP, AP50, AP75, APS, APM, APL).
_TABLE8_PRINTED = (
    ("Faster R-CNN", "ResNet-50", 37.6, 58.4, 40.9, 21.5, 41.4, 48.6),
    ("Faster R-CNN", "SE-ResNet-50", 39.0, 60.5, 42.3, 23.4, 43.0, 49.8),
    ("Faster R-CNN", "CBAM-50", 39.3, 60.8, 42.4, 24.5, 43.1, 50.5),
    ("Faster R-CNN", "ECANet-50", 39.3, 60.8, 42.9, 23.6, 43.0, 50.1),
    ("Faster R-CNN", "3D-AFF-ResNet-50", 39.4, 60.8, 42.6, 22.9, 43.4, 50.8),
    ("Mask R-CNN", "ResNet-50", 38.3, 59.1, 41.8, 22.3, 41.6, 50.2),
    ("Mask R-CNN", "SE-ResNet-50", 39.5, 60.7, 42.8, 23.5, 43.3, 51.2),
    ("Mask R-CNN", "CBAM-50", 40.0, 61.2, 43.6, 24.3, 43.7, 52.1),
    ("Mask R-CNN", "ECANet-50", 40.0, 61.4, 43.4, 23.8, 43.6, 51.1),
    ("Mask R-CNN", "3D-AFF-ResNet-50", 40.3, 61.4, 43.9, 24.0, 43.7, 52.4),
)
# Table 9 as printed (Mask R-CNN mask AP): (backbone, AP, AP50, AP75).
_TABLE9_PRINTED = (
    ("ResNet-50", 34.8, 55.9, 37.0),
    ("SE-ResNet-50", 35.6, 57.6, 37.8),
    ("CBAM-50", 36.1, 57.7, 38.6),
    ("ECANet-50", 36.1, 58.0, 38.4),
    ("3D-AFF-ResNet-50", 36.3, 58.1, 38.5),
)


def _coco_row(detector: str, label: str, *aps: float) -> PaperRow:
    return PaperRow(label, (build(_BACKBONES[label]),), ap=tuple(zip(_AP, aps)), detector=detector)


TABLE8 = PaperTable(
    8,
    "Objection detection results on the COCO val 2017",
    "coco",
    tuple(_coco_row(*printed) for printed in _TABLE8_PRINTED),
    notes=("Box AP of FPN detectors (MMDetection defaults, 1x schedule) with each backbone; not reproduced here.",),
)

TABLE9 = PaperTable(
    9,
    "Instance segmentation results with different methods on the COCO dataset",
    "coco",
    tuple(_coco_row("Mask R-CNN", *printed) for printed in _TABLE9_PRINTED),
    notes=("Mask AP of Mask R-CNN with each backbone; not reproduced here.",),
)

PAPER_TABLES: tuple[PaperTable, ...] = (TABLE1, TABLE2, TABLE3, TABLE4, TABLE5, TABLE6, TABLE8, TABLE9)


def get_table(number: int) -> PaperTable:
    for table in PAPER_TABLES:
        if table.number == number:
            return table
    raise ValueError(f"paper table: expected one of {[t.number for t in PAPER_TABLES]}, got {number!r}")
