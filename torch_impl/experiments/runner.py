"""Plan and run a set of grids: the queue of runs, N child processes side by side, resumption.
(``executors`` runs the same queue as submitit jobs, on a SLURM cluster.)

Each (variant, seed) is one run, trained once even when several grids share it. The queue is
seed-major: every run of seed 0, then of seed 1, ..., so that an interrupted grid still has complete
rows for its first seeds; a row asked for more seeds (``--seeds-for aff3d=8``) gets them last.

A child never outlives its runner: on Linux the kernel sends it SIGTERM when the runner dies, however
it died (``parent_death_signal``), and the child saves its last completed epoch and ends. Elsewhere
(no ``prctl``) an orphaned child trains on, but it holds its run folder's lock, so a restarted
runner's child for that run waits for it and then stops with an error instead of writing alongside it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.checkpoint import LAST
from .child import BUSY, RECORD
from .grids import Grid, GridRow, Variant, run_key, variant_of
from .store import add_record, write_json_atomic


@dataclass
class PlannedRun:
    variant: Variant
    seed: int
    run_dir: Path
    uses: list[tuple[Grid, GridRow]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return run_key(self.variant, self.seed)


def plan(
    grids: list[tuple[Grid, list[GridRow]]],
    seeds_for,
    backbone: str,
    runs_dir: Path,
    first: tuple[set[str], int] = (set(), 0),
) -> list[PlannedRun]:
    """Every (variant, seed) the grids need, once, seed-major then in the grids' row order.

    ``first = (row keys, n)``: the first n seeds of those rows go before everything else (still
    seed-major), so that on a slow machine the main comparison gets its seeds before the other rows.
    Runs interrupted earlier (a checkpoint, no record) go first of all."""
    runs: dict[str, PlannedRun] = {}
    for grid, rows in grids:
        for row in rows:
            variant = variant_of(row, backbone)
            for seed in range(seeds_for(row.key)):
                key = run_key(variant, seed)
                if key not in runs:
                    runs[key] = PlannedRun(variant, seed, runs_dir / key)
                runs[key].uses.append((grid, row))
    order = {key: i for i, key in enumerate(runs)}
    keys, n_first = first

    def early(r: PlannedRun) -> int:
        if (r.run_dir / LAST).exists():
            return 0  # interrupted earlier: finish it first
        return 1 if r.seed < n_first and any(row.key in keys for _, row in r.uses) else 2

    return sorted(runs.values(), key=lambda r: (early(r), r.seed, order[r.key]))


def record_for(run: PlannedRun, grid: Grid, row: GridRow, measured: dict[str, Any], bid: str) -> dict[str, Any]:
    """The grid's record of a finished run: what it stands for, then what was measured."""
    return {
        "grid": grid.name,
        "paper_tables": sorted({t.number for t, _ in row.paper_rows}),
        "row_key": row.key,
        "row": row.label,
        "symbol": row.symbol,
        "paper": row.paper_numbers,
        "model": run.variant.model,
        "model_kwargs": run.variant.options,
        "seed": run.seed,
        "run_key": run.key,
        "budget_id": bid,
        **measured,
    }


def read_finished(run: PlannedRun) -> dict[str, Any] | None:
    path = run.run_dir / RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
CHECKOUT = str(Path(__file__).resolve().parents[2])  # children import this code, not another installed copy


def parent_death_signal():
    """A ``preexec_fn`` for Popen that has the kernel send the child SIGTERM when this process dies
    (SIGKILL included), or None where ``prctl`` does not exist (not Linux).

    The setting survives exec, so it also covers torchrun, which passes SIGTERM on to its workers. It
    fires when the *thread* that started the child ends: ``Executor.run`` starts them from the thread that
    waits for them (``executors.ChildJob`` from the job's main thread). libc is looked up here, before
    fork: the function run between fork and exec does nothing but the call and the check."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    runner = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != runner:  # the runner died between fork and prctl: no signal will come
            os._exit(128 + signal.SIGTERM)

    return preexec


def child_env(base: dict[str, str], nproc_per_node: int | None) -> dict[str, str]:
    """The environment of a child, built from ``base``: the runner's for a local child, the job's own
    inside a scheduler's job (its GPUs and SLURM variables are not the runner's)."""
    env = dict(base)
    if not nproc_per_node:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread per run, N runs side by side
    env["PYTHONPATH"] = CHECKOUT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Executor:
    """Runs the queue, ``jobs`` runs at a time (None: all at once); ``on_done(run, measured)`` after each
    finished run.

    The queue logic (the spec each run is given, the window of runs at once, telling finished from failed
    and busy runs) is here; how a run is started and watched is three methods, ``start``, ``poll`` and
    ``stop``: here local child processes, in ``executors.SubmititExecutor`` submitit jobs that run the
    same child on the same spec.

    ``failed``: (run, exit status) of runs that ended without a record; ``busy``: runs not trained
    because another live process held their folder (status ``child.BUSY``), with the child's message."""

    poll_s = 0.2

    def __init__(self, config: dict[str, Any], jobs: int | None, on_done, nproc_per_node: int | None = None):
        self.config, self.jobs, self.on_done = config, jobs, on_done
        self.nproc_per_node = nproc_per_node
        self.failed: list[tuple[PlannedRun, int]] = []
        self.busy: list[tuple[PlannedRun, str]] = []
        self._preexec = parent_death_signal()

    def command(self, run: PlannedRun) -> list[str]:
        spec_path = run.run_dir.parent / f"{run.key}.spec.json"
        if self.nproc_per_node:
            return ["torchrun", "--standalone", f"--nproc_per_node={self.nproc_per_node}", "-m",
                    "torch_impl.experiments.child", str(spec_path)]  # fmt: skip
        return [sys.executable, "-m", "torch_impl.experiments.child", str(spec_path)]

    def write_spec(self, run: PlannedRun) -> None:
        cfg = dict(self.config, model=run.variant.model, model_kwargs=run.variant.options, seed=run.seed)
        spec = {"config": cfg, "run_dir": str(run.run_dir)}
        write_json_atomic(run.run_dir.parent / f"{run.key}.spec.json", spec)

    def env(self) -> dict[str, str]:
        return child_env(os.environ, self.nproc_per_node)

    def dry_run(self, queue: list[PlannedRun]) -> None:
        for run in queue:
            self.write_spec(run)
            print(shlex.join(self.command(run)))

    def log_path(self, run: PlannedRun) -> Path:
        """The run's own log, appended to by every attempt (the child's output, whatever started it)."""
        return run.run_dir.parent / f"{run.key}.log"

    def describe(self) -> str:
        return f"{self.jobs} at a time"

    # ------------------------------------------------------------------ how a run is started and watched

    def start(self, runs: list[PlannedRun]) -> list[Any]:
        """Start ``runs`` (their specs written); one handle each, for ``poll`` and ``stop``."""
        handles = []
        for run in runs:
            log = open(self.log_path(run), "a")
            proc = subprocess.Popen(self.command(run), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                    preexec_fn=self._preexec)  # fmt: skip
            handles.append((proc, log))
        return handles

    def poll(self, handle) -> int | None:
        """The run's exit status once it has ended, else None."""
        proc, log = handle
        rc = proc.poll()
        if rc is not None:
            log.close()
        return rc

    def stop(self, handles: list) -> None:
        """End the runs still going (the runner is stopping): no child is left behind."""
        for proc, _ in handles:
            proc.terminate()
        for proc, log in handles:
            proc.wait()
            log.close()

    def failure(self, run: PlannedRun, rc: int, handle) -> tuple[str, Path]:
        """Why a run failed, in a few words, and the log that says more."""
        return f"exit {rc}", self.log_path(run)

    # ------------------------------------------------------------------ the queue, the same for every executor

    def run(self, queue: list[PlannedRun], progress=None) -> None:
        pending = list(queue)
        active: list[tuple[PlannedRun, Any]] = []
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while pending or active:
                room = len(pending) if self.jobs is None else self.jobs - len(active)
                if pending and room > 0:
                    starting, pending = pending[:room], pending[room:]
                    for run in starting:
                        self.write_spec(run)
                        run.run_dir.parent.mkdir(parents=True, exist_ok=True)
                    active += zip(starting, self.start(starting))
                time.sleep(self.poll_s)
                still = []
                for run, handle in active:
                    rc = self.poll(handle)
                    if rc is None:
                        still.append((run, handle))
                        continue
                    self._finished(run, rc, handle)
                    if progress is not None:
                        progress.update(1)
                active = still
        except BaseException:  # Ctrl-C, SIGTERM, or an error of the runner itself: nothing is left running
            self.stop([handle for _, handle in active])
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _finished(self, run: PlannedRun, rc: int, handle) -> None:
        measured = read_finished(run)
        if rc == BUSY:
            reason = _last_error(self.log_path(run)) or f"{run.run_dir} is in use by another process"
            self.busy.append((run, reason))
            print(f"run {run.key} not trained: {reason}", file=sys.stderr, flush=True)
        elif rc != 0 or measured is None:
            self.failed.append((run, rc))
            reason, log = self.failure(run, rc, handle)
            print(f"run {run.key} failed ({reason}); its log: {log}", file=sys.stderr, flush=True)
        else:
            self.on_done(run, measured)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _last_error(log: Path) -> str | None:
    """The child's last ``error: ...`` line in its log (the log is appended to by every attempt)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


def merge_record(data: dict[str, Any], record: dict[str, Any], row_order: list[str]) -> None:
    add_record(data, record)
    rank = {k: i for i, k in enumerate(row_order)}
    data["records"].sort(key=lambda r: (rank.get(r["row_key"], len(rank)), int(r["seed"])))
