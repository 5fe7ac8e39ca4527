"""The benchmark's one way of timing: models run in rotating order, round after round, so that a drift of the
machine (another job starting, the clock changing) falls on every model alike; ratios against the baseline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def rotations(names: list[str], reps: int):
    """The order of each round: round r starts at the r-th name (``a b c``, ``b c a``, ``c a b``, ...)."""
    for r in range(reps):
        yield names[r % len(names):] + names[: r % len(names)]


def interleaved_runs(models: dict, reps: int, run_once: Callable) -> dict[str, list[float]]:
    """``run_once(name, model) -> seconds``, repeated ``reps`` times per model in rotating order."""
    samples: dict[str, list[float]] = {n: [] for n in models}
    for order in rotations(list(models), reps):
        for n in order:
            samples[n].append(run_once(n, models[n]))
    return samples


def interleaved_calls(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Seconds of each ``fns[name]()`` call, ``reps`` rounds in rotating order."""
    samples: dict[str, list[float]] = {n: [] for n in fns}
    for order in rotations(list(fns), reps):
        for n in order:
            t0 = time.perf_counter()
            fns[n]()
            samples[n].append(time.perf_counter() - t0)
    return samples


def ratios(values: dict[str, float], baseline: str, higher_is_better: bool) -> dict[str, float]:
    """Cost ratio to ``baseline``: time or memory over the baseline's (throughput: baseline over model)."""
    base = values[baseline]
    return {k: (base / v if higher_is_better else v / base) for k, v in values.items()}


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): recorded beside every timing."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None
