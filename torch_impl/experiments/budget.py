"""The budget study: plain, SE and 3D-AFF at budgets that double, and the budget at which they converge.

    python -m torch_impl.experiments table1 --recipe experiments_shapes_v2 --rows resnet,se,aff3d --seeds 4 \\
        --set epochs=24 --out docs/results/experiments/budget/e24            # one runner per budget
    python -m torch_impl.experiments.budget                                    # -> budget/results.md, .json, .png
    python -m torch_impl.experiments.budget --out docs/results/experiments/budget_cpu \\
        --twin-of docs/results/experiments/budget                              # the CPU study beside the GPU one

A cosine schedule decays the learning rate to zero, so every curve is flat at its end whatever the
budget: the slope of the last epochs says nothing about convergence. Only a longer run can. The
**converged budget** is the shortest budget E whose halving, E/2, moves no row's seed-mean final error
by more than ``CONVERGED_CHANGE`` points (both budgets measured, not assumed). The same seed trains the
same images in the same order at every budget, so the change is paired seed by seed, and so are the
contrasts between rows at one budget. A study's records come from one kind of device (one GPU model, or
CPUs) and one design: each has its own folder, ``budget/`` for the H200 runs, ``budget_cpu/`` for the CPU runs,
``trials/budget_train24k/`` for the CPU runs of 24,000 training images (recipe ``experiments_shapes_v3``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..training.metrics import validated
from .grids import MAIN_CONTRASTS as CONTRASTS
from .grids import MAIN_ROWS
from .report import final_errors
from .stats import (
    EQUIVALENCE_MARGIN,
    SEED_CAP,
    Summary,
    comparisons_words,
    interval_plan,
    multiple_comparisons,
    paired_difference,
    paired_p_value,
    summarize,
    verdict,
)

ROWS = tuple(MAIN_ROWS.items())  # (key, short name) of the three rows the study trains
CONVERGED_CHANGE = 0.5  # points of seed-mean error between a budget and its half
CELL_SEEDS = 4  # a budget's cell is complete when every row has this many seeds; until then it is in progress
# Budget keys besides the epochs in which the cells of one study may differ: they change only the order of the
# sums, as another CPU's kernels do (tests/test_train.py compares float64 training steps with and without each).
ROUNDING_ONLY = {
    "channels_last": "the memory layout",
    "compile": "torch.compile (the same operations in fused kernels)",
}
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path("docs/results/experiments/budget")


def _cells(folder: Path) -> Iterator[tuple[int, Path, dict[str, Any]]]:
    """``(epochs, path, results)`` for each ``folder/e<E>/table1/results.json``, by increasing epochs."""
    found = []
    for path in Path(folder).glob("e*/table1/results.json"):
        match = re.fullmatch(r"e(\d+)", path.parents[1].name)
        if match:
            found.append((int(match.group(1)), path))
    for epochs, path in sorted(found):
        yield epochs, path, json.loads(path.read_text())


def load_budgets(folder: Path) -> dict[int, dict[str, dict[int, dict[str, Any]]]]:
    """``{epochs: {row_key: {seed: record}}}`` from ``folder/e<E>/table1/results.json``."""
    out: dict[int, dict[str, dict[int, dict[str, Any]]]] = {}
    for epochs, path, data in _cells(folder):
        rows: dict[str, dict[int, dict[str, Any]]] = {}
        for r in data["records"]:
            if int(r["epochs"]) != epochs:
                raise ValueError(f"{path}: a record of {r['epochs']} epochs in the folder of {epochs}")
            rows.setdefault(r["row_key"], {})[int(r["seed"])] = r
        if rows:  # a runner writes its results file before the first run of the budget has finished
            out[epochs] = rows
    kinds = {device_kind(r) for rows in out.values() for runs in rows.values() for r in runs.values()}
    if len(kinds) > 1:  # a budget's change is paired seed by seed: both runs of a pair must share the kernels
        raise ValueError(f"{folder}: records from {' and '.join(sorted(kinds))}; a study compares budgets on one "
                         "kind of device: give each its own folder (--out)")
    return dict(sorted(out.items()))


def cell_budgets(folder: Path) -> dict[int, dict[str, Any]]:
    """Each cell's budget (its results file's ``budget``, without the epochs), keyed by the epochs."""
    return {epochs: {k: v for k, v in data.get("budget", {}).items() if k != "epochs"}
            for epochs, _, data in _cells(folder)}  # fmt: skip


def budget_differences(cells: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{key: {epochs: value}}`` for each budget key in which the cells differ. Only ``ROUNDING_ONLY`` keys may:
    a study changes the epochs alone (ValueError otherwise)."""
    keys = sorted({k for budget in cells.values() for k in budget})
    differ = {k: {str(e): b.get(k) for e, b in cells.items()} for k in keys
              if len({json.dumps(b.get(k), sort_keys=True) for b in cells.values()}) > 1}  # fmt: skip
    other = [k for k in differ if k not in ROUNDING_ONLY]
    if other:
        raise ValueError(
            f"cells that differ in {', '.join(other)} besides the epochs: "
            + "; ".join(f"{k}: " + ", ".join(f"{e} epochs {v!r}" for e, v in differ[k].items()) for k in other)
            + f"; a study changes the epochs only (or {', '.join(ROUNDING_ONLY)}): give the others their own folder"
        )
    return differ


OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}  # the config's names as the prose writes them


def design_words(budget: dict[str, Any]) -> str:
    """The benchmark's design as a cell's budget states it, e.g. '16 px, 3,000 training / 10,000 validation images
    (each seed its own), batch 32, AdamW (lr 0.01, weight decay 0.05), cosine schedule to zero'; '' without one."""
    keys = ("image_size", "train_samples", "val_samples", "batch_size", "optimizer", "lr", "weight_decay",
            "lr_schedule")  # fmt: skip
    if not all(k in budget for k in keys):  # a results file without its budget (hand-made ones in the tests)
        return ""
    own = " (each seed its own)" if budget.get("data_seed", 0) is None else ""
    schedule = "cosine schedule to zero" if budget["lr_schedule"] == "cosine" else f"{budget['lr_schedule']} schedule"
    optimizer = OPTIMIZERS.get(budget["optimizer"], budget["optimizer"])
    return (f"{budget['image_size']} px, {budget['train_samples']:,} training / {budget['val_samples']:,} validation "
            f"images{own}, batch {budget['batch_size']}, {optimizer} (lr {budget['lr']}, weight decay "
            f"{budget['weight_decay']}), {schedule}")


def device_kind(record: dict[str, Any]) -> str:
    """'NVIDIA H200' for a GPU run, 'CPU' for any CPU run: CPU runs of one torch build differ only in rounding
    from one x86-64 model to another, a GPU run differs more (TF32, other kernels; cpu_twin in the README)."""
    return record["machine"].get("gpu") or "CPU"


def _validated(record: dict[str, Any]) -> int:
    """How many epochs of the run were measured on the validation set (``eval_every``; a record without its
    history counts as every epoch)."""
    history = record.get("history")
    return int(record["epochs"]) if history is None else len(validated(history))


def _summary_dict(s: Summary | None) -> dict[str, float] | None:
    return None if s is None else {**s.to_dict(), "p": paired_p_value(s)}


def analyse(budgets: dict[int, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """Per budget: each row's error, the three contrasts; per budget with its half measured: each row's
    change (paired by seed) and whether the budget counts as converged."""
    out: dict[str, Any] = {"converged_change": CONVERGED_CHANGE, "margin": EQUIVALENCE_MARGIN, "budgets": {}}
    tests: dict[str, Summary | None] = {}  # the contrasts of the complete cells, for the multiple comparisons
    for epochs, rows in budgets.items():
        complete = all(len(rows.get(key, {})) >= CELL_SEEDS for key, _ in ROWS)
        entry: dict[str, Any] = {"rows": {}, "contrasts": {}, "halving": None, "complete": complete}
        for key, _ in ROWS:
            if key in rows:
                errs = final_errors(rows[key])
                entry["rows"][key] = {**summarize(list(errs.values())).to_dict(), "seeds": sorted(errs),
                                      "wall_time_s": sum(r["wall_time_s"] for r in rows[key].values()) / len(errs),
                                      "validated_epochs": sorted({_validated(r) for r in rows[key].values()})}
        for a, b in CONTRASTS:
            if a in rows and b in rows:
                d = paired_difference(final_errors(rows[a]), final_errors(rows[b]))
                # the seeds a ±margin interval would need at this spread (the plan for the powered grids), and
                # where that is more than SEED_CAP, the half-width SEED_CAP seeds would reach
                plan = interval_plan(d) if d is not None else {}
                entry["contrasts"][f"{a}-{b}"] = {**(_summary_dict(d) or {}), "verdict": verdict(d),
                                                  "seeds_for_margin": plan.get("seeds_for_margin"),
                                                  "half_width_at_cap": plan.get("half_width_at_cap")}
                if complete:
                    tests[f"{epochs} epochs {a}-{b}"] = d
        half = budgets.get(epochs // 2) if epochs % 2 == 0 else None
        if half is not None:
            changes = {}
            for key, _ in ROWS:
                if key in rows and key in half:
                    d = paired_difference(final_errors(rows[key]), final_errors(half[key]))
                    if d is not None:
                        changes[key] = _summary_dict(d)
            # Decided only between complete cells: a cell in progress would decide from its first seeds.
            decided = complete and all(len(half.get(key, {})) >= CELL_SEEDS for key, _ in ROWS)
            entry["halving"] = {
                "from_epochs": epochs // 2, "change": changes,
                "converged": all(abs(c["mean"]) <= CONVERGED_CHANGE for c in changes.values()) if decided else None,
            }  # fmt: skip
        out["budgets"][str(epochs)] = entry
    converged = [int(e) for e, b in out["budgets"].items() if b["halving"] and b["halving"]["converged"]]
    out["converged_budget"] = min(converged) if converged else None
    out["multiple_comparisons"] = multiple_comparisons(tests)
    return out


def twin(study: dict[int, dict[str, dict[int, dict[str, Any]]]],
         reference: dict[int, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """Per budget both studies measured: each row's error in ``study`` minus ``reference``, paired by seed (the
    same seed draws the same images on any device). The two agree at a budget when every row's interval lies
    inside ±margin; only then may their records be pooled."""
    out: dict[str, Any] = {}
    for epochs in sorted(set(study) & set(reference)):
        rows = {}
        for key, _ in ROWS:
            if key in study[epochs] and key in reference[epochs]:
                d = paired_difference(final_errors(study[epochs][key]), final_errors(reference[epochs][key]))
                if d is not None:
                    rows[key] = {**_summary_dict(d), "verdict": verdict(d)}
        agree = len(rows) == len(ROWS) and all(r["verdict"].startswith("equivalent") for r in rows.values())
        out[str(epochs)] = {"rows": rows, "agree": agree}
    return out


def interval_text(d: dict[str, float] | None, digits: int = 2) -> str:
    """'+1.23 [+0.45, +2.01]' for a stored interval; '+1.23 (1 seed)' where one seed gives none."""
    if not d:
        return ""
    if d["n"] < 2 or math.isnan(d["ci_low"]):
        return f"{d['mean']:+.{digits}f} (1 seed)"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def converged_words(analysis: dict[str, Any]) -> str:
    """'<E> epochs', 'none of the measured budgets', or 'not measured yet' (no complete budget has its half)."""
    if analysis["converged_budget"]:
        return f"{analysis['converged_budget']} epochs"
    measured = any(b["halving"] and b["halving"]["converged"] is not None for b in analysis["budgets"].values())
    return "none of the measured budgets" if measured else "not measured yet"


def halving_words(halving: dict[str, Any]) -> str:
    """'yes'; 'in progress' (a cell of the two is not complete yet); or why not, from the rows whose mean moved by
    more than the threshold: 'no: still falling' where such a row's change has its interval below 0, 'no: rising'
    where above, else 'no: by the means alone' (their intervals span 0: the seeds cannot tell a move from noise)."""
    if halving["converged"] is None:
        return "in progress"
    if halving["converged"]:
        return "yes"
    # the reason lies with the rows that moved too far; a row within the threshold fails nothing
    changes = [c for c in halving["change"].values() if abs(c["mean"]) > CONVERGED_CHANGE]
    if any(c["ci_high"] < 0 for c in changes):
        return "no: still falling"
    if any(c["ci_low"] > 0 for c in changes):
        return "no: rising"
    return "no: by the means alone"


def _plan_text(contrast: dict[str, Any]) -> str:
    """'9', or '71 (±0.89 at 24)' where the seeds needed pass SEED_CAP; '' where no spread was measured."""
    need = contrast.get("seeds_for_margin")
    if need is None:
        return ""
    return str(need) if need <= SEED_CAP else f"{need} (±{contrast['half_width_at_cap']:.2f} at {SEED_CAP})"


def _section(text: str, columns: list[str], right: list[bool]) -> list[str]:
    """A paragraph, then the head of a table whose first column is the budget (epochs)."""
    return ["", text, "", "| epochs | " + " | ".join(columns) + " |",
            "|---:|" + "".join("---:|" if r else "---|" for r in right)]  # fmt: skip


def render_markdown(analysis: dict[str, Any], machine: str) -> str:
    names = dict(ROWS)
    contrasts = [f"{names[a]} − {names[b]}" for a, b in CONTRASTS]
    margin = analysis["margin"]
    lines = ["# Budget study: plain, SE and 3D-AFF ResNet-20 on the built-in shapes at budgets that double"]
    lines += _section(
        (f"Design: {analysis['design']}; {machine}" if analysis.get("design") else machine[:1].upper() + machine[1:])
        + ". Final validation top-1 error (%) after the last epoch, mean "
        "[95 % t-interval] over seeds. Each seed draws its own images; within a seed every row and every budget "
        "trains the same images in the same order, so differences are paired seed by seed.",
        [f"{n}: seeds, error" for _, n in ROWS] + ["s / run (plain, SE, 3D-AFF)"], [True] * (len(ROWS) + 1))
    for e, b in analysis["budgets"].items():
        cells = []
        for key, _ in ROWS:
            r = b["rows"].get(key)
            cells.append("" if r is None else f"{r['n']}, {r['mean']:.2f}" + (
                "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"))
        times = ", ".join(f"{b['rows'][k]['wall_time_s']:.0f}" if k in b["rows"] else "-" for k, _ in ROWS)
        lines.append(f"| {e} | " + " | ".join(cells) + f" | {times} |")
    mixed = [e for e, b in analysis["budgets"].items()
             if len({v for r in b["rows"].values() for v in r["validated_epochs"]}) > 1]  # fmt: skip
    if mixed:
        lines += ["", f"s / run at {', '.join(mixed)} epochs mixes runs validated on different numbers of epochs "
                  "(`eval_every`; each row's `validated_epochs` in results.json): compare run times within one kind."]
    for key, values in analysis.get("differences", {}).items():
        lines += ["", f"The cells differ in `{key}`, {ROUNDING_ONLY[key]} ("
                  + "; ".join(f"{e} epochs: {v}" for e, v in values.items()) + "). It changes only the order of "
                  "the sums, as another CPU's kernels do, so the cells form one study; their run times differ."]
    lines += _section(
        f"**Halving the budget.** Change of each row's error from E/2 to E epochs (paired by seed). A budget counts "
        f"as converged when no row's mean changes by more than {analysis['converged_change']} points. Where it does "
        "not: 'still falling' when a row's change has its interval below 0 (a longer budget is due), 'rising' when "
        "above, 'by the means alone' when no interval excludes 0 (more seeds in both cells would tell a fall from "
        "the seeds' noise).",
        ["from"] + [n for _, n in ROWS] + ["converged"], [True] * (len(ROWS) + 1) + [False])
    for e, b in analysis["budgets"].items():
        h = b["halving"]
        if h:
            cells = [interval_text(h["change"].get(k)) for k, _ in ROWS]
            lines.append(f"| {e} | {h['from_epochs']} | " + " | ".join(cells) + f" | {halving_words(h)} |")
    words = converged_words(analysis)
    why = {"not measured yet": " (no complete budget has its half measured in this study)",
           "none of the measured budgets": " (each halving decided so far moved a row by more than "
                                           f"{analysis['converged_change']} points)"}  # fmt: skip
    lines += ["", f"Converged budget: **{words}**{why.get(words, '')}."]
    running = [e for e, b in analysis["budgets"].items() if not b["complete"]]
    if running:
        lines += ["", f"In progress (fewer than {CELL_SEEDS} seeds of a row): {', '.join(running)} epochs. Their "
                  "rows and contrasts are listed with the seeds finished so far and left out of the plot; their "
                  "halving is not decided until both cells are complete."]  # fmt: skip
    lines += _section(
        "**Contrasts at each budget** (points, row minus row, paired; verdict: the interval excludes 0, or lies "
        f"inside ±{margin} (equivalent), else inconclusive).", contrasts, [False] * len(CONTRASTS))
    for e, b in analysis["budgets"].items():
        cells = []
        for a, c in CONTRASTS:
            d = b["contrasts"].get(f"{a}-{c}")
            cells.append("" if not d or "n" not in d else f"{interval_text(d)} {d['verdict']}".strip())
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    mc = analysis["multiple_comparisons"]
    if mc["intervals"]:
        lines += ["", "Multiple comparisons: " + comparisons_words(mc, "intervals of complete cells")]
    lines += _section(
        f"**Seeds a ±{margin}-point interval needs** at the spread of each contrast's paired differences "
        "(a rough estimate: the spread itself comes from that budget's few seeds); where that is more than "
        f"{SEED_CAP}, the most the powered grids run, the half-width {SEED_CAP} seeds would reach.",
        contrasts, [True] * len(CONTRASTS))  # fmt: skip
    for e, b in analysis["budgets"].items():
        plans = [b["contrasts"].get(f"{a}-{c}") or {} for a, c in CONTRASTS]
        if any(p.get("seeds_for_margin") is not None for p in plans):
            lines.append(f"| {e} | " + " | ".join(_plan_text(p) for p in plans) + " |")
    if analysis.get("twin"):
        tw = analysis["twin"]
        lines += _section(
            f"**Twin of `{tw['of']}`** ({tw['machine']}): each row's error here minus there, paired by seed, at the "
            f"budgets both measured. The two studies may be pooled only where every row agrees within ±{margin} point.",
            [n for _, n in ROWS] + ["agree"], [False] * (len(ROWS) + 1))
        for e, t in tw["budgets"].items():
            cells = [f"{interval_text(t['rows'][k])} {t['rows'][k]['verdict']}".strip() if k in t["rows"] else ""
                     for k, _ in ROWS]  # fmt: skip
            lines.append(f"| {e} | " + " | ".join(cells) + f" | {'yes' if t['agree'] else 'not shown'} |")
    lines += ["", "![error against budget](budget.png)", ""]
    return "\n".join(lines)


def plot(analysis: dict[str, Any], path: Path) -> None:
    """Left: each row's error against the budget (log scale), with its interval. Right: the contrasts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = {e: b for e, b in analysis["budgets"].items() if b["complete"]}  # a cell in progress is not drawn
    epochs = [int(e) for e in complete]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (key, name) in enumerate(ROWS):
        pts = [(int(e), b["rows"][key]) for e, b in complete.items() if key in b["rows"]]
        if not pts:
            continue
        x = [e * (1 + 0.03 * (i - 1)) for e, _ in pts]  # nudged apart so the bars do not hide each other
        y = [r["mean"] for _, r in pts]
        err = [0 if math.isnan(r["ci_low"]) else r["mean"] - r["ci_low"] for _, r in pts]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{name} (n={pts[-1][1]['n']})")
    for i, (a, b) in enumerate(CONTRASTS):
        pts = [(int(e), d["contrasts"][f"{a}-{b}"]) for e, d in complete.items()
               if "n" in d["contrasts"].get(f"{a}-{b}", {})]  # fmt: skip
        if not pts:
            continue
        x = [e * (1 + 0.03 * (i - 1)) for e, _ in pts]
        y = [d["mean"] for _, d in pts]
        err = [0 if math.isnan(d["ci_low"]) else d["mean"] - d["ci_low"] for _, d in pts]
        names = dict(ROWS)
        bx.errorbar(x, y, yerr=err, marker="s", capsize=3, label=f"{names[a]} − {names[b]}")
    margin = analysis["margin"]
    bx.axhspan(-margin, margin, color="grey", alpha=0.15, label=f"±{margin} (equivalence margin)")
    bx.axhline(0, color="black", lw=0.8)
    for a_, title, ylabel in ((ax, "error against budget (95 % CI)", "final validation top-1 error (%)"),
                              (bx, "paired differences (95 % CI)", "difference (points)")):  # fmt: skip
        a_.set_xscale("log", base=2)
        a_.set_xticks(epochs, [str(e) for e in epochs])
        a_.set_xlabel("training epochs (cosine schedule to zero)")
        a_.set_ylabel(ylabel)
        a_.set_title(title, fontsize=9)
        a_.grid(alpha=0.3)
        a_.legend(fontsize=7)
    design = analysis.get("design")
    fig.suptitle("ResNet-20 family on the built-in shapes" + (f"\n{design}" if design else ""), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_of(budgets: dict[int, dict[str, dict[int, dict[str, Any]]]]) -> str:
    """The machines the records name (GPU name, else CPU model), e.g. 'trained on NVIDIA H200'."""
    names = sorted({r["machine"].get("gpu") or r["machine"].get("cpu", "?")
                    for rows in budgets.values() for runs in rows.values() for r in runs.values()})  # fmt: skip
    return "trained on " + " and ".join(names) if names else "no runs"


def study(folder: Path, twin_of: Path | None = None) -> dict[str, Any]:
    """The analysis of the study in ``folder``, with its twin ``twin_of`` (a study of the same recipe and seeds
    on another kind of device) where one is named."""
    budgets = load_budgets(folder)
    if not budgets:
        raise ValueError(f"no budget results in {folder}: expected e<EPOCHS>/table1/results.json")
    cells = {e: b for e, b in cell_budgets(folder).items() if e in budgets}
    differences = budget_differences(cells)
    analysis = analyse(budgets)
    analysis["machine"] = machine_of(budgets)
    analysis["design"] = design_words(next(iter(cells.values()), {}))  # the cells share it (budget_differences)
    analysis["differences"] = differences
    if twin_of is not None:
        reference = load_budgets(twin_of)
        if not reference:
            raise ValueError(f"no budget results in {twin_of} (--twin-of): expected e<EPOCHS>/table1/results.json")
        where = twin_of.resolve()  # named from the repository root in the report, so that it reads the same anywhere
        label = where.relative_to(ROOT).as_posix() if where.is_relative_to(ROOT) else str(where)
        analysis["twin"] = {"of": label, "machine": machine_of(reference), "budgets": twin(budgets, reference)}
    return analysis


def write_report(folder: Path, twin_of: Path | None = None) -> dict[str, Any]:
    analysis = study(folder, twin_of)
    (folder / "results.json").write_text(json.dumps(analysis, indent=1) + "\n")
    (folder / "results.md").write_text(render_markdown(analysis, analysis["machine"]))
    plot(analysis, folder / "budget.png")
    return analysis


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torch_impl.experiments.budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", default=str(DEFAULT_DIR), help=f"the study's folder (default {DEFAULT_DIR})")
    p.add_argument("--twin-of", default=None, metavar="FOLDER",
                   help="another study of the same recipe and seeds on another kind of device (e.g. "
                        "docs/results/experiments/budget): compare the two, row by row and seed by seed")
    args = p.parse_args(argv)
    try:
        analysis = write_report(Path(args.out), None if args.twin_of is None else Path(args.twin_of))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"converged budget: {analysis['converged_budget']}; wrote {args.out}/results.md, results.json, budget.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
