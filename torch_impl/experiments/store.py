"""Results on disk: one record per finished run, and a grid's ``results.json``.

Layout (``--out DIR``, default ``docs/results/experiments``; ``--runs DIR``, default ``runs/experiments``)::

    <runs>/<budget_id>/<run_key>/     last.pth best.pth metrics.csv curve.png train.log record.json
    <out>/<grid>/results.json         {"format", "grid", "tables", "budget", "budget_id", "records": [...]}
    <out>/<grid>/results.md, curves.png

A run folder's ``record.json`` is written (atomically) only when the run has finished; a grid's
``results.json`` is rewritten (atomically) after every finished run and holds one record per
(row, seed). A run shared by several grids is trained once and its record copied into each.

One writer per folder (``torch_impl.folder_lock``, a ``.lock`` file in each): a runner holds ``<out>``
and ``<runs>`` for its whole life, and each run's training process holds its run folder, so a second
runner, or a run whose earlier process is still alive, stops with an error instead of writing twice.

Record keys (all errors in percent, on the validation split):
    grid, paper_tables, row_key, row, symbol, paper, model, model_kwargs, seed, run_key,
    final_val_top1_err, final_val_top5_err, best_val_top1_err, best_epoch, epochs, images_seen,
    wall_time_s, last_epochs_slope, history (per epoch: epoch, lr, train_loss, train_top1_err,
    val_loss, val_top1_err, val_top5_err, epoch_time_s; the val_* keys only on the epochs measured, every
    ``eval_every``-th and the last), machine, versions, budget_id
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..training.metrics import validated

FORMAT = 1
# Config fields outside the budget's identity: the run's own name (model, seed, recorded per record), where
# files go, and how fast it runs; ``eval_every`` only decides which epochs are measured (no weight depends
# on it, and the last epoch, the one the tables use, always is). ``threads`` and the device change only how
# float sums round (a record keeps both: ``threads``, ``machine``). ``workers`` changes the random draws
# themselves, so it is part of the budget: the augmentation (random flips, crops) comes from each loader process's own generator, and
# ``workers`` 0 and 2 train different weights, each repeating bit for bit.
NOT_BUDGET = frozenset({
    "model", "model_kwargs", "seed", "output_dir", "run_name", "resume", "stop_after_epochs", "progress",
    "tensorboard", "threads", "device", "data_dir", "download", "recipe", "eval_every",
})  # fmt: skip
# Budget keys left out when they hold this value: every committed results file was trained with
# ``workers`` 0 before ``workers`` counted, so its budget (and budget_id) has no ``workers`` key.
IMPLICIT = {"workers": 0}
LAST_EPOCHS = 3  # epochs over which the final slope of the validation error is measured


class ResultsMismatch(ValueError):
    """A results file that belongs to another grid or another budget."""


def budget_of(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what a run learns. ``workers`` must be a number here (the runner
    resolves None, which would mean "depends on this machine's cores")."""
    if config.get("workers", 0) is None:
        raise ValueError("budget_of needs the number of data-loader workers, not None")
    return {k: v for k, v in sorted(config.items())
            if k not in NOT_BUDGET and not (k in IMPLICIT and v == IMPLICIT[k])}  # fmt: skip


def budget_id(budget: dict[str, Any]) -> str:
    text = json.dumps(budget, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written whole or not at all (``torch_impl.atomic``: the project's one writer)."""
    write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The machine a run trained on; ``device`` the run's ("cuda" adds the GPU's name)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    if device == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__}
    out["numpy"] = numpy.__version__
    try:
        root = Path(__file__).resolve().parents[2]
        out["git_commit"] = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if not out.get("git_commit") and os.environ.get("GIT_COMMIT"):
        out["git_commit"] = os.environ["GIT_COMMIT"]  # a copy of the tree without .git (a lent GPU machine)
    return out


# ----------------------------------------------------------------------------- one grid's results file


def load_results(path: Path, grid: str, budget: dict[str, Any]) -> dict[str, Any]:
    """The grid's results (a fresh, empty one when ``path`` does not exist).

    Raises ResultsMismatch when the file belongs to another grid or budget: it is left untouched."""
    bid = budget_id(budget)
    if not path.exists():
        return {"format": FORMAT, "grid": grid, "budget": budget, "budget_id": bid, "records": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsMismatch(f"{path} is not a results file ({err}); move it away or choose another --out") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("records"), list):
        raise ResultsMismatch(f"{path} is not a results file of format {FORMAT}; move it away or choose another --out")
    if data.get("grid") != grid:
        raise ResultsMismatch(f"{path} holds grid {data.get('grid')!r}, not {grid!r}; choose another --out")
    if data.get("budget_id") != bid:
        changed = sorted(k for k in set(budget) | set(data.get("budget", {})) if budget.get(k) != data["budget"].get(k))
        raise ResultsMismatch(
            f"{path} was trained with another budget (differs in {changed}); its {len(data['records'])} runs are "
            f"kept: choose another --out, or rerun with that file's settings"
        )
    return data


def record_index(data: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["row_key"], int(r["seed"])): r for r in data["records"]}


def add_record(data: dict[str, Any], record: dict[str, Any]) -> None:
    """Insert or replace the record of (row, seed), keeping the records sorted by row order then seed."""
    key = (record["row_key"], int(record["seed"]))
    data["records"] = [r for r in data["records"] if (r["row_key"], int(r["seed"])) != key] + [record]


def run_record(history: list[dict[str, float]], images_per_epoch: int, wall_time_s: float) -> dict[str, Any]:
    """The measured part of a record, from a finished run's per-epoch history."""
    last = history[-1]
    measured = validated(history)  # with eval_every > 1 not every epoch; always the last
    best = min(measured, key=lambda r: r["val_top1_err"])
    tail = measured[-LAST_EPOCHS:]
    from .stats import slope

    return {
        "final_val_top1_err": last["val_top1_err"],
        "final_val_top5_err": last["val_top5_err"],
        "best_val_top1_err": best["val_top1_err"],
        "best_epoch": int(best["epoch"]),
        "epochs": int(last["epoch"]),
        "images_seen": int(images_per_epoch * last["epoch"]),
        "wall_time_s": wall_time_s,
        "last_epochs_slope": slope([r["val_top1_err"] for r in tail], [r["epoch"] for r in tail]),
        "history": history,
    }
