"""Files written whole or not at all: a temporary file beside the target, flushed to disk, then renamed.

Every file the project writes for a user (checkpoints, metrics.csv, curve.png, config.yaml, the zoo
table, converted detectron2 weights) goes through ``atomic_write``: a reader, or a run killed at any
moment, sees the old file or the new one, never half of one. A process killed by SIGKILL cannot remove
its temporary file (``.<name>.<random>.tmp`` beside the target); ``remove_stale_temporaries`` does,
when the next run starts in that folder.

A failed write (a full disk, a read-only folder) raises ``OSError`` with the operating system's
reason and the target's path, e.g. ``[Errno 28] No space left on device: 'runs/x/last.pth'``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on leaving the block without error it replaces ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is left
    as it was. The temporary file is created with the process's umask, like ``open(path, "w")``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = _temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = dict(encoding=encoding or "utf-8", newline="") if mode == "w" else {}  # text: written as given
        with open(tmp, mode.replace("w", "x"), **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except OSError as err:
        _remove(tmp)
        if err.filename == str(path):
            raise
        # The reason (ENOSPC, EACCES, EROFS, ...) with the file the user asked for, not the temporary name.
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. its folder could not be created: there is nothing to remove
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def stale_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Temporary files ``atomic_write`` left in ``folder`` for the targets ``names`` (a killed write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [re.compile(rf"\.{re.escape(name)}\.[0-9a-f]+{re.escape(TEMP_SUFFIX)}") for name in names]
    return sorted(p for p in folder.iterdir() if any(pat.fullmatch(p.name) for pat in patterns))


def remove_stale_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Remove what ``stale_temporaries`` finds; return the removed paths."""
    removed = stale_temporaries(folder, names)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
