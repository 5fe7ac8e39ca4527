"""Train and compare detection backbones on the built-in shapes scenes.

    python -m detectron2_ext.compare --jobs 2                                # Mask R-CNN x {R50, SE, CBAM, ECA, 3D-AFF}
    python -m detectron2_ext.compare --detectors mask_rcnn,faster_rcnn       # both, each backbone's seeds (SEEDS)
    python -m detectron2_ext.compare --backbones R_50,AFF3D_R_50 --seeds 1 SOLVER.MAX_ITER 500
    python -m detectron2_ext.compare --detectors faster_rcnn --schedule-scale 0.5    # halving check: into i<N/2>/
    python -m detectron2_ext.compare --backbones SE_R_50 --seeds 3 --first-seed 2    # seed 2 alone
    python -m detectron2_ext.compare --report-only                           # rewrite results.md
    python -m detectron2_ext.compare.schedules docs/results/experiments/detection/comparison  # the halving table

Results go to ``<out>/results.json``; by default ``docs/results/experiments/detection/comparison/i<N>``
with N the runs' iterations, so that each schedule's runs have a folder of their own.

Runs already finished (``record.json`` in their folder, or a record in ``results.json``) are
skipped; an interrupted run resumes from its last checkpoint. Trailing ``KEY VALUE`` pairs change
every run's config alike (and so the budget: a results file of another budget is refused, its
runs kept). Training needs detectron2 (detectron2_ext/README.md); ``--report-only`` does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from torch_impl.experiments.runner import Executor, read_finished
from torch_impl.experiments.store import ResultsMismatch, budget_id, load_results, write_json_atomic
from torch_impl.folder_lock import FolderBusy, lock_folder

from .configs import BACKBONES, COMPARISON, DETECTORS, SEEDS, budget_of_config, config_path, default_out, schedule_opts
from .report import (PREDICTIONS_FILE, RESULTS_PAGE, predictions_of, render_markdown, update_readme,
                     update_results_page)

GRID = "detection"
MERGE_WAIT_S = 60.0  # another runner holds the results folder only while it merges one run


class UserError(Exception):
    pass


class DetectionRun:
    """One (detector, backbone, seed): a detectron2 OUTPUT_DIR under ``<runs>/<budget_id>/``."""

    def __init__(self, detector: str, backbone: str, seed: int, runs_dir: Path):
        self.detector, self.backbone, self.seed = detector, backbone, seed
        self.run_dir = runs_dir / self.key

    @property
    def key(self) -> str:
        return f"{self.detector}_{self.backbone}.seed{self.seed}"


class DetectionExecutor(Executor):
    """torch_impl's experiment executor, launching ``detectron2_ext.compare.child`` instead."""

    def __init__(self, opts: list[str], jobs: int, on_done, datasets: Path, pretrain_cache: Path):
        super().__init__({}, jobs, on_done)
        self.opts, self.datasets, self.pretrain_cache = opts, datasets, pretrain_cache

    def command(self, run: DetectionRun) -> list[str]:
        return [sys.executable, "-m", "detectron2_ext.compare.child", str(run.run_dir.parent / f"{run.key}.spec.json")]

    def write_spec(self, run: DetectionRun) -> None:
        # a backbone's pre-training (PRETRAIN.EPOCHS > 0) is kept for both detectors, and the halving runs, to reuse
        opts = [*self.opts, "PRETRAIN.CACHE_DIR", str(self.pretrain_cache)]
        spec = {"config_file": str(config_path(run.detector, run.backbone)), "opts": opts,
                "seed": run.seed, "run_dir": str(run.run_dir)}  # fmt: skip
        write_json_atomic(run.run_dir.parent / f"{run.key}.spec.json", spec)

    def env(self) -> dict[str, str]:
        return dict(super().env(), DETECTRON2_DATASETS=str(self.datasets))


def record_for(run: DetectionRun, measured: dict[str, Any], bid: str) -> dict[str, Any]:
    label, attention = BACKBONES[run.backbone]
    return {"detector": DETECTORS[run.detector], "detector_key": run.detector, "backbone": label,
            "backbone_key": run.backbone, "attention": attention, "seed": run.seed, "run_key": run.key,
            "budget_id": bid, **measured}  # fmt: skip


def _names(text: str, known: dict, what: str) -> list[str]:
    names = [n for n in text.split(",") if n] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown {what} {unknown}: expected some of {list(known)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detectron2_ext.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--detectors", default="mask_rcnn", help=f"comma-separated, of {list(DETECTORS)}")
    p.add_argument("--backbones", default="", help=f"comma-separated, of {list(BACKBONES)} (default: all)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds per backbone (0, 1, ..., N-1); default: each backbone's in SEEDS, {SEEDS}")
    p.add_argument("--first-seed", type=int, default=0,
                   help="leave out the seeds below this one (default 0): with --seeds, one seed of a backbone can be "
                   "trained while its pre-training is kept, before the seeds below it")
    p.add_argument("--jobs", type=int, default=1, help="runs side by side, one thread each (default 1)")
    p.add_argument("--out", default=None, help=f"results folder (default: {COMPARISON}/i<iterations>)")
    p.add_argument("--runs", default="runs/detection", help="run folders (detectron2 OUTPUT_DIRs)")
    p.add_argument("--datasets", default=None, help="$DETECTRON2_DATASETS of the runs (default: <runs>/datasets)")
    p.add_argument("--schedule-scale", type=float, default=1.0,
                   help="train this many times the configs' iterations, lr steps, evaluation and checkpoint periods "
                   "scaled alike (0.5: the halving check); default 1")
    p.add_argument("--report-only", action="store_true", help="only rewrite results.md from results.json")
    p.add_argument("--dry-run", action="store_true", help="print the command of every run still to do, and exit")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs applied to every run's config")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except (UserError, ResultsMismatch, FolderBusy) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(args) -> int:
    detectors = _names(args.detectors, DETECTORS, "detector")
    backbones = _names(args.backbones, BACKBONES, "backbone")
    if len(args.opts) % 2:
        raise UserError(f"config overrides come as KEY VALUE pairs; got an odd number: {args.opts}")
    if (args.seeds is not None and args.seeds < 1) or args.jobs < 1:
        raise UserError(f"--seeds and --jobs must be at least 1, got {args.seeds} and {args.jobs}")
    if args.first_seed < 0:
        raise UserError(f"--first-seed must be at least 0, got {args.first_seed}")
    if not args.schedule_scale > 0:
        raise UserError(f"--schedule-scale must be positive, got {args.schedule_scale}")
    if args.schedule_scale != 1:  # the same for both detectors: their configs share one schedule
        args.opts = schedule_opts(detectors[0], args.schedule_scale) + list(args.opts)
    out = Path(args.out) if args.out else default_out(detectors[0], args.opts)
    if args.report_only:  # the file's own records, whatever budget today's configs give
        path = out / "results.json"
        data = json.loads(path.read_text()) if path.exists() else {"records": []}
        if not data["records"]:
            raise UserError(f"no finished runs in {path}: nothing to report")
        write_reports(data, out)
        return 0
    budget = {d: budget_of_config(d, "R_50", args.opts) for d in DETECTORS}
    bid = budget_id(budget)
    data = load_results(out / "results.json", GRID, budget)

    def write_report() -> None:
        if data["records"]:
            write_reports(data, out)

    if not args.dry_run and importlib.util.find_spec("detectron2") is None:
        raise UserError("training needs detectron2, which is not installed (detectron2_ext/README.md says how to "
                        "build it); --report-only and --dry-run work without it")
    runs_dir = Path(args.runs) / bid
    done = {(r["detector_key"], r["backbone_key"], int(r["seed"])) for r in data["records"]}
    queue = []
    seeds = {b: args.seeds or SEEDS[b] for b in backbones}
    if args.first_seed >= max(seeds.values()):
        raise UserError(f"--first-seed {args.first_seed} leaves no seed to run: the backbones have seeds 0 to "
                        f"{max(seeds.values()) - 1} (--seeds sets how many)")
    for seed in range(args.first_seed, max(seeds.values())):  # seed-major: an interrupted comparison has whole seeds
        for detector in detectors:
            for backbone in backbones:
                run = DetectionRun(detector, backbone, seed, runs_dir)
                if seed >= seeds[backbone] or (detector, backbone, seed) in done:
                    continue
                finished = read_finished(run)
                if finished is not None:
                    on_done(data, run, finished, bid, out)
                else:
                    queue.append(run)
    write_report()
    datasets = Path(args.datasets or os.environ.get("DETECTRON2_DATASETS") or Path(args.runs) / "datasets")
    executor = DetectionExecutor(args.opts, args.jobs, lambda run, m: (on_done(data, run, m, bid, out), write_report()),
                                 datasets.resolve(), (Path(args.runs) / "pretrain").resolve())  # fmt: skip
    if args.dry_run:
        executor.dry_run(queue)
        return 0
    if queue:
        _render_data(queue[0], args.opts, datasets)
    print(f"{len(queue)} run(s) to train, {args.jobs} at a time; runs in {runs_dir}, results in {out}", flush=True)
    try:
        executor.run(queue)
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; run the same command again to continue", file=sys.stderr)
        return 130
    if executor.failed:
        print(f"error: {len(executor.failed)} run(s) failed: {[r.key for r, _ in executor.failed]}", file=sys.stderr)
        return 1
    return 0


def write_reports(data: dict[str, Any], out: Path) -> None:
    """``<out>/results.md``; for the committed comparison at the full schedule, the results page's tables and
    README's summary too."""
    (out / "results.md").write_text(render_markdown(data))
    committed = RESULTS_PAGE.parents[1] / default_out(next(iter(DETECTORS)))
    if out.resolve() == committed.resolve():
        update_results_page(data)
        update_readme(data)


def on_done(data: dict[str, Any], run: DetectionRun, measured: dict[str, Any], bid: str, out: Path) -> None:
    """Merge a finished run into results.json (sorted: detector, backbone, seed) and keep seed 0's detections.

    The files are read again under the folder's lock: another runner on the same folder (other backbones,
    or the other detector) may have added its runs since this one loaded them, and they are kept."""
    record = record_for(run, measured, bid)
    order = {k: i for i, k in enumerate([*DETECTORS, *BACKBONES])}
    with lock_folder(out, wait_s=MERGE_WAIT_S):
        on_disk = load_results(out / "results.json", GRID, data["budget"])["records"]
        kept = {r["run_key"]: r for r in [*data["records"], *on_disk] if r["run_key"] != run.key}
        data["records"] = sorted([*kept.values(), record],
                                 key=lambda r: (order[r["detector_key"]], order[r["backbone_key"]], int(r["seed"])))
        write_json_atomic(out / "results.json", data)
        if run.seed == 0:
            path = out / PREDICTIONS_FILE
            predictions = json.loads(path.read_text()) if path.exists() else {}
            predictions[run.key] = predictions_of(run.run_dir)
            write_json_atomic(path, predictions)


def _render_data(run: DetectionRun, opts: list[str], datasets: Path) -> None:
    """Render the shapes scenes once, before runs side by side would each start to."""
    from types import SimpleNamespace

    from detectron2_ext.config import add_shapes_config
    from detectron2_ext.shapes_coco import ShapesCOCOSpec, export_shapes_coco

    cfg = SimpleNamespace(DATASETS=SimpleNamespace())
    add_shapes_config(cfg)  # the defaults, then what the config files set
    s = cfg.DATASETS.SHAPES
    vars(s).update(budget_of_config(run.detector, run.backbone, opts).get("DATASETS", {}).get("SHAPES", {}))
    for split, n in (("train", s.NUM_TRAIN), ("val", s.NUM_VAL)):
        spec = ShapesCOCOSpec(split, n, s.IMAGE_SIZE, s.SEED, s.MIN_OBJECTS, s.MAX_OBJECTS)
        export_shapes_coco(datasets / "shapes", spec)


if __name__ == "__main__":
    sys.exit(main())
