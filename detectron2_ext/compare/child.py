"""One detection run in its own process: ``python -m detectron2_ext.compare.child SPEC.json`` (needs detectron2).

SPEC holds ``config_file``, ``opts`` (KEY VALUE pairs), ``seed`` and ``run_dir`` (detectron2's
OUTPUT_DIR). An attempt that was interrupted resumes from its last checkpoint (``--resume``; the
data order after a resume is not the uninterrupted one: detectron2 does not save its sampler). When
training and the final evaluation have finished, ``run_dir/record.json`` is written: the runner
treats the run as done only then.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from torch_impl.experiments.child import RECORD
from torch_impl.experiments.store import machine_info, versions, write_json_atomic

WALL_TIME = "wall_time_s.json"  # seconds of every attempt so far: the detector's training and evaluations
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc", "lr")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """detectron2's ``metrics.json``: one JSON object per line (losses every 20 iterations, evaluations)."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_per_iteration(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per iteration, the last one logged, in iteration order. A resumed run appends to
    ``metrics.json``: the interrupted attempt's lines after its last checkpoint are logged again by
    the attempt that went on, and those are the run's."""
    by_iteration = {e["iteration"]: e for e in entries}
    return [by_iteration[i] for i in sorted(by_iteration)]


def measured(run_dir: Path, max_iter: int, mask_on: bool) -> dict[str, Any] | None:
    """The record's measured part from a finished run's metrics; None while the final evaluation is missing.

    AP values are detectron2's COCOEvaluator figures (percent). ``evaluations`` lists every evaluation
    (TEST.EVAL_PERIOD) with its iteration; ``losses`` the logged losses (detectron2 writes each as the
    median of its last 20 iterations) and learning rate.
    """
    lines = read_metrics(run_dir)
    tasks = ("bbox", "segm") if mask_on else ("bbox",)
    # a periodic evaluation is logged at the index of its last iteration (k * period - 1), the final
    # one at max_iter (detectron2's trainer sets the storage's iteration to max_iter after the loop)
    evaluations = last_per_iteration([
        {"iteration": min(int(m["iteration"]) + 1, max_iter), **{f"{t}/{k}": m.get(f"{t}/{k}") for t in tasks for k in AP_KEYS}}
        for m in lines
        if "bbox/AP" in m
    ])
    if not evaluations or evaluations[-1]["iteration"] != max_iter:
        return None
    final = evaluations[-1]
    nan_to_none = lambda v: None if v is None or v != v else float(v)  # noqa: E731  (APl: no large object)
    out: dict[str, Any] = {"iterations": max_iter}
    out["box"] = {k: nan_to_none(final[f"bbox/{k}"]) for k in AP_KEYS}
    if mask_on:
        out["mask"] = {k: nan_to_none(final[f"segm/{k}"]) for k in AP_KEYS}
    out["evaluations"] = [{k: nan_to_none(v) if k != "iteration" else v for k, v in e.items()} for e in evaluations]
    out["losses"] = last_per_iteration([
        {"iteration": int(m["iteration"]) + 1, **{k: m[k] for k in LOSS_KEYS if k in m}} for m in lines if "total_loss" in m
    ])
    return out


class AttemptClock:
    """Times one attempt of a run into ``run_dir/wall_time_s.json`` (one entry per attempt), rewriting
    its entry every ``every`` seconds while it runs: an attempt that a signal ends (the runner's
    SIGTERM, SIGKILL, a session's end) keeps its time to within that, so a resumed run's wall time
    is the sum over its attempts (work redone after a resume included)."""

    def __init__(self, run_dir: Path, every: float = 30.0):
        self.path = run_dir / WALL_TIME
        self.every = every
        self.before = json.loads(self.path.read_text()) if self.path.exists() else []
        self._stop = threading.Event()

    def _write(self) -> list[float]:
        attempts = [*self.before, time.perf_counter() - self.start]
        write_json_atomic(self.path, attempts)
        return attempts

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __enter__(self) -> AttemptClock:
        self.start = time.perf_counter()
        self._write()
        self._thread = threading.Thread(target=self._beat, name="attempt-clock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.attempts = self._write()


def pretraining_of(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The backbone's pre-training that the run started from (``detectron2_ext.pretrain``): its accuracy,
    its wall time, and whether this run trained it or found it kept by a run of the same backbone and
    seed (the record's ``wall_time_s`` is the detector's alone in both cases)."""
    from detectron2.config import CfgNode

    from detectron2_ext.pretrain import RECORD as PRETRAIN_RECORD
    from detectron2_ext.pretrain import pretrain_dir

    folder = pretrain_dir(CfgNode(cfg))
    record = json.loads((folder / PRETRAIN_RECORD).read_text())
    return {"folder": folder.name, "epochs": record["epochs"], "val_accuracy": record["val_accuracy"],
            "wall_time_s": record["wall_time_s"], "trained_here": record["trained_by"] == str(run_dir)}  # fmt: skip


def train_one(spec: dict[str, Any]) -> dict[str, Any] | None:
    from detectron2.engine import default_argument_parser

    from detectron2_ext import train_net
    from detectron2_ext.pretrain import pretrain

    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = (run_dir / "last_checkpoint").exists()
    argv = ["--config-file", spec["config_file"], *(["--resume"] if resume else [])]
    argv += [*spec["opts"], "SEED", str(spec["seed"]), "OUTPUT_DIR", str(run_dir)]
    args = default_argument_parser().parse_args(argv)
    run_cfg = train_net.build_cfg(args)
    if run_cfg.PRETRAIN.EPOCHS > 0:
        # first, and outside the detector's clock: the backbone's pre-training, or the wait for the run side
        # by side that trains it (train_net.main then finds it kept)
        pretrain(run_cfg)
    with AttemptClock(run_dir) as clock:
        train_net.main(args)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())  # the full config, as detectron2 saved it
    max_iter = cfg["SOLVER"]["MAX_ITER"]
    result = measured(run_dir, max_iter, cfg["MODEL"]["MASK_ON"])
    if result is None:
        print(f"no final evaluation at iteration {max_iter} in {run_dir}/metrics.json; no record written")
        return None
    result.update(wall_time_s=sum(clock.attempts), attempts=len(clock.attempts))
    result.update(machine=machine_info(), versions=versions())
    if cfg.get("PRETRAIN", {}).get("EPOCHS", 0) > 0:
        result["pretrain"] = pretraining_of(cfg, run_dir)
    result["threads"] = int(os.environ.get("OMP_NUM_THREADS", 0))
    write_json_atomic(run_dir / RECORD, result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return 0 if train_one(json.loads(Path(argv[0]).read_text())) is not None else 3


if __name__ == "__main__":
    sys.exit(main())
