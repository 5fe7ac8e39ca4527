"""How the command-line tools end on a user's mistake: one line ``error: ...`` on stderr, exit status 2.

A user's mistake reaches the tools as one of ``USER_ERRORS``: a ValueError (a bad option, model name,
data file or checkpoint; the library's messages say which and what to do), an OSError (a missing
file, no permission, a full disk: the operating system's reason and the path) or a FloatingPointError
(the loss diverged) or a ``folder_lock.FolderBusy`` (another live run writes the folder; the message
names it). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable

from .folder_lock import FolderBusy

USER_ERRORS = (ValueError, OSError, FloatingPointError, FolderBusy)
USAGE_ERROR = 2  # argparse's status for a bad command line, used for every user error


def describe(err: BaseException) -> str:
    """The one-line message for ``err``: for an OSError with a path, the path, reason and errno name."""
    if isinstance(err, OSError) and err.errno is not None and err.filename is not None:
        name = errno.errorcode.get(err.errno, str(err.errno))
        return f"{err.filename}: {err.strerror} ({name})"
    return " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message's layout


def report(err: BaseException) -> int:
    print(f"error: {describe(err)}", file=sys.stderr, flush=True)
    return USAGE_ERROR


def exit_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's ``main``: a user error prints ``error: ...`` and returns 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            return report(err)

    return wrapper
