"""Train the paper's ablation grids: ``python -m torch_impl.experiments GRID [GRID ...] [options]``.

    python -m torch_impl.experiments table2 --seeds 5 --jobs 2          # built-in shapes, 2 runs side by side
    python -m torch_impl.experiments all --seeds 3 --seeds-for resnet=8,se=8,aff3d=8 --jobs 2
    python -m torch_impl.experiments table2 --recipe cifar100_paper --data-dir ~/data --seeds 3
    python -m torch_impl.experiments table1 --recipe imagenet_paper --data-dir /data/imagenet --nproc-per-node 8
    python -m torch_impl.experiments table2 --recipe cifar100_paper --data-dir /data --seeds 3 \
        --executor slurm --partition gpu --time 600                     # one SLURM job per run (docs/slurm.md)
    python -m torch_impl.experiments table2 --report-only               # rewrite results.md / curves.png
    python -m torch_impl.experiments --list                             # grids and their rows

Grids: table1, table2, table3_4, table5, table6 (``all``: every one). Runs already finished (a
``record.json`` in their run folder, or a record in the grid's ``results.json``) are skipped; an
interrupted run resumes from its last checkpoint. See ``torch_impl/experiments/store.py`` for the files.

One runner at a time per results folder (``--out``) and per runs folder (``--runs``): each holds both
for its whole life (``--report-only`` holds ``--out``; ``--dry-run`` and ``--list`` hold nothing and
write no results); a second one stops at once with an ``error:`` line naming the first, status 2.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import yaml

from ..cli import describe, report
from ..folder_lock import FolderBusy, lock_folder
from ..training.config import make_config
from ..training.runner import default_workers
from .executors import OptionError, add_arguments, check_options, make_executor
from .grids import GRIDS, get_grid
from .runner import merge_record, plan, read_finished, record_for
from .store import ResultsMismatch, budget_id, budget_of, load_results, record_index, write_json_atomic

DEFAULT_RECIPE = "experiments_shapes"
DEFAULT_BACKBONE = {"shapes": "resnet20_cifar", "cifar100": "resnet164_cifar", "imagenet": "resnet50"}


class UserError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m torch_impl.experiments", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("grids", nargs="*", help=f"grid names {list(GRIDS)} or 'all'")
    p.add_argument("--list", action="store_true", help="print the grids, their rows and keys, and exit")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (0, 1, ..., N-1); default 3")
    p.add_argument("--seeds-for", default="", help="more seeds for some rows, e.g. resnet=8,se=8,aff3d=8")
    p.add_argument("--first", default="", help="rows whose first --seeds seeds are trained before all others "
                   "(e.g. resnet,se,aff3d on a slow machine); default: seed-major over all rows")
    p.add_argument("--rows", default="", help="train only these row keys (comma-separated; see --list)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs side by side, one thread each (default 1; local and submitit-local)")  # fmt: skip
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"training recipe (default {DEFAULT_RECIPE})")
    p.add_argument("--data-dir", default=None, help="data folder for the cifar100 / imagenet recipes")
    p.add_argument("--backbone", default=None, help="architecture the rows are built on (default: by data set)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the recipe's)")
    p.add_argument("--nproc-per-node", type=int, default=None, help="launch each run with torchrun on N GPUs")
    p.add_argument("--out", default="docs/results/experiments", help="results folder (one subfolder per grid)")
    p.add_argument("--runs", default="runs/experiments", help="run folders (checkpoints, logs)")
    p.add_argument("--dry-run", action="store_true", help="print the command of every run still to do, and exit")
    p.add_argument("--report-only", action="store_true", help="only rewrite results.md and curves.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arguments(p)
    return p


def _grids(names: list[str]):
    if not names:
        raise UserError(f"name at least one grid: {list(GRIDS)} or 'all'")
    names = list(GRIDS) if names == ["all"] else names
    try:
        return [get_grid(n) for n in names]
    except ValueError as err:
        raise UserError(str(err)) from None


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _seeds_for(text: str, default: int, known: set[str]):
    extra = {}
    for item in _keys(text):
        key, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise UserError(f"--seeds-for: expected KEY=N with N >= 1, got {item!r}")
        if key.strip() not in known:
            raise UserError(f"--seeds-for: unknown row {key.strip()!r}: the rows are {sorted(known)}")
        extra[key.strip()] = int(n)
    return lambda key: max(default, extra.get(key, 0))


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set: expected KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def _check_data(cfg) -> None:
    """A clear error now, rather than N failed runs, when the data folder lacks the recipe's data set."""
    if cfg.dataset == "shapes":
        return
    from ..data import build_dataset

    try:
        for split in ("train", "val"):
            build_dataset(cfg.dataset, split, data_dir=cfg.data_dir, image_size=cfg.image_size, transform=None)
    except Exception as err:  # each loader raises its own kind; all mean "not the data set here"
        raise UserError(f"--data-dir {cfg.data_dir!r} does not hold the {cfg.dataset} data of recipe "
                        f"{cfg.recipe!r}: {err}") from None  # fmt: skip


def _hold(held: ExitStack, flag: str, folder: Path) -> None:
    """Lock ``folder`` (creating it) until the runner ends: two runners would train every run twice."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder")
    try:
        held.enter_context(lock_folder(folder))
    except FolderBusy as err:
        raise UserError(f"{flag}: {err}") from None
    except OSError as err:
        raise UserError(f"{flag} {describe(err)}") from None


def run_settings(cfg, nproc_per_node: int | None = None, cores: int | None = None) -> dict:
    """The runs' configuration; ``workers`` None (as many as this machine's cores allow) is resolved
    here, so that the budget names the number every run of it uses (it changes what a run learns).
    ``cores``: each job's CPUs (``--cpus-per-run``), when runs train elsewhere than on this machine."""
    settings = cfg.to_dict()
    if settings["workers"] is None and cores is not None:  # default_workers' rule, on the job's cores
        per_process = cores // (nproc_per_node or 1)
        settings["workers"] = 0 if cores <= 2 else min(8, max(1, per_process - 1))
    elif settings["workers"] is None:
        settings["workers"] = default_workers(nproc_per_node or 1)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with ExitStack() as held:  # the folders' locks, given up when the runner ends
            return _main(args, held)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be written (read-only, full): the path and the reason
        return report(err)


def record_keys(data) -> set:
    return set(record_index(data))


def _main(args, held: ExitStack) -> int:
    if args.list:
        for g in GRIDS.values():
            print(f"{g.name}: {g.title} (baseline: {g.baseline})")
            for r in g.rows:
                print(f"  {r.key:16s} {r.symbol:42s} {r.build.call()}")
        return 0
    grids = _grids(args.grids)
    if args.seeds < 1 or args.jobs < 1:
        raise UserError(f"--seeds and --jobs must be >= 1, got {args.seeds} and {args.jobs}")
    try:
        check_options(args)
    except OptionError as err:
        raise UserError(str(err)) from None
    known = {r.key for g in grids for r in g.rows}
    wanted = _keys(args.rows)
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise UserError(f"unknown row(s) {unknown} in grids {[g.name for g in grids]}: the rows are {sorted(known)}")
    seeds_for = _seeds_for(args.seeds_for, args.seeds, known)
    first = set(_keys(args.first))
    if first - known:
        raise UserError(f"--first: unknown row(s) {sorted(first - known)}: the rows are {sorted(known)}")
    overrides = _overrides(args.set)
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.device:
        overrides["device"] = args.device
    overrides.setdefault("progress", False)
    overrides.setdefault("tensorboard", False)
    if not args.nproc_per_node:
        overrides.setdefault("threads", 1)
    try:
        cfg = make_config(args.recipe, **overrides)
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise UserError(str(err)) from None
    _check_data(cfg)
    backbone = args.backbone or DEFAULT_BACKBONE[cfg.dataset]
    settings = run_settings(cfg, args.nproc_per_node, args.cpus_per_run)
    config = {k: v for k, v in settings.items() if k not in ("model", "model_kwargs", "seed")}
    budget = {**budget_of(settings), "backbone": backbone}
    bid = budget_id(budget)
    out, runs_dir = Path(args.out), Path(args.runs) / bid
    if not args.dry_run:  # held before the results are read: no other runner rewrites them meanwhile
        _hold(held, "--out", out)

    # Every results file is checked before anything trains: a mismatch stops here and loses nothing.
    results = {}
    for g in grids:
        try:
            results[g.name] = load_results(out / g.name / "results.json", g.name, budget)
        except ResultsMismatch as err:
            raise UserError(str(err)) from None
        results[g.name]["tables"] = list(g.tables)

    from .report import SUMMARY_FILE, plot_grid, render_markdown, summary_table

    chance = 100.0 * (1 - 1 / 8) if cfg.dataset == "shapes" else None

    def write_grid(g, records: bool = True) -> None:
        data = results[g.name]
        if records:
            write_json_atomic(out / g.name / "results.json", data)
        if data["records"]:
            (out / g.name / "results.md").write_text(render_markdown(g, data))
            plot_grid(g, data, out / g.name / "curves.png", chance=chance)
            (out / SUMMARY_FILE).write_text(summary_table(out))

    if args.report_only:  # results.json is not rewritten: a grid running meanwhile owns it
        for g in grids:
            write_grid(g, records=False)
        return 0

    if not args.dry_run and Path(args.runs).resolve() != out.resolve():  # one folder is locked once
        _hold(held, "--runs", Path(args.runs))
    selected = [(g, [r for r in g.rows if not wanted or r.key in wanted]) for g in grids]
    queue = []
    for run in plan(selected, seeds_for, backbone, runs_dir, (first, args.seeds)):
        missing = [(g, r) for g, r in run.uses if (r.key, run.seed) not in record_keys(results[g.name])]
        if not missing:
            continue
        measured = read_finished(run)
        if measured is not None:  # trained before (for another grid, or the results file was rebuilt)
            for g, r in missing:
                merge_record(results[g.name], record_for(run, g, r, measured, bid), [x.key for x in g.rows])
            continue
        run.uses = missing
        queue.append(run)
    if not args.dry_run:  # a dry run holds no lock, so it writes no results
        for g in grids:
            write_grid(g)

    executor_config = dict(config)

    def on_done(run, measured) -> None:
        for g, r in run.uses:
            merge_record(results[g.name], record_for(run, g, r, measured, bid), [x.key for x in g.rows])
            write_grid(g)

    executor = make_executor(args, executor_config, on_done, runs_dir)
    if args.dry_run:
        executor.dry_run(queue)
        return 0
    print(f"{len(queue)} run(s) to train, {executor.describe()}; runs in {runs_dir}, results in {out}", flush=True)
    progress = None
    if not args.no_progress and queue:
        from tqdm import tqdm

        progress = tqdm(total=len(queue), desc="runs", unit="run", mininterval=5)
    try:
        executor.run(queue, progress)
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
    if executor.busy:
        keys = [r.key for r, _ in executor.busy]
        print(f"error: {len(keys)} run(s) not trained, their folder held by another process: {keys}; "
              "run the same command again once it has ended", file=sys.stderr)  # fmt: skip
    if executor.failed:
        print(f"error: {len(executor.failed)} run(s) failed: {[r.key for r, _ in executor.failed]}", file=sys.stderr)
    return 1 if executor.busy or executor.failed else 0


if __name__ == "__main__":
    sys.exit(main())
