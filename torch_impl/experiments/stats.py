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

import numpy as np
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
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("summarize: no values")
    if x.size < 2:
        return Summary(1, float(x[0]), math.nan, math.nan, level)
    std = float(x.std(ddof=1))
    return Summary(int(x.size), float(x.mean()), std, t_quantile(level, x.size - 1) * std / math.sqrt(x.size), level)


def paired_difference(row: Mapping[int, float], baseline: Mapping[int, float], level: float = 0.95) -> Summary | None:
    """Summary of ``row[s] - baseline[s]`` over the seeds ``s`` both have; None when they share none."""
    seeds = sorted(set(row) & set(baseline))
    if not seeds:
        return None
    return summarize([row[s] - baseline[s] for s in seeds], level)


def slope(ys: Sequence[float], xs: Sequence[float] | None = None) -> float:
    """Least-squares slope of ``ys`` against ``xs`` (default 1, 2, ..., len(ys)), in units of ys per unit of
    xs; 0 for one value."""
    if len(ys) < 2:
        return 0.0
    xs = np.arange(1, len(ys) + 1) if xs is None else np.asarray(xs, dtype=float)
    return float(_scipy_stats.linregress(xs, np.asarray(ys, dtype=float)).slope)


# ----------------------------------------------------------------------------- verdicts and power

EQUIVALENCE_MARGIN = 0.5  # percentage points: "equivalent" needs the whole interval inside +-this
SEED_CAP = 24  # the most paired seeds the powered grids run per row; beyond it they report the interval reached
EFFECT_OF_INTEREST = 1.0  # percentage points: the size of difference the grids should be able to see (power)


def verdict(s: Summary | None, margin: float = EQUIVALENCE_MARGIN) -> str:
    """What a paired difference's interval supports, and nothing more:

    - "lower error" / "higher error": the interval excludes 0;
    - "equivalent within ±margin": the interval lies inside (-margin, +margin);
    - "inconclusive": everything else (too few seeds, or an interval that spans 0 and a margin);
    - "" where there is no interval (no partner seeds, or one).
    """
    if s is None or math.isnan(s.half_width):
        return ""
    if s.high < 0:
        return "lower error"
    if s.low > 0:
        return "higher error"
    if -margin < s.low and s.high < margin:
        return f"equivalent within ±{margin:g}"
    return "inconclusive"


def seeds_for_half_width(std: float, half_width: float, level: float = 0.95, cap: int = 1000) -> int:
    """The fewest paired seeds n whose ``level`` t-interval, ``t * std / sqrt(n)``, is at most ``half_width``
    when the paired differences have standard deviation ``std`` (at least 2; ``cap`` when none up to it is)."""
    n = np.arange(2, cap + 1)
    ok = _scipy_stats.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n) <= half_width
    return int(n[ok][0]) if ok.any() else cap


def power(effect: float, std: float, n: int, level: float = 0.95) -> float:
    """The chance that a two-sided paired t-test over ``n`` seeds at ``1 - level`` excludes zero when the
    true mean difference is ``effect`` and the differences' standard deviation is ``std`` (noncentral t)."""
    if n < 2 or std <= 0:
        raise ValueError(f"power: need n >= 2 and std > 0, got n={n}, std={std}")
    dof = n - 1
    t = t_quantile(level, dof)
    shift = abs(effect) / (std / math.sqrt(n))
    return float(_scipy_stats.nct.sf(t, dof, shift) + _scipy_stats.nct.cdf(-t, dof, shift))


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction: which of the hypotheses are rejected at family-wise level ``alpha``."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    passes = p[order] <= alpha / (len(p) - np.arange(len(p)))
    k = len(p) if passes.all() else int(np.argmin(passes))  # the first failure stops the steps down
    rejected = np.zeros(len(p), dtype=bool)
    rejected[order[:k]] = True
    return rejected.tolist()


def paired_p_value(s: Summary) -> float:
    """Two-sided p-value of the paired t-test behind ``s`` (mean difference against 0)."""
    if s.n < 2 or math.isnan(s.std):
        return math.nan
    if s.std == 0:
        return 0.0 if s.mean else 1.0
    t = s.mean / (s.std / math.sqrt(s.n))
    return float(2 * _scipy_stats.t.sf(abs(t), s.n - 1))


def interval_plan(d: Summary, margin: float = EQUIVALENCE_MARGIN, cap: int = SEED_CAP,
                  effect: float = EFFECT_OF_INTEREST) -> dict[str, float | int | None]:
    """What the spread of a paired difference ``d`` asks of the seeds: ``seeds_for_margin``, the seeds a
    ±``margin`` interval needs; ``half_width_at_cap``, the half-width ``cap`` seeds reach; ``power``, the
    chance that ``d.n`` seeds exclude 0 when the true difference is ``effect``. None where ``d`` measured no
    spread (one seed); with a spread of 0, any two seeds give an interval of width 0, and power is undefined."""
    if d.n < 2 or math.isnan(d.std):
        return {"seeds_for_margin": None, "half_width_at_cap": None, "power": None}
    return {"seeds_for_margin": seeds_for_half_width(d.std, margin),
            "half_width_at_cap": t_quantile(0.95, cap - 1) * d.std / math.sqrt(cap),
            "power": power(effect, d.std, d.n) if d.std > 0 else None}


def multiple_comparisons(tests: Mapping[str, Summary | None], alpha: float = 0.05) -> dict[str, object]:
    """Over named paired differences with an interval: how many intervals exclude 0, how many would by
    chance alone if nothing differed (``alpha`` each), and which survive Holm's correction at family-wise
    ``alpha``."""
    kept = {k: s for k, s in tests.items() if s is not None and not math.isnan(paired_p_value(s))}
    survive = holm([paired_p_value(s) for s in kept.values()], alpha) if kept else []
    excluding = sum(verdict(s) in ("lower error", "higher error") for s in kept.values())
    return {"intervals": len(kept), "exclude_zero": excluding, "expected_by_chance": alpha * len(kept),
            "holm": [k for k, keep in zip(kept, survive) if keep]}


def comparisons_words(mc: Mapping[str, object], intervals: str = "intervals") -> str:
    """``multiple_comparisons`` in one sentence: the intervals excluding 0 against chance, and Holm's survivors."""
    holm_kept = ", ".join(mc["holm"]) if mc["holm"] else "none excludes 0"
    verb = "excludes" if mc["exclude_zero"] == 1 else "exclude"
    return (f"of the {mc['intervals']} {intervals}, {mc['exclude_zero']} {verb} 0, where about "
            f"{mc['expected_by_chance']:.1f} would by chance alone if no row differed; after Holm's correction "
            f"(family-wise 5 %): {holm_kept}.")
