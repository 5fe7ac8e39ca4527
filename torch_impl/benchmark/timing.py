"""The benchmark's one way of timing: models run in rotating order, round after round, so that a drift of the
machine (another job starting, the clock changing) falls on every model alike; medians over the rounds and
ratios against a baseline. Every section (CPU, CUDA, compiled, small, table, detection, routes) times this way."""

from __future__ import annotations

import os
import statistics
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


def medians_ms(samples: dict[str, list[float]], baseline_of: Callable[[str], str]) -> tuple[dict, dict]:
    """(median milliseconds per name, its ratio to ``baseline_of(name)``'s median) from seconds samples."""
    ms = {n: statistics.median(v) * 1e3 for n, v in samples.items()}
    return ms, {n: ms[n] / ms[baseline_of(n)] for n in ms}


def paired_ratio_quartiles(samples: dict[str, list[float]], baseline_of: Callable[[str], str]) -> dict[str, list[float]]:
    """[25 %, 50 %, 75 %] quantiles of the per-round ratios t_n / t_baseline (each round's two timings lie
    close in time, so a load burst moves both): how far one window's ratio of medians can be trusted."""
    out = {}
    for n, v in samples.items():
        rs = sorted(a / b for a, b in zip(v, samples[baseline_of(n)]))
        q = statistics.quantiles(rs, n=4, method="inclusive") if len(rs) > 1 else rs * 3
        out[n] = [round(x, 4) for x in q]
    return out


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): recorded beside every timing."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None
