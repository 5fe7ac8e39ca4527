"""A run's folder: which one (a fresh one, or the resumed checkpoint's), held by one writer, repaired on resume.

A new run claims ``<output_dir>/<run_name>`` (else ``-2``, ``-3``, ...) and a resumed run its checkpoint's
folder through ``torch_impl.folder_lock``: the folder's ``.lock`` is held by rank 0 for the whole run,
so two runs started at once with the same name get two folders, and a second process resuming a
folder that a live run still writes stops with an error naming that run. The operating system drops
the lock when its process dies, so a killed run never blocks its own resume.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import remove_stale_temporaries
from ..folder_lock import FolderLock, claim_new_folder, lock_folder
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistContext, broadcast_object
from .log import CSV_NAME, CURVE_NAME, RunLog
from .metrics import validated

CONFIG_NAME = "config.yaml"
RUN_FILES = (ckpt.LAST, ckpt.BEST, CSV_NAME, CURVE_NAME, CONFIG_NAME)  # what rank 0 writes atomically
FOLDER_KEYS = ("output_dir", "run_name")  # where a new run goes; a resumed run stays in its folder
# How long a resume waits for the folder's lock: a run being stopped (SIGTERM, Ctrl-C) takes a moment
# to write its last files and exit; a live run is reported after this.
RESUME_WAIT_S = 10.0


def check_resume_folder(resume: str | Path, given: dict) -> None:
    """Refuse ``output_dir`` / ``run_name`` given with ``resume``: a resumed run continues in its own folder."""
    asked = sorted(k for k in FOLDER_KEYS if k in given)
    if asked:
        folder = ckpt.resolve_checkpoint_path(resume).parent
        flags = " and ".join("--" + k.replace("_", "-") for k in asked)
        raise ValueError(
            f"{flags} cannot be used with --resume: a resumed run continues in its checkpoint's folder {folder}; "
            "to continue elsewhere, copy that folder and resume the copy"
        )


def _claim(cfg: TrainConfig) -> tuple[Path, FolderLock]:
    if cfg.resume:
        run_dir = ckpt.resolve_checkpoint_path(cfg.resume).parent
        return run_dir, lock_folder(run_dir, wait_s=RESUME_WAIT_S)
    name = cfg.run_name or f"{cfg.recipe}-{cfg.model}"
    if Path(name).name != name or name in (".", ".."):  # run_name is checked; the recipe name may not be
        raise ValueError(f"the run's folder name {name!r} must be a plain name; give --run-name")
    return claim_new_folder(Path(cfg.output_dir).expanduser() / name)


def open_run_folder(cfg: TrainConfig, ctx: DistContext) -> tuple[Path | None, FolderLock | None]:
    """The run folder and, on rank 0, its held lock (the caller releases it); ``(None, None)`` without
    ``output_dir``. Rank 0 decides; when it fails, every process raises (none waits for it forever)."""
    if not cfg.resume and cfg.output_dir is None:
        return None, None
    run_dir, lock, failure = None, None, None
    if ctx.is_main:
        try:
            run_dir, lock = _claim(cfg)
        except Exception as err:  # noqa: BLE001 (re-raised below, after the other processes are told)
            failure = err
    run_dir, message = broadcast_object((run_dir, None if failure is None else str(failure)), ctx)
    if failure is not None:
        raise failure
    if message is not None:
        raise RuntimeError(f"rank 0 could not open the run folder: {message}")
    if lock is not None and cfg.resume:
        stale = remove_stale_temporaries(run_dir, RUN_FILES)  # only now: a live writer's would not be stale
        if stale:
            print(f"removed {len(stale)} temporary file(s) of a save that was killed: "
                  f"{[p.name for p in stale]}", flush=True)  # fmt: skip
    return run_dir, lock


def best_epoch(history: list[dict[str, float]]) -> int | None:
    """The epoch of the lowest validation top-1 error (the first, on a tie; of the measured epochs), as RunResult.best."""
    measured = validated(history)
    return min(measured, key=lambda r: r["val_top1_err"])["epoch"] if measured else None


def repair_run_folder(run_dir: Path, state: dict, log: RunLog) -> None:
    """Make best.pth and metrics.csv agree with last.pth after a kill between their writes.

    Each epoch writes last.pth, then best.pth (when the epoch is the best so far), then metrics.csv.
    A kill between the first two leaves best.pth an epoch behind; that best epoch is then last.pth's.
    """
    history = list(state["history"])
    best, best_path = best_epoch(history), run_dir / ckpt.BEST
    held = ckpt.load_checkpoint(best_path)["epoch"] if best_path.is_file() else None
    if best is not None and held != best:
        if best == state["epoch"]:  # killed between last.pth and best.pth: last.pth is the best epoch
            ckpt.save_checkpoint(state, best_path)
            log.info(f"{ckpt.BEST} updated to epoch {best} (the run was stopped before writing it)")
        else:  # not left by a kill: the folder was changed by hand
            log.info(
                f"warning: {best_path} holds epoch {held}, not the best epoch {best} of {ckpt.LAST}, and "
                "cannot be rebuilt from it"
            )
    log.write_history(history)
