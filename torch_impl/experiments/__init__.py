"""Experiment grids: the paper's ablation and comparison tables (1, 2, 3/4, 5, 6), trained over seeds.

    python -m torch_impl.experiments table2 --seeds 5 --jobs 2

``grids`` ties each grid row to its row of ``torch_impl.zoo.paper``; ``runner`` plans and runs the
queue (resumable, N child processes); ``store`` holds the file formats; ``stats`` the t-intervals and
paired differences; ``report`` writes results.md and the curves; ``gradcam`` measures Table 7's
highlight/object overlap on trained networks.
"""

from .grids import GRIDS, Grid, GridRow, get_grid
from .stats import paired_difference, summarize

__all__ = ["GRIDS", "Grid", "GridRow", "get_grid", "paired_difference", "summarize"]
