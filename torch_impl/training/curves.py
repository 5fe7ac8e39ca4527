"""Training curves in the manner of the paper's Fig. 3 (top-1 error against epochs, one line per network)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_write
from .metrics import validated


def plot_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    path: str | Path | None = None,
    title: str = "Top-1 error",
    train: bool = True,
    chance: float | None = None,
) -> Figure:
    """Validation top-1 error (solid) and, with ``train``, training top-1 error (dashed) per epoch.

    Args:
        histories: label -> the run's history (``RunResult.history`` or the rows of ``metrics.csv``).
        path: where to save a PNG (None: only return the figure).
        chance: the top-1 error of guessing (100 (1 - 1/classes)), drawn as a dotted line.
    """
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for i, (label, rows) in enumerate(histories.items()):
        if not rows:
            continue
        colour = f"C{i}"
        prefix = f"{label}, " if len(histories) > 1 else ""  # one run: its name is in the title
        measured = validated(rows)  # the epochs measured on the validation set (eval_every)
        val = [float(r["val_top1_err"]) for r in measured]
        ax.plot([int(r["epoch"]) for r in measured], val, color=colour, marker="o", ms=3, label=f"{prefix}val")
        if train:
            epochs, train_err = [int(r["epoch"]) for r in rows], [float(r["train_top1_err"]) for r in rows]
            ax.plot(epochs, train_err, color=colour, ls="--", alpha=0.7, label=f"{prefix}train")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance ({chance:.1f} %)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        with atomic_write(path) as f:
            fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png")
    return fig
