"""One run of the grid, in its own process: ``python -m torch_impl.experiments.child SPEC.json``.

SPEC holds ``config`` (every TrainConfig field, resolved by the runner from the recipe and its
overrides) and ``run_dir``. The run resumes from ``run_dir/last.pth`` when an earlier attempt was interrupted, and
writes ``run_dir/record.json`` when it has finished: the runner treats the run as done only then.
Under torchrun every process runs this; rank 0 writes the record.

SIGTERM (sent by the runner when it stops, and by the kernel when the runner dies: see
``runner.parent_death_signal``) ends the run like Ctrl-C, with its last completed epoch saved. When
another live process holds the run folder (an earlier attempt that is still ending), the child waits
up to ``WAIT_S`` seconds for it, then exits with status ``BUSY`` and an ``error:`` line naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from ..data.shapes import ShapesClassification, fingerprint
from ..folder_lock import FolderBusy, lock_folder
from ..training import run
from ..training.checkpoint import LAST
from ..training.runner import TrainingInterrupted
from .store import machine_info, run_record, versions, write_json_atomic

RECORD = "record.json"
BUSY = 75  # exit status when another process holds the run folder (sysexits' EX_TEMPFAIL: try again later)
WAIT_S = 10.0  # how long an earlier attempt that is still ending may keep the folder, as training.run waits


def images_per_epoch(cfg) -> int:
    """Training images one epoch sees (the loader drops the last partial batch)."""
    if cfg.dataset == "shapes":
        n = cfg.train_samples or len(ShapesClassification("train"))
    else:
        from ..data import build_dataset

        n = len(build_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, image_size=cfg.image_size, transform=None))
    steps = n // cfg.batch_size
    return (steps if cfg.steps_per_epoch is None else min(steps, cfg.steps_per_epoch)) * cfg.batch_size


def _prepare_folder(run_dir: Path) -> None:
    """Rank 0, before training: wait (up to WAIT_S) until no other live process holds ``run_dir``, and
    empty the folder of an attempt that stopped before its first checkpoint.

    The lock is given up again before ``run``: training.run takes it for the run's whole life, and a
    process must not hold one folder's flock twice (a second open file of the same process conflicts)."""
    if not run_dir.exists():
        return
    with lock_folder(run_dir, wait_s=WAIT_S):  # raises FolderBusy, naming the holder
        if not (run_dir / LAST).exists():
            # Removed whole, .lock too: a fresh run takes ``run_dir`` only when it is absent or empty.
            shutil.rmtree(run_dir)


def train_one(spec: dict) -> dict | None:
    run_dir = Path(spec["run_dir"])
    rank = int(os.environ.get("RANK", "0"))
    # Every epoch re-reads the same built-in images; keep them rendered (same pixels, no rendering cost).
    ShapesClassification.cache_rendered = True
    start = time.perf_counter()
    if rank == 0:  # the other ranks wait for rank 0 inside run(), which decides the folder
        _prepare_folder(run_dir)
    if (run_dir / LAST).exists():
        result = run(None, resume=str(run_dir))
    else:
        cfg = dict(spec["config"], output_dir=str(run_dir.parent), run_name=run_dir.name)
        result = run(cfg)  # the whole configuration, as the runner resolved it from the recipe
    if rank != 0:
        return None
    if result.run_dir is None or Path(result.run_dir).resolve() != run_dir.resolve():
        # run_dir was taken between _prepare_folder and run(): a record there would describe another run's files
        raise FolderBusy(run_dir, f"taken before this run's training began, which went to {result.run_dir} and "
                                  "wrote no record")  # fmt: skip
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
        record["data_fingerprint"] = {split: fingerprint(split, cfg.image_size, cfg.resolved_data_seed) for split in ("train", "val")}
    write_json_atomic(run_dir / RECORD, record)
    return record


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)  # training.run turns it into TrainingInterrupted


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        record = train_one(spec)
    except FolderBusy as err:
        print(f"error: {err}", flush=True)  # the runner quotes this line
        return BUSY
    except TrainingInterrupted as err:
        print(str(err), flush=True)
        return 128 + signal.Signals[err.signal_name].value
    except KeyboardInterrupt as err:  # before training began
        name = err.args[0] if err.args and str(err.args[0]).startswith("SIG") else "SIGINT"
        print(f"interrupted by {name} before training began", flush=True)
        return 128 + signal.Signals[name].value
    return 0 if record is not None or int(os.environ.get("RANK", "0")) != 0 else 3


if __name__ == "__main__":
    sys.exit(main())
