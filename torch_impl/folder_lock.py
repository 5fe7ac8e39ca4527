"""One live writer per folder: an advisory lock that the operating system drops when its process dies.

A run folder (``torch_impl.train``) and an experiment's output and run folders
(``torch_impl.experiments``) each belong to one process at a time. The lock is ``fcntl.flock`` on a
file ``.lock`` inside the folder, so a process killed by any signal, SIGKILL included, leaves no
lock behind: a later resume never has to clean anything up. The file also records who holds it
(process id, host, command line), which the error of a second writer names::

    with lock_folder("runs/quickstart-aff3d_resnet20_cifar"):
        ...  # write the run's files

The lock is advisory: it keeps this project's own processes apart, not a user's ``rm``. Where
``fcntl`` does not exist (Windows) the lock is a no-op, and two writers are not detected.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind
    fcntl = None

LOCK_NAME = ".lock"


class FolderBusy(RuntimeError):
    """Another live process holds the folder; ``str()`` names the folder and the holder."""

    def __init__(self, folder: Path, holder: str):
        self.folder, self.holder = folder, holder
        super().__init__(f"{folder} is in use by another process ({holder}); wait for it to end, or stop it")


class FolderLock:
    """A held lock on ``folder``; ``release()`` (or leaving the ``with`` block) gives it up."""

    def __init__(self, folder: Path, handle):
        self.folder, self._handle = folder, handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the flock
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"process {info['pid']} on {info['host']}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):  # written by a process that has not finished writing it
        return "a process that has not yet said who it is"


def try_lock_folder(folder: str | Path) -> FolderLock | None:
    """Take the folder's lock without waiting; None when another live process holds it.

    ``folder`` must exist. The lock file is opened close-on-exec, so child processes do not inherit it.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open for as long as the lock is)
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
    handle.seek(0)
    handle.truncate()
    command = " ".join([os.path.basename(sys.executable), *sys.argv])
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command}))
    handle.flush()
    return FolderLock(folder, handle)


def lock_folder(folder: str | Path, wait_s: float = 0.0) -> FolderLock:
    """Take the folder's lock, creating the folder if needed; raise FolderBusy naming the holder when
    another live process keeps it for longer than ``wait_s`` seconds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        lock = try_lock_folder(folder)
        if lock is not None:
            return lock
        if time.monotonic() >= deadline:
            raise FolderBusy(folder, _describe_holder(folder / LOCK_NAME))
        time.sleep(0.2)


def claim_new_folder(base: str | Path) -> tuple[Path, FolderLock]:
    """A fresh folder for a new run: ``base``, else ``base-2``, ``base-3``, ... - the first that is empty
    (or absent) and not held by a live process, created and locked in one step, so that two processes
    started at once never get the same one."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        n += 1
        try:
            candidate.mkdir()
        except FileExistsError:
            if not candidate.is_dir():
                continue
        lock = try_lock_folder(candidate)
        if lock is None:
            continue
        if any(p.name != LOCK_NAME for p in candidate.iterdir()):  # another run's files: not ours to reuse
            lock.release()
            continue
        return candidate, lock
