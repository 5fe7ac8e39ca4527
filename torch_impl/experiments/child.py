"""One run of the grid, in its own process: ``python -m torch_impl.experiments.child SPEC.json``.

SPEC holds ``config`` (every TrainConfig field, resolved by the runner from the recipe and its
overrides) and ``run_dir``. The run resumes from ``run_dir/last.pth`` when an earlier attempt was interrupted, and
writes ``run_dir/record.json`` when it has finished: the runner treats the run as done only then.
Under torchrun every process runs this; rank 0 writes the record.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from ..data.shapes import ShapesClassification, fingerprint
from ..training import run
from ..training.checkpoint import LAST
from .store import machine_info, run_record, versions, write_json_atomic

RECORD = "record.json"


def images_per_epoch(cfg) -> int:
    """Training images one epoch sees (the loader drops the last partial batch)."""
    if cfg.dataset == "shapes":
        n = cfg.train_samples or len(ShapesClassification("train"))
    else:
        from ..data import build_dataset

        n = len(build_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, image_size=cfg.image_size, transform=None))
    steps = n // cfg.batch_size
    return (steps if cfg.steps_per_epoch is None else min(steps, cfg.steps_per_epoch)) * cfg.batch_size


def train_one(spec: dict) -> dict | None:
    run_dir = Path(spec["run_dir"])
    # Every epoch re-reads the same built-in images; keep them rendered (same pixels, no rendering cost).
    ShapesClassification.cache_rendered = True
    start = time.perf_counter()
    if (run_dir / LAST).exists():
        result = run(None, resume=str(run_dir))
    else:
        if run_dir.exists():  # an attempt that stopped before its first checkpoint: start it afresh
            shutil.rmtree(run_dir)
        cfg = dict(spec["config"], output_dir=str(run_dir.parent), run_name=run_dir.name)
        result = run(cfg)  # the whole configuration, as the runner resolved it from the recipe
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    if len(result.history) < result.config.epochs:  # stopped early (stop_after_epochs): not finished
        print(f"run stopped after {len(result.history)}/{result.config.epochs} epochs; no record written", flush=True)
        return None
    record = run_record(result.history, images_per_epoch(result.config), time.perf_counter() - start)
    # The wall time of all attempts: a resumed run adds the epochs' times of the earlier attempts.
    record["wall_time_s"] = sum(r["epoch_time_s"] for r in result.history)
    device = next(result.model.parameters()).device.type
    record.update(machine=machine_info(device), versions=versions(), threads=int(os.environ.get("OMP_NUM_THREADS", 0)))
    cfg = result.config
    if cfg.dataset == "shapes":  # which pixels this machine drew (``shapes.fingerprint``)
        record["data_fingerprint"] = {split: fingerprint(split, cfg.image_size, cfg.data_seed) for split in ("train", "val")}
    write_json_atomic(run_dir / RECORD, record)
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    record = train_one(spec)
    return 0 if record is not None or int(os.environ.get("RANK", "0")) != 0 else 3


if __name__ == "__main__":
    sys.exit(main())
