"""What a run shows and leaves behind (rank 0 only): epoch lines, metrics.csv, TensorBoard events, curve.png.

metrics.csv is rewritten from the run's history after every epoch, so after a resume it holds exactly
the completed epochs, once each. TensorBoard events of epochs after the resumed checkpoint are purged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..atomic import write_text
from .curves import plot_curves

CSV_NAME, CURVE_NAME, TB_DIR = "metrics.csv", "curve.png", "tensorboard"
COLUMNS = ("epoch", "lr", "train_loss", "train_top1_err", "val_loss", "val_top1_err", "val_top5_err", "epoch_time_s")


def format_epoch(row: Mapping[str, float], epochs: int) -> str:
    val = (
        f"val loss {row['val_loss']:.4f} top-1 err {row['val_top1_err']:5.2f}% top-5 err {row['val_top5_err']:5.2f}%"
        if "val_top1_err" in row
        else "val not measured this epoch (eval_every)"
    )
    return (
        f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.4g}  "
        f"train loss {row['train_loss']:.4f} top-1 err {row['train_top1_err']:5.2f}%  |  {val}  "
        f"({row['epoch_time_s']:.1f} s)"
    )


class RunLog:
    """Rank 0's outputs for one run; on other ranks (or with ``run_dir=None``) it only stays quiet."""

    def __init__(
        self,
        run_dir: Path | None,
        active: bool,
        tensorboard: bool = True,
        start_epoch: int = 0,
        title: str = "",
        chance: float | None = None,
    ):
        self.run_dir, self.active, self.title, self.chance = run_dir, active, title, chance
        self.writer = None
        if active and run_dir is not None and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

            self.writer = SummaryWriter(str(run_dir / TB_DIR), purge_step=start_epoch + 1 if start_epoch else None)

    def info(self, message: str) -> None:
        if self.active:
            tqdm.write(message)

    def epoch_end(self, history: Sequence[Mapping[str, float]], epochs: int) -> None:
        if not self.active:
            return
        row = history[-1]
        self.info(format_epoch(row, epochs))
        if self.run_dir is None:
            return
        self._write_csv(history)
        self._plot(history)
        if self.writer is not None:
            for key in (k for k in COLUMNS[1:] if k in row):  # val_* only on measured epochs
                group = "train" if key.startswith("train") else "val" if key.startswith("val") else "misc"
                self.writer.add_scalar(f"{group}/{key}", row[key], row["epoch"])
            self.writer.flush()

    def write_history(self, history: Sequence[Mapping[str, float]]) -> None:
        """Rewrite metrics.csv and the curve from ``history`` (a resume's repair after a kill)."""
        if self.active and self.run_dir is not None:
            self._write_csv(history)
            if history:
                self._plot(history)

    def _plot(self, history: Sequence[Mapping[str, float]]) -> None:
        plot_curves(
            {self.title or "run": history},
            self.run_dir / CURVE_NAME,
            title=f"{self.title}: top-1 error",
            chance=self.chance,
        )

    def _write_csv(self, history: Sequence[Mapping[str, float]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
        write_text(self.run_dir / CSV_NAME, text.getvalue())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.csv as numbers (for plotting runs side by side)."""
    with open(path, newline="") as f:
        rows = csv.DictReader(f)  # an epoch without validation has empty val_* cells: left out, as in the history
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""} for row in rows]
