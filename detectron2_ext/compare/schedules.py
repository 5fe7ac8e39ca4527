"""Is the detection schedule long enough? The same comparison at schedules that double, side by side.

    python -m detectron2_ext.compare.schedules docs/results/experiments/detection   # every i<N>/ folder in it

Each ``i<iterations>/`` folder holds one comparison (``results.json``) trained with
``python -m detectron2_ext.compare --schedule-scale S --out .../i<iterations>``. A schedule counts as
long enough when training half as long changes the seed-mean box AP50 of every backbone measured at
both by less than ``CONVERGED_CHANGE`` points; the change is also given paired by seed (full minus half,
over the seeds both have) with its 95 % t-interval, which says whether that mean is more than noise.
Writes ``schedules.md`` (the table) and ``schedules.png`` (box AP50 against iteration, one line per run)
into the folder. Needs no detectron2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from torch_impl.experiments.stats import paired_difference, summarize

from .configs import BACKBONES, DETECTORS
from .report import ONE_DOF, format_difference

CONVERGED_CHANGE = 1.0  # box AP50 points
FOLDER = re.compile(r"^i(\d+)$")


def load_schedules(folder: Path) -> dict[int, list[dict[str, Any]]]:
    """iterations -> the records of that schedule's comparison (folders without results are left out)."""
    out = {}
    for sub in sorted(Path(folder).iterdir()):
        m = FOLDER.match(sub.name)
        if m and (sub / "results.json").exists():
            records = json.loads((sub / "results.json").read_text())["records"]
            if records:
                out[int(m.group(1))] = records
    return dict(sorted(out.items()))


def _ap50(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, float]]:
    out: dict[tuple[str, str], dict[int, float]] = {}
    for r in records:
        out.setdefault((r["detector_key"], r["backbone_key"]), {})[int(r["seed"])] = r["box"]["AP50"]
    return out


def analyse(schedules: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (schedule E, detector, backbone): seeds, mean box AP50, and, where E/2 was measured
    too, the change of the seed mean from E/2 to E and the change paired by seed."""
    ap50 = {e: _ap50(records) for e, records in schedules.items()}
    rows = []
    for e, groups in ap50.items():
        for (detector, backbone), values in groups.items():
            half = ap50.get(e // 2, {}).get((detector, backbone)) if e % 2 == 0 else None
            rows.append({
                "iterations": e, "detector": detector, "backbone": backbone, "summary": summarize(list(values.values())),
                "half_mean": None if not half else summarize(list(half.values())).mean,
                "half_seeds": 0 if not half else len(half),
                "paired_change": None if not half else paired_difference(values, half),
            })  # fmt: skip
    order = {k: i for i, k in enumerate([*DETECTORS, *BACKBONES])}
    rows.sort(key=lambda r: (order[r["detector"]], r["iterations"], order[r["backbone"]]))
    return rows


# Halving must be measured for these backbones, each with at least MIN_SEEDS seeds at both lengths,
# before a schedule counts as long enough: the paper's headline rows, with a seed mean that is a mean.
REQUIRED_BACKBONES = ("R_50", "SE_R_50", "AFF3D_R_50")
MIN_SEEDS = 2


def converged(rows: list[dict[str, Any]], iterations: int, detector: str) -> str | None:
    """"no" when halving ``iterations`` moved some measured backbone's mean AP50 by CONVERGED_CHANGE or
    more; "yes" when it moved none by as much and every REQUIRED_BACKBONES one was measured with
    MIN_SEEDS seeds at both lengths; "so far" when it moved none but that coverage is missing; None when
    no backbone was measured at both."""
    measured = measured_at_half(rows, iterations, detector)
    if not measured:
        return None
    if any(abs(r["summary"].mean - r["half_mean"]) >= CONVERGED_CHANGE for r in measured):
        return "no"
    return "yes" if not missing_coverage(measured) else "so far"


def measured_at_half(rows: list[dict[str, Any]], iterations: int, detector: str) -> list[dict[str, Any]]:
    """The rows of ``detector`` at ``iterations`` whose backbone was also measured at half of it."""
    return [r for r in rows if r["iterations"] == iterations and r["detector"] == detector and r["half_mean"] is not None]


def missing_coverage(measured: list[dict[str, Any]]) -> list[str]:
    """The REQUIRED_BACKBONES not yet measured with MIN_SEEDS seeds at both lengths (paper labels)."""
    covered = {r["backbone"] for r in measured if r["summary"].n >= MIN_SEEDS and r["half_seeds"] >= MIN_SEEDS}
    return [BACKBONES[b][0] for b in REQUIRED_BACKBONES if b not in covered]


def render_markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "# Detection: is the schedule long enough?",
        "",
        "Written by `python -m detectron2_ext.compare.schedules` from the `i<iterations>/results.json` of this "
        "folder. Box AP50 (%) on the 1,000 validation scenes at the end of each schedule (lr steps, evaluations "
        f"and checkpoints scaled with it). A schedule is long enough when halving it moves every backbone's "
        f"seed mean by less than {CONVERGED_CHANGE:g} point; the paired change (seeds measured at both) says "
        f"whether the move is more than the seeds' noise. {ONE_DOF}: from 2 seeds, an interval with 1 degree "
        "of freedom (t = 12.7), which says little.",
        "",
        "| detector | iterations | backbone | seeds | box AP50 (mean ± SD) | from half the schedule: change of the mean "
        "| paired change [95 % CI] | halving moves < 1 point |",
        "|---|---:|---|---:|---|---:|---|---|",
    ]
    for r in rows:
        s = r["summary"]
        spread = f"{s.mean:.1f}" if s.n < 2 else f"{s.mean:.1f} ± {s.std:.1f}"
        change = "–" if r["half_mean"] is None else f"{s.mean - r['half_mean']:+.1f} (half: {r['half_seeds']} seed{'s' if r['half_seeds'] > 1 else ''})"
        ok = "–" if r["half_mean"] is None else ("yes" if abs(s.mean - r["half_mean"]) < CONVERGED_CHANGE else "no")
        out.append(f"| {DETECTORS[r['detector']]} | {r['iterations']} | {BACKBONES[r['backbone']][0]} | {s.n} | "
                   f"{spread} | {change} | {format_difference(r['paired_change'], '–')} | {ok} |")  # fmt: skip
    verdicts = []
    for detector in DETECTORS:
        for e in sorted({r["iterations"] for r in rows if r["detector"] == detector}):
            c = converged(rows, e, detector)
            if c is None:
                continue
            head = f"- {DETECTORS[detector]}, {e} iterations: "
            if c == "no":
                verdicts.append(head + f"halving moves at least one backbone's mean box AP50 by {CONVERGED_CHANGE:g} "
                                "point or more: not long enough.")
            elif c == "yes":
                verdicts.append(head + f"halving moves every backbone's mean box AP50 by less than {CONVERGED_CHANGE:g} "
                                f"point, with at least {MIN_SEEDS} seeds of each of the paper's three: long enough.")
            else:
                missing = missing_coverage(measured_at_half(rows, e, detector))
                verdicts.append(head + f"halving moves every measured backbone's mean box AP50 by less than "
                                f"{CONVERGED_CHANGE:g} point so far; still to measure with {MIN_SEEDS} seeds at both "
                                f"lengths: {', '.join(missing)}. Not shown yet.")
    out += ["", *(verdicts or ["- No schedule was measured at half its length yet."])]
    return "\n".join(out) + "\n"


def plot(schedules: dict[int, list[dict[str, Any]]], path: Path) -> None:
    """Box AP50 against iteration for every run (one panel per detector; colour: backbone, style: schedule)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    detectors = [d for d in DETECTORS if any(r["detector_key"] == d for rs in schedules.values() for r in rs)]
    fig, axes = plt.subplots(1, len(detectors), figsize=(6 * len(detectors), 4), squeeze=False)
    colours = dict(zip(BACKBONES, ("tab:gray", "tab:blue", "tab:green", "tab:purple", "tab:red")))
    styles = ("-", "--", ":", "-.")
    for ax, detector in zip(axes[0], detectors):
        seen = set()
        for k, (e, records) in enumerate(schedules.items()):
            for r in records:
                if r["detector_key"] != detector:
                    continue
                label = f"{BACKBONES[r['backbone_key']][0]}, {e} it" if (r["backbone_key"], e) not in seen else None
                seen.add((r["backbone_key"], e))
                its = [v["iteration"] for v in r["evaluations"]]
                ax.plot(its, [v["bbox/AP50"] for v in r["evaluations"]], styles[k % len(styles)], marker="o",
                        markersize=3, color=colours[r["backbone_key"]], label=label, alpha=0.8)  # fmt: skip
        ax.set(title=f"{DETECTORS[detector]} on the shapes scenes (one line per seed)", xlabel="iteration",
               ylabel="box AP50 (%), 1,000 validation scenes")  # fmt: skip
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detectron2_ext.compare.schedules", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("folder", type=Path, help="the folder holding the i<iterations>/ comparisons")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: expected a folder holding i<iterations>/results.json, got {args.folder} (not a folder)",
              file=sys.stderr)  # fmt: skip
        return 2
    schedules = load_schedules(args.folder)
    if not schedules:
        print(f"error: no i<iterations>/results.json with finished runs in {args.folder}", file=sys.stderr)
        return 2
    (args.folder / "schedules.md").write_text(render_markdown(analyse(schedules)))
    plot(schedules, args.folder / "schedules.png")
    print(f"wrote {args.folder / 'schedules.md'} and schedules.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
