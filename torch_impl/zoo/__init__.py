"""The paper's tables as data, and our measurements of the same networks beside them.

    paper.py     every row of Tables 1-6 and 8-9, tied to the create_model call that builds it
    measure.py   parameters and multiply-accumulates (torch's FlopCounterMode, on the meta device)
    compare.py   which build reproduces which printed cell
    report.py    Markdown and terminal tables

``python -m torch_impl.zoo`` prints the comparison and writes docs/results/zoo.md.
"""

from .compare import FLOPS_TOLERANCE_G, PARAMS_TOLERANCE_M, CellCheck, RowResult, compare_row, compare_tables
from .measure import Measurement, count_macs, count_params, measure
from .paper import PAPER_TABLES, Build, PaperRow, PaperTable, get_table
from .report import to_markdown, to_text

__all__ = [
    "PAPER_TABLES",
    "Build",
    "PaperRow",
    "PaperTable",
    "get_table",
    "Measurement",
    "count_params",
    "count_macs",
    "measure",
    "CellCheck",
    "RowResult",
    "compare_row",
    "compare_tables",
    "PARAMS_TOLERANCE_M",
    "FLOPS_TOLERANCE_G",
    "to_markdown",
    "to_text",
]
