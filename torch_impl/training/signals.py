"""Stop signals held back while an epoch is committed, then delivered as they would have been.

A handler that raises (Ctrl-C's KeyboardInterrupt, the experiment child's SIGTERM) raises wherever
the interpreter happens to be. Inside library code that is not always a KeyboardInterrupt by the time it
reaches the training loop: a pybind11 function (matplotlib's transforms, drawing the curve) that is
converting its arguments when the handler raises reports a ``TypeError`` instead, and the run would end
as a crash rather than as an interrupted run. While ``deferred_signals()`` is open, SIGINT and SIGTERM are
only recorded; when it closes, the first one recorded goes to the handler that was there before, at a
point of our own code::

    with deferred_signals():
        save_checkpoint(...)
        write_metrics_and_curve(...)
    # a SIGTERM that came meanwhile raises (or ends the process) here
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals(signals: tuple[signal.Signals, ...] = HELD) -> Iterator[None]:
    """Hold ``signals`` back for the block; afterwards deliver the first that came to the previous handler.

    Off the main thread Python cannot install handlers (and no handler runs there): the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            _deliver(received[0], previous[received[0]])


def _deliver(signum: int, handler) -> None:
    """What the signal would have done had it not been held back."""
    if callable(handler):
        handler(signum, None)  # e.g. signal.default_int_handler raises KeyboardInterrupt
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action (SIGTERM: the process ends), now that it is restored
    # SIG_IGN, or a handler set outside Python (None): nothing to do
