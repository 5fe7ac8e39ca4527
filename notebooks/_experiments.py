"""The committed experiment results as tables and figures, for notebooks 4, 5 and 8.

``python -m torch_impl.experiments`` trains the paper's ablation grids and writes, per grid,
``docs/results/experiments/<grid>/results.json`` (one record per run). The statistics are the
runner's own (``torch_impl.experiments.report.row_statistics``: mean, t-interval over seeds, paired
difference to the grid's baseline over the seeds both rows have); this module only turns them into
pandas tables and matplotlib figures, in the paper's row order and with the paper's symbols.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from torch_impl.data import SHAPE_CLASSES
from torch_impl.experiments.grids import Grid, get_grid
from torch_impl.experiments.report import epoch_values, row_statistics
from torch_impl.experiments.stats import EQUIVALENCE_MARGIN, summarize, verdict  # noqa: F401 (verdict: for the notebooks)

# Seeds per row the grids are meant to have: at least 3 for every variant, 8 for plain, SE and 3D-AFF.
TARGET_SEEDS = {"resnet": 8, "se": 8, "aff3d": 8}
MIN_SEEDS = 3
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "experiments"


def load(grid: str, results_dir: str | Path = RESULTS) -> tuple[Grid, dict]:
    """A grid's definition and its ``results.json``; a clear error when the file is not there."""
    path = Path(results_dir) / grid / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m torch_impl.experiments {grid}` first")
    data = json.loads(path.read_text())
    if data.get("grid") != grid:
        raise ValueError(f"{path} holds grid {data.get('grid')!r}, not {grid!r}")
    return get_grid(grid), data


def chance_error(data: dict) -> float:
    """Top-1 error of guessing, in percent: 1 - 1/classes for the budget's number of classes."""
    classes = data["budget"].get("num_classes") or len(SHAPE_CLASSES)
    return 100.0 * (1.0 - 1.0 / classes)


def math_label(symbol: str) -> str:
    """A row symbol in matplotlib's math text: "M_c^r + M_s^{r+s} (3D-AFF)" -> "$M_c^r + M_s^{r+s}$ (3D-AFF)"."""
    term = r"M_[a-z{}]+\^(\{[^}]*\}|\w+)"  # M_c^r, M_s^{r+s}, ...
    text = re.sub(rf"{term}(\s*\+\s*{term})*", lambda m: f"${m.group(0)}$", symbol)
    return re.sub(r"^k = ", "$k$ = ", text.replace("F_ex", "$F_{ex}$"))


def summary(grid: Grid, data: dict) -> pd.DataFrame:
    """One line per row of the grid, in the paper's order: our mean and interval, paired difference, the paper's.

    A row without a finished run is listed with 0 seeds and no numbers."""
    stats = {s["key"]: s for s in row_statistics(grid, data)}
    base_paper = {p["table"]: p["value"] for p in grid.row(grid.baseline).paper_numbers}
    lines = []
    for row in grid.rows:
        line = {"row": row.symbol, "paper row": row.label, "seeds": 0}
        s = stats.get(row.key)
        if s is None:
            line["reading"] = "no finished run"
        else:
            top1, paired = s["top1"], s["paired"]
            line |= {"seeds": top1.n, "top-1 err (%)": top1.mean, "std": top1.std, "95% CI low": top1.low,
                     "95% CI high": top1.high, "top-5 err (%)": s["top5"].mean}
            if row.key == grid.baseline:
                line |= {"diff. to baseline": 0.0, "reading": "baseline"}
            elif paired is None:
                line["reading"] = "no seed shared with the baseline"
            else:
                line |= {"paired seeds": paired.n, "diff. to baseline": paired.mean, "diff. CI low": paired.low,
                         "diff. CI high": paired.high,
                         "reading": verdict(paired) if paired.n > 1 else "1 paired seed: no interval"}
            line |= {"final slope (pts/epoch)": s["final_slope"], "epochs": s["epochs"]}
        for p in row.paper_numbers:
            line[f"paper T{p['table']} (%)"] = p["value"]
            line[f"paper T{p['table']} diff."] = p["value"] - base_paper.get(p["table"], np.nan)
        lines.append(line)
    columns = ["seeds", "top-1 err (%)", "std", "95% CI low", "95% CI high", "top-5 err (%)", "paired seeds",
               "diff. to baseline", "diff. CI low", "diff. CI high", "reading", "final slope (pts/epoch)", "epochs"]
    table = pd.DataFrame(lines).set_index("row")
    paper = [c for c in table.columns if c.startswith("paper T")]
    return table.reindex(columns=["paper row"] + columns + paper)


def seeds_per_row(grid: Grid, data: dict) -> dict[str, list[int]]:
    """The seeds each row of the grid has a record for (an empty list for a row not trained yet)."""
    seeds = {row.key: [] for row in grid.rows}
    for r in data["records"]:
        seeds.setdefault(r["row_key"], []).append(int(r["seed"]))
    return {k: sorted(v) for k, v in seeds.items()}


def completeness(grid: Grid, data: dict) -> list[str]:
    """A line per row that has fewer seeds than the target (empty when the grid is complete)."""
    missing = []
    for key, seeds in seeds_per_row(grid, data).items():
        target = TARGET_SEEDS.get(key, MIN_SEEDS)
        if len(seeds) < target:
            missing.append(f"{grid.name}: {grid.row(key).symbol} has {len(seeds)} of {target} seeds")
    return missing


def curves(grid: Grid, data: dict, keys=None, metric: str = "val_top1_err") -> dict[str, pd.DataFrame]:
    """Per row (by symbol): epoch, seed-mean of ``metric`` and its 95 % t-interval over the seeds."""
    out = {}
    for row in grid.rows:
        runs = [r for r in data["records"] if r["row_key"] == row.key]
        if not runs or (keys is not None and row.key not in keys):
            continue
        epochs, values = epoch_values(runs, metric)  # the epochs every seed measured
        per_epoch = [summarize(v) for v in values]
        out[row.symbol] = pd.DataFrame({
            "epoch": epochs,
            "mean": [p.mean for p in per_epoch], "low": [p.low for p in per_epoch], "high": [p.high for p in per_epoch],
            "seeds": len(runs),
        })
    return out


def plot_curves(ax, grid: Grid, data: dict, keys=None, metric: str = "val_top1_err", inset_from: int | None = None):
    """Seed-mean curves with their 95 % bands, integer epochs, the chance line; returns the curves."""
    cs = curves(grid, data, keys, metric)
    for symbol, c in cs.items():
        n = int(c.seeds.iloc[0])
        line, = ax.plot(c.epoch, c["mean"], marker="o", ms=3, label=f"{math_label(symbol)} ({n} seed{'s' * (n != 1)})")
        ax.fill_between(c.epoch, c["low"], c["high"], color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(chance_error(data), color="grey", ls=":", lw=1, label=f"chance ({chance_error(data):.1f} %)")
    epochs = sorted({e for c in cs.values() for e in c.epoch})
    ax.set_xticks(epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 error (%)" if metric == "val_top1_err" else metric)
    ax.grid(alpha=0.3)
    return cs


def plot_differences(ax, table: pd.DataFrame, paper_table: int | None = None, title: str = ""):
    """Paired differences to the baseline with their 95 % intervals (ours), the paper's differences beside.

    Rows top to bottom in the paper's order; the baseline row sits at 0 without an interval."""
    rows = list(table.index)
    y = np.arange(len(rows))[::-1]
    diff = table["diff. to baseline"].to_numpy()
    low, high = table["diff. CI low"].to_numpy(), table["diff. CI high"].to_numpy()
    err = np.vstack([diff - low, high - diff])
    ax.errorbar(diff, y, xerr=np.nan_to_num(err), fmt="o", color="tab:blue", capsize=3, ms=5,
                label="ours: mean paired difference, 95 % CI")
    if paper_table is not None and f"paper T{paper_table} diff." in table:
        ax.plot(table[f"paper T{paper_table} diff."], y, "s", color="tab:red", ms=5, mfc="none",
                label=f"paper, Table {paper_table} (one run each)")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [math_label(r) for r in rows])
    ax.set_xlabel("top-1 error minus the baseline's (points)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="best")


# ----------------------------------------------------------------------------- detection (notebooks 7 and 8)

def detection_dir() -> Path:
    """The detection comparison's results folder at the adopted schedule (``compare``'s default ``--out``)."""
    from detectron2_ext.compare.configs import default_out

    return RESULTS.parents[2] / default_out("faster_rcnn")


def load_detection(results_dir: str | Path | None = None) -> dict:
    """``python -m detectron2_ext.compare``'s ``results.json`` (default: the adopted schedule's); a clear
    error when it is not there."""
    path = Path(results_dir or detection_dir()) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m detectron2_ext.compare --jobs 2` first")
    return json.loads(path.read_text())


def detection_table(data: dict, task: str = "box") -> pd.DataFrame:
    """Tables 8 (``task="box"``) and 9 (``"mask"``) in miniature: per detector and backbone the mean AP
    columns over seeds (the seeds' range in brackets), the paired AP50 differences to ResNet-50 and to SE
    with their 95 % t-intervals (``†``: from 2 seeds, 1 degree of freedom, an interval that says little), and
    the paper's COCO numbers beside (labelled: another data set and budget)."""
    from detectron2_ext.compare.configs import BACKBONES, DETECTORS
    from detectron2_ext.compare.report import (BASELINE, BOX_COLUMNS, MASK_COLUMNS, SECOND_BASELINE, format_difference,
                                               paper_ap, statistics)
    from torch_impl.zoo.paper import TABLE8, TABLE9

    columns, table = (BOX_COLUMNS, TABLE8) if task == "box" else (MASK_COLUMNS, TABLE9)
    stats = {(s["detector"], s["backbone"], c): s for c in columns for s in statistics(data, task, c)}
    rows = []
    for detector, backbone in dict.fromkeys((d, b) for d, b, _ in stats):
        row = {"detector": DETECTORS[detector], "backbone": BACKBONES[backbone][0]}
        for c in columns:
            s = stats.get((detector, backbone, c))
            row[c] = np.nan if s is None else s["summary"].mean
            if c == "AP50" and s is not None:
                row[f"{c} seeds"] = ", ".join(f"{s['values'][k]:.1f}" for k in sorted(s["values"]))
        d = stats[(detector, backbone, "AP50")]["difference"]
        row["seeds"] = stats[(detector, backbone, "AP50")]["summary"].n
        row["AP50 − R50 [95 % CI]"] = format_difference(d, "baseline" if backbone == BASELINE else "–")
        se = stats[(detector, backbone, "AP50")]["difference_se"]
        row["AP50 − SE [95 % CI]"] = format_difference(se, "baseline" if backbone == SECOND_BASELINE else "–")
        coco = paper_ap(table, DETECTORS[detector], BACKBONES[backbone][0])
        row.update({f"COCO {c} (paper)": coco.get(c, np.nan) for c in ("AP", "AP50")})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["detector", "backbone"]).round(1)


def budget_study(results_dir: str | Path = RESULTS, folder: str = "budget") -> dict:
    """A budget study's analysis (``python -m torch_impl.experiments.budget --out <results_dir>/<folder>``
    writes it): ``budget`` the H200 study, ``budget_cpu`` the CPU one, ``trials/budget_train24k`` the CPU study of
    24,000 training images."""
    path = Path(results_dir) / folder / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m torch_impl.experiments.budget` first")
    return json.loads(path.read_text())


def halving_phrase(halving: dict) -> str:
    """``budget.halving_words`` as a phrase: 'converged', 'not converged: still falling', 'in progress, ...'."""
    from torch_impl.experiments.budget import halving_words

    words = halving_words(halving)
    named = {"yes": "converged", "in progress": "in progress, not decided"}
    return named.get(words, words.replace("no:", "not converged:", 1))


def budget_lines(study: dict) -> list[str]:
    """What a budget study found, in words: the converged budget, the design, each halving, the contrasts at each
    budget, how many of them exclude 0 against chance, and, for a study with a twin on another device, whether the two
    agree."""
    from torch_impl.experiments.budget import converged_words, interval_text

    def ci(d: dict) -> str:
        return f"{interval_text(d).removesuffix(' (1 seed)')} (n={d['n']})"

    lines = [f"{study['machine']}; converged budget: {converged_words(study)}"]
    if study.get("design"):
        lines.append(f"  design: {study['design']}")
    for epochs, b in study["budgets"].items():
        h = b["halving"]
        if h:
            so_far = h["converged"] is None  # a cell in progress: the seeds finished so far
            lines.append(f"  {h['from_epochs']} -> {epochs} epochs: "
                         + ("change over the seeds finished so far " if so_far else "every row's change ")
                         + ", ".join(f"{k} {c['mean']:+.2f}" + (f" (n={c['n']})" if so_far else "")
                                     for k, c in h["change"].items())
                         + f" points: {halving_phrase(h)}")
    for epochs, b in study["budgets"].items():
        lines.append(f"  at {epochs} epochs{'' if b['complete'] else ' (in progress)'}: " + "; ".join(f"{c} {ci(d)} {d.get('verdict', '')}".rstrip()
                                                          for c, d in b["contrasts"].items() if "n" in d))
    mc = study["multiple_comparisons"]
    lines.append(f"  multiple comparisons: {mc['exclude_zero']} of the {mc['intervals']} intervals of complete cells "
                 f"exclude 0 (about {mc['expected_by_chance']:.1f} would by chance alone); after Holm's correction: "
                 + (", ".join(mc["holm"]) or "none"))
    for epochs, t in (study.get("twin") or {}).get("budgets", {}).items():
        lines.append(f"  twin at {epochs} epochs, this study minus {study['twin']['machine'].removeprefix('trained on ')}: "
                     + "; ".join(f"{k} {ci(d)} {d['verdict']}" for k, d in t["rows"].items())
                     + (" -> they agree" if t["agree"] else " -> agreement not shown: not pooled"))
    return lines


def budget_table(study: dict) -> pd.DataFrame:
    """Epochs by row: seeds, mean final error and its 95 % interval; then each row's change from the half budget."""
    from torch_impl.experiments.budget import ROWS

    lines = []
    for epochs, b in study["budgets"].items():
        line = {"epochs": int(epochs), "cell": "complete" if b["complete"] else "in progress"}
        for key, name in ROWS:
            r = b["rows"].get(key)
            if r:
                line[f"{name} error (%)"] = f"{r['mean']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] (n={r['n']})"
            h = (b["halving"] or {}).get("change", {}).get(key)
            if h:
                line[f"{name} change from E/2"] = f"{h['mean']:+.2f} [{h['ci_low']:+.2f}, {h['ci_high']:+.2f}]"
        lines.append(line)
    return pd.DataFrame(lines).set_index("epochs").fillna("")


def design_table(results_dir: str | Path = RESULTS) -> pd.DataFrame:
    """The benchmark designs side by side (``python -m torch_impl.experiments.designs`` writes
    ``trials/designs.json``): per complete cell, the errors, the widest spread of the three contrasts' paired
    differences, the seeds a ±0.5-point interval needs at it, one seed's run time and their product."""
    from torch_impl.experiments.budget import ROWS

    path = Path(results_dir) / "trials" / "designs.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m torch_impl.experiments.designs` first")
    lines = []
    for c in json.loads(path.read_text())["cells"]:
        line = {"training images": c["design"]["train_samples"], "epochs": c["epochs"], "images seen": c["images_seen"]}
        line |= {f"{name} error (%)": round(c["errors"][key], 2) for key, name in ROWS}
        line |= {"widest spread": round(max(c["spread"].values()), 2), "seeds for ±0.5": c["seeds_for_margin"],
                 "s per seed": round(c["seconds_per_seed"]), "CPU-h for ±0.5": round(c["hours_for_margin"], 1),
                 "halving": c["halving"]}  # fmt: skip
        lines.append(line)
    return pd.DataFrame(lines).set_index(["training images", "epochs"])


def verdict_of(d: dict, margin: float = EQUIVALENCE_MARGIN) -> str:
    """``verdict`` of a stored interval ``{n, mean, std, ci_low, ci_high}`` (as the results files keep them);
    ``margin`` in the metric's own units (0: never "equivalent")."""
    from torch_impl.experiments.stats import Summary

    return verdict(Summary(d["n"], d["mean"], d["std"], (d["ci_high"] - d["ci_low"]) / 2), margin)
