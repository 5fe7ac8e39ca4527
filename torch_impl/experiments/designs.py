"""Benchmark designs compared by what a powered comparison costs in them: power per CPU-hour.

    python -m torch_impl.experiments.designs docs/results/experiments/budget_cpu \\
        docs/results/experiments/trials/budget_train24k --out docs/results/experiments/trials

Each folder is a budget study (``python -m torch_impl.experiments.budget --out <folder>`` analyses it),
trained on one kind of device; the studies differ in their design, for example the number of training
images. Per complete cell (design, epochs): the images a run sees, each row's error, the spread of the three
contrasts' paired differences, the seeds a ±0.5-point interval needs for the widest of them, and what those
seeds cost in run time (one thread per run, so a run's wall time is its CPU time). A design buys power per
CPU-hour when it needs fewer seeds, cheaper runs, or both, at a budget that has converged.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from .budget import ROOT, ROUNDING_ONLY, ROWS, cell_budgets, halving_words, study
from .grids import MAIN_CONTRASTS as CONTRASTS
from .stats import EQUIVALENCE_MARGIN, seeds_for_half_width

OUT_JSON, OUT_MD = "designs.json", "designs.md"


def design_keys(budgets: list[dict[str, Any]]) -> list[str]:
    """The budget keys in which the studies' designs differ (the epochs, and keys that change only the rounding,
    left out): what the comparison varies."""
    keys = sorted({k for b in budgets for k in b} - {"epochs", *ROUNDING_ONLY})
    return [k for k in keys if len({json.dumps(b.get(k), sort_keys=True) for b in budgets}) > 1]


def cells(folder: Path) -> list[dict[str, Any]]:
    """One entry per complete cell of the study in ``folder``: its design, images seen, errors, spreads, seeds
    for a ±margin interval and run time per seed."""
    analysis, budgets = study(folder), cell_budgets(folder)
    where = folder.resolve()  # named from the repository root, so that the report reads the same anywhere
    label = where.relative_to(ROOT).as_posix() if where.is_relative_to(ROOT) else str(where)
    out = []
    for epochs, b in analysis["budgets"].items():
        if not b["complete"]:  # a cell in progress measures no spread yet
            continue
        design = budgets[int(epochs)]
        if "train_samples" not in design:
            raise ValueError(f"{folder}: the {epochs}-epoch cell's results.json states no budget (train_samples)")
        spread = {f"{a}-{c}": b["contrasts"][f"{a}-{c}"]["std"] for a, c in CONTRASTS}
        seeds = seeds_for_half_width(max(spread.values()), EQUIVALENCE_MARGIN)
        per_seed = sum(b["rows"][key]["wall_time_s"] for key, _ in ROWS)  # one run of each row
        out.append({
            "study": label, "machine": analysis["machine"], "design": design,
            "epochs": int(epochs), "images_seen": int(epochs) * int(design["train_samples"]),
            "errors": {key: b["rows"][key]["mean"] for key, _ in ROWS}, "spread": spread,
            "seeds_for_margin": seeds, "seconds_per_seed": per_seed, "hours_for_margin": seeds * per_seed / 3600,
            "validated_epochs": max(v for key, _ in ROWS for v in b["rows"][key]["validated_epochs"]),
            "halving": halving_words(b["halving"]) if b["halving"] else "half not measured",
        })  # fmt: skip
    return out


def compare(folders: list[Path]) -> dict[str, Any]:
    entries = [c for f in folders for c in cells(f)]
    return {"margin": EQUIVALENCE_MARGIN, "varies": design_keys([e["design"] for e in entries]), "cells": entries}


def render_markdown(comparison: dict[str, Any]) -> str:
    names = dict(ROWS)
    varies = comparison["varies"]
    machines = list(dict.fromkeys(e["machine"] for e in comparison["cells"]))
    by_machine = len(machines) > 1  # run times compare within one kind of machine only: name it per cell
    margin = comparison["margin"]
    contrasts = [f"{names[a]} − {names[c]}" for a, c in CONTRASTS]
    columns = [*(["machine"] if by_machine else []), *varies, "epochs", "images seen",
               *(f"{n} error" for _, n in ROWS), *(f"spread {c}" for c in contrasts), f"seeds for ±{margin}",
               "s per seed", "compile", "validated", "CPU-h", "halving"]  # fmt: skip
    intro = (
        f"The complete cells of the budget studies compared; the designs differ in {', '.join(varies) or 'nothing'} "
        "(each cell's full budget in `designs.json`). Errors are seed means of the final validation top-1 error "
        f"(%). Spread: the standard deviation of each contrast's paired differences over the cell's seeds. Seeds: "
        f"what a ±{margin}-point interval needs at the widest spread (a rough estimate from the cell's few seeds). "
        "Run time: one run of each row, one thread per run, as the cell's records measured it (the `compile` "
        "column: torch.compile, cheaper per run; runs shared the machine two at a time; `validated`: on how many "
        "epochs a run measured the validation set, the most in the cell, which costs forward passes). CPU-hours: "
        "seeds x run time. Halving: whether the cell counts as converged against half its epochs (each study's `results.md`)."
    )
    lines = [
        "# Benchmark designs: what a powered comparison costs in each",
        "",
        intro,
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * by_machine + "---:|" * (len(columns) - by_machine - 1) + "---|",
    ]
    for e in comparison["cells"]:
        values = [e["machine"].removeprefix("trained on ")] if by_machine else []
        values += [f"{e['design'].get(k):,}" if isinstance(e["design"].get(k), int) else str(e["design"].get(k))
                  for k in varies]  # fmt: skip
        values += [str(e["epochs"]), f"{e['images_seen']:,}"]
        values += [f"{e['errors'][k]:.2f}" for k, _ in ROWS]
        values += [f"{e['spread'][f'{a}-{c}']:.2f}" for a, c in CONTRASTS]
        values += [str(e["seeds_for_margin"]), f"{e['seconds_per_seed']:,.0f}", str(e["design"].get("compile", False)),
                   str(e["validated_epochs"]), f"{e['hours_for_margin']:,.1f}", e["halving"]]  # fmt: skip
        lines.append("| " + " | ".join(values) + " |")
    studies = ", ".join(f"`{s}`" for s in dict.fromkeys(e["study"] for e in comparison["cells"]))
    lines += ["", f"Machines: {'; '.join(m.removeprefix('trained on ') for m in machines)}. Studies: {studies}.", ""]
    return "\n".join(lines)


def write(comparison: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / OUT_JSON).write_text(json.dumps(comparison, indent=1) + "\n")
    (out / OUT_MD).write_text(render_markdown(comparison))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torch_impl.experiments.designs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("studies", nargs="+", help="budget study folders (each with e<EPOCHS>/table1/results.json)")
    p.add_argument("--out", required=True, help=f"folder for {OUT_MD} and {OUT_JSON}")
    args = p.parse_args(argv)
    try:
        comparison = compare([Path(s) for s in args.studies])
        if not comparison["cells"]:  # checked before anything is written: an empty report replaces no good one
            raise ValueError("no complete cell in these studies (a cell needs 4 seeds of each row)")
        write(comparison, Path(args.out))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cheapest = min(comparison["cells"], key=lambda e: e["hours_for_margin"] if e["halving"] == "yes" else math.inf)
    print(f"{len(comparison['cells'])} cells; wrote {args.out}/{OUT_MD}, {OUT_JSON}"
          + (f"; cheapest converged: {cheapest['study']} at {cheapest['epochs']} epochs"
             if cheapest["halving"] == "yes" else "; no cell is converged"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
