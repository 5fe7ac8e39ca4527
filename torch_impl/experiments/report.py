"""A grid's ``results.md`` (per-row statistics beside the paper) and ``curves.png``.

Per row: n seeds, mean and standard deviation of the final validation top-1 error, its 95 %
t-interval, the paired difference to the grid's baseline row over the seeds both have (with its
interval and what the interval supports: ``stats.verdict``), the paper's number and the paper's
difference to the same baseline, and the least-squares slope of the seed-mean validation error over
the last epochs. The slope describes the curve's end; it is no test of convergence: a schedule that
decays to zero flattens every curve at its end (the budget study, ``budget.py``, measures convergence).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from .grids import MAIN_CONTRASTS, MAIN_ROWS, Grid, get_grid
from .stats import (
    EFFECT_OF_INTEREST,
    EQUIVALENCE_MARGIN,
    SEED_CAP,
    Summary,
    comparisons_words,
    interval_plan,
    multiple_comparisons,
    paired_difference,
    slope,
    summarize,
    verdict,
)
from .store import LAST_EPOCHS


def _by_row(records: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        out[r["row_key"]][int(r["seed"])] = r
    return out


def epoch_values(runs: list[dict[str, Any]], key: str = "val_top1_err") -> tuple[list[int], list[list[float]]]:
    """The epochs at which every run measured ``key`` (validation: every ``eval_every``-th epoch and the
    last), and at each the runs' values."""
    by_epoch = [{int(row["epoch"]): row[key] for row in r["history"] if key in row} for r in runs]
    epochs = sorted(set.intersection(*(set(values) for values in by_epoch)))
    return epochs, [[values[e] for values in by_epoch] for e in epochs]


def mean_curve(runs: list[dict[str, Any]], key: str = "val_top1_err") -> tuple[list[int], list[float]]:
    """The seed-mean of ``key`` at each epoch that every run measured: (epochs, means)."""
    epochs, values = epoch_values(runs, key)
    return epochs, [sum(v) / len(v) for v in values]


def final_errors(runs: dict[int, dict[str, Any]]) -> dict[int, float]:
    """``{seed: final validation top-1 error}`` of one row's records."""
    return {s: float(r["final_val_top1_err"]) for s, r in runs.items()}


def row_statistics(grid: Grid, data: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per grid row with records: summaries, paired difference to the baseline, final slope."""
    by_row = _by_row(data["records"])
    base = final_errors(by_row.get(grid.baseline, {}))
    out = []
    for row in grid.rows:
        runs = by_row.get(row.key)
        if not runs:
            continue
        errs = final_errors(runs)
        epochs, curve = mean_curve(list(runs.values()))
        paper = {p["table"]: p["value"] for p in row.paper_numbers}
        base_row = grid.row(grid.baseline)
        paper_base = {p["table"]: p["value"] for p in base_row.paper_numbers}
        out.append({
            "key": row.key, "symbol": row.symbol, "label": row.label, "seeds": sorted(runs),
            "top1": summarize(list(errs.values())),
            "top5": summarize([r["final_val_top5_err"] for r in runs.values()]),
            "best_top1": summarize([r["best_val_top1_err"] for r in runs.values()]),
            "paired": None if row.key == grid.baseline else paired_difference(errs, base),
            "paper": paper,
            "paper_diff": {t: v - paper_base[t] for t, v in paper.items() if t in paper_base},
            "final_slope": slope(curve[-LAST_EPOCHS:], epochs[-LAST_EPOCHS:]),
            "last_change": curve[-1] - curve[-2] if len(curve) > 1 else math.nan,
            "epochs": max(int(r["epochs"]) for r in runs.values()),
            "wall_time_s": sum(r["wall_time_s"] for r in runs.values()) / len(runs),
        })  # fmt: skip
    return out


def main_contrasts(grid: Grid, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``MAIN_CONTRASTS`` whose two rows have records in this grid: the paired difference ("diff"), and
    what its spread asks of the seeds (``stats.interval_plan``)."""
    by_row = _by_row(data["records"])
    out = []
    for a, b in MAIN_CONTRASTS:
        if a in by_row and b in by_row and {a, b} <= {r.key for r in grid.rows}:
            d = paired_difference(final_errors(by_row[a]), final_errors(by_row[b]))
            if d is not None:
                out.append({"key": f"{a}-{b}", "name": f"{MAIN_ROWS[a]} − {MAIN_ROWS[b]}", "diff": d,
                            **interval_plan(d)})
    return out


def _network(runs: dict[int, dict[str, Any]]) -> str:
    """What a row's records trained, whatever grid or row name they carry."""
    r = next(iter(runs.values()))
    return r["model"] + json.dumps(r["model_kwargs"], sort_keys=True)


def grid_tests(grid: Grid, data: dict[str, Any]) -> dict[frozenset[str], tuple[str, Summary]]:
    """The grid's paired intervals, (name, difference): each row against the baseline, and the main contrasts
    that are not among those. Keyed by the two networks compared, so that a pair two grids share counts once."""
    by_row = _by_row(data["records"])
    base = grid.row(grid.baseline).symbol
    tests = {frozenset((_network(by_row[s["key"]]), _network(by_row[grid.baseline]))): (f"{s['symbol']} − {base}",
                                                                                          s["paired"])
             for s in row_statistics(grid, data) if s["paired"] is not None}  # fmt: skip
    for c in main_contrasts(grid, data):
        a, b = c["key"].split("-")
        tests.setdefault(frozenset((_network(by_row[a]), _network(by_row[b]))), (c["name"], c["diff"]))
    return tests


def grid_comparisons(grid: Grid, data: dict[str, Any]) -> dict[str, Any]:
    """``stats.multiple_comparisons`` over the grid's intervals (``grid_tests``)."""
    return multiple_comparisons(dict(grid_tests(grid, data).values()))


def _plan_cells(c: dict[str, Any]) -> str:
    """'seeds for ±margin | power' cells of a main contrast."""
    need = c["seeds_for_margin"]
    if need is None:
        return " | "
    seeds = str(need) if need <= SEED_CAP else f"{need} (±{c['half_width_at_cap']:.2f} at {SEED_CAP})"
    return f"{seeds} | " + ("" if c["power"] is None else f"{c['power']:.2f}")


def _ci(s: Summary | None, digits: int = 2, baseline: str = "(baseline)") -> str:
    """A paired difference with its interval, signed; ``baseline`` for the baseline row itself."""
    if s is None:
        return baseline
    if math.isnan(s.half_width):
        return f"{s.mean:+.{digits}f} (1 seed)"
    return f"{s.mean:+.{digits}f} [{s.low:+.{digits}f}, {s.high:+.{digits}f}]"


def render_markdown(grid: Grid, data: dict[str, Any], curves_name: str = "curves.png") -> str:
    stats = row_statistics(grid, data)
    budget = data["budget"]
    base = grid.row(grid.baseline)
    lines = [
        f"# {grid.title}",
        "",
        f"Grid `{grid.name}`, budget `{data['budget_id']}`: {budget.get('backbone')} family on "
        f"{budget.get('dataset')} ({budget.get('image_size')} px, {budget.get('train_samples')} training / "
        f"{budget.get('val_samples')} validation images), {budget.get('epochs')} epochs, batch "
        f"{budget.get('batch_size')}, {budget.get('optimizer')} lr {budget.get('lr')} ({budget.get('lr_schedule')}). "
        f"Errors in % on the validation split, final epoch; 95 % intervals from Student's t over seeds. "
        f"Paired difference: row minus baseline (`{base.symbol}`) seed by seed (same seed: same data order).",
        "",
        "| paper row | ours | seeds | top-1 err mean ± std | 95 % CI | Δ vs baseline [95 % CI] | verdict "
        "| paper | paper Δ | top-5 err | slope, last 3 epochs (pp/epoch) | last epoch's change (pp) | s / run |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stats:
        t1 = s["top1"]
        ci = "" if math.isnan(t1.half_width) else f"[{t1.low:.2f}, {t1.high:.2f}]"
        std = "" if math.isnan(t1.std) else f" ± {t1.std:.2f}"
        paper = " / ".join(f"{v:.2f} (T{t})" for t, v in s["paper"].items())
        pdiff = " / ".join(f"{v:+.2f}" for v in s["paper_diff"].values()) if s["key"] != grid.baseline else "(baseline)"
        lines.append(
            f"| {s['label']} | {s['symbol']} | {t1.n} | {t1.mean:.2f}{std} | {ci} | {_ci(s['paired'])} | "
            f"{verdict(s['paired'])} | {paper} | {pdiff} | {s['top5'].mean:.2f} | {s['final_slope']:+.2f} | "
            f"{s['last_change']:+.2f} | {s['wall_time_s']:.0f} |"
        )
    n_runs = len(data["records"])
    lines += [
        "",
        f"{n_runs} runs. Paper numbers: ImageNet top-1 error (ImageNet tables) or CIFAR-100 test error (T2, T4); "
        "they are beside ours for the *direction and size of the differences*, not the level (our task is a "
        "different, easier data set at a much smaller budget).",
        "",
        f"Verdict: 'lower error' / 'higher error' when the paired interval excludes 0, 'equivalent within "
        f"±{EQUIVALENCE_MARGIN}' when it lies inside ±{EQUIVALENCE_MARGIN} points, else 'inconclusive'.",
    ]
    contrasts = main_contrasts(grid, data)
    if contrasts:
        lines += [
            "",
            f"**The main contrasts** (row minus row, paired by seed). Seeds for ±{EQUIVALENCE_MARGIN}: the seeds a "
            f"95 % interval of ±{EQUIVALENCE_MARGIN} points needs at the spread of these paired differences; where "
            f"that is more than {SEED_CAP}, the most these grids run, the half-width {SEED_CAP} seeds reach. Power: "
            f"the chance that an interval over these seeds excludes 0 if the true difference is "
            f"{EFFECT_OF_INTEREST:g} point. Both rest on the spread these seeds measured.",
            "",
            f"| contrast | seeds | Δ, pp [95 % CI] | verdict | seeds for ±{EQUIVALENCE_MARGIN} | "
            f"power for {EFFECT_OF_INTEREST:g} pp |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for c in contrasts:
            lines.append(f"| {c['name']} | {c['diff'].n} | {_ci(c['diff'])} | {verdict(c['diff'])} | "
                         f"{_plan_cells(c)} |")
    mc = grid_comparisons(grid, data)
    if mc["intervals"]:
        lines += ["", "Multiple comparisons: " + comparisons_words(mc)]
    lines += [
        "",
        f"Slope: of the seed-mean validation top-1 error over the last {LAST_EPOCHS} epochs, least squares. It "
        "describes the end of the curve and tests nothing: the cosine schedule decays the learning rate to zero, so "
        "every curve ends flat, converged or not. Last epoch's change: seed-mean error of the last epoch minus the one "
        "before. s / run: mean wall time of a run (train + validation, one thread, beside the grid's other runs on one "
        "machine: see the records' `machine`).",
        "",
        f"![validation error per epoch]({curves_name})",
        "",
    ]
    return "\n".join(lines)


# The grids the summary shows, with the paper tables each stands for (table2 trains the same five
# networks as table1 on shapes, so it would repeat table1's rows).
SUMMARY_GRIDS = (("table1", "1, 2"), ("table3_4", "3, 4"), ("table5", "5"), ("table6", "6"))
SUMMARY_FILE = "summary.md"


def committed_grids(out: Path) -> list[tuple[str, Grid, dict[str, Any]]]:
    """``(tables, grid, results)`` of the summary's grids that have a results file in ``out``."""
    found = []
    for name, tables in SUMMARY_GRIDS:
        path = Path(out) / name / "results.json"
        if path.exists():
            found.append((tables, get_grid(name), json.loads(path.read_text())))
    return found


def grids_comparisons(grids: list[tuple[str, Grid, dict[str, Any]]]) -> dict[str, Any]:
    """``stats.multiple_comparisons`` over the intervals of several grids, ``(tables, grid, results)`` each (see
    ``grid_tests``): a pair of networks two grids compare counts once, under the first grid's name."""
    tests: dict[frozenset[str], tuple[str, Summary]] = {}
    for tables, grid, data in grids:
        for pair, (name, d) in grid_tests(grid, data).items():
            tests.setdefault(pair, (f"{name} (Table {tables})", d))
    return multiple_comparisons(dict(tests.values()))


def summary_table(out: Path) -> str:
    """One markdown table over the grids' committed results in ``out``: per row the seeds, the mean
    final top-1 error with its 95 % interval, the paired difference to the grid's baseline with its
    interval and verdict, and the final slope. README shows it verbatim (a test holds them equal)."""
    lines = ["| paper table | row | seeds | top-1 error, % [95 % CI] | Δ vs baseline, pp [95 % CI] | verdict | "
             "slope, last 3 epochs (pp/epoch) |", "|---|---|---:|---:|---:|---|---:|"]
    grids = committed_grids(out)
    for tables, grid, data in grids:
        for s in row_statistics(grid, data):
            t1 = s["top1"]
            ci = "" if math.isnan(t1.half_width) else f" [{t1.low:.1f}, {t1.high:.1f}]"
            diff = _ci(s["paired"], digits=1, baseline=f"baseline of Table {tables}")
            lines.append(f"| {tables} | {s['symbol']} | {t1.n} | {t1.mean:.1f}{ci} | {diff} | "
                         f"{verdict(s['paired'])} | {s['final_slope']:+.2f} |")
    mc = grids_comparisons(grids)
    if mc["intervals"]:
        lines += ["", "Multiple comparisons over these grids, with the main contrasts of their results pages (a pair "
                  "of networks two grids compare counts once): " + comparisons_words(mc)]  # fmt: skip
    return "\n".join(lines) + "\n"


def math_label(symbol: str) -> str:
    """The paper's symbols in matplotlib's math text: ``M_c^{r+s}`` -> ``$M_c^{r+s}$``."""
    return re.sub(r"(M_\w\^(?:\{[^}]*\}|\w))", r"$\1$", symbol)


def plot_grid(grid: Grid, data: dict[str, Any], path: Path, chance: float | None = None) -> None:
    """Seed-mean validation top-1 error per epoch for each row, with the min-max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_row = _by_row(data["records"])
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in grid.rows:
        runs = list(by_row.get(row.key, {}).values())
        if not runs:
            continue
        epochs, values = epoch_values(runs)
        mean, low, high = [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]
        label = f"{math_label(row.symbol)} (n={len(runs)})"
        for a in (ax, zoom):
            (line,) = a.plot(epochs, mean, marker="o", ms=3, label=label)
            a.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance ({chance:.1f} %)")
    for a in (ax, zoom):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax.set_ylabel("validation top-1 error (%)")
    ax.set_title("all epochs (band: min-max over seeds)")
    last = max((int(r["epochs"]) for r in data["records"]), default=1)
    zoom.set_xlim(max(1, last // 2) - 0.2, last + 0.2)
    finals = [row["val_top1_err"] for r in data["records"] for row in r["history"]
              if "val_top1_err" in row and row["epoch"] >= last // 2]  # fmt: skip
    if finals:
        zoom.set_ylim(min(finals) - 0.5, max(finals) + 0.5)
    zoom.set_title("second half (zoom)")
    ax.legend(fontsize=7)
    budget = data.get("budget", {})
    fig.suptitle(f"the rows of {grid.title}\ntrained here: {budget.get('backbone', '?')} family on {budget.get('dataset', '?')} "
                 f"({budget.get('image_size', '?')} px), {budget.get('epochs', '?')} epochs", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
