"""Statistics over seeds: mean, standard deviation, t-intervals and paired differences.

With n seeds of a row, the 95 % confidence interval of its mean error is
``mean +- t_{0.975, n-1} * s / sqrt(n)`` (Student's t; ``s`` the sample standard deviation, ddof = 1).
Two rows trained with the same seeds see the same data in the same order (the seed drives the
sampler) and start from the same random stream, so their difference is paired: the interval of the
mean of the per-seed differences ``d_i = e_row(i) - e_baseline(i)`` removes the seed-to-seed
variation the two rows share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Summary:
    """``n`` values: mean, sample standard deviation and the half-width of the ``level`` t-interval."""

    n: int
    mean: float
    std: float  # NaN for n < 2
    half_width: float  # NaN for n < 2
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci_low": self.low, "ci_high": self.high}


def t_quantile(level: float, dof: int) -> float:
    """The two-sided ``level`` quantile of Student's t with ``dof`` degrees of freedom (12.706 for 95 %, 1)."""
    if not 0 < level < 1 or dof < 1:
        raise ValueError(f"need 0 < level < 1 and dof >= 1, got {level}, {dof}")
    return float(_scipy_stats.t.ppf(0.5 + level / 2, dof))


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, standard deviation (ddof = 1) and t-interval of ``values``."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = sum(values) / n
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, level)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(n, mean, std, t_quantile(level, n - 1) * std / math.sqrt(n), level)


def paired_difference(row: Mapping[int, float], baseline: Mapping[int, float], level: float = 0.95) -> Summary | None:
    """Summary of ``row[s] - baseline[s]`` over the seeds ``s`` both have; None when they share none."""
    seeds = sorted(set(row) & set(baseline))
    if not seeds:
        return None
    return summarize([row[s] - baseline[s] for s in seeds], level)


def slope(ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against 1, 2, ..., len(ys) (units of ys per step); 0 for one value."""
    n = len(ys)
    if n < 2:
        return 0.0
    x_mean = (n + 1) / 2
    y_mean = sum(ys) / n
    num = sum((i + 1 - x_mean) * (y - y_mean) for i, y in enumerate(ys))
    den = sum((i + 1 - x_mean) ** 2 for i in range(n))
    return num / den
