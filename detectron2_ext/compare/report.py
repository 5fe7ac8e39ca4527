"""The detection comparison as tables: ``results.md`` from ``results.json`` (no detectron2 needed).

Laid out like the paper's Table 8 (box AP, AP50, AP75, APs, APm, APl per detector and backbone) and
Table 9 (mask AP, AP50, AP75), with the mean over seeds, the spread (sample standard deviation and
the seeds' range) and the paired difference to ResNet-50 over the same seeds with its 95 %
t-interval. The paper's COCO val2017 numbers stand beside, labelled as COCO: a different data set,
full-width ImageNet-pretrained backbones and MMDetection, so only the direction compares.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch_impl.experiments.stats import paired_difference, summarize, verdict
from torch_impl.marked_block import replace_block
from torch_impl.zoo.paper import TABLE8, TABLE9

from .configs import BACKBONES, DETECTORS

RESULTS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "results.md"
PAGE_BEGIN = ("<!-- detection tables: written by python -m detectron2_ext.compare (--report-only too) from the "
              "comparison's results.json at the full schedule; do not edit by hand -->")
PAGE_END = "<!-- end of detection tables -->"
README = RESULTS_PAGE.parents[1] / "README.md"
README_BEGIN = ("<!-- detection summary: written by python -m detectron2_ext.compare (--report-only too) from the "
                "comparison's results.json at the full schedule; do not edit by hand -->")
README_END = "<!-- end of detection summary -->"

PREDICTIONS_FILE = "predictions.json"
PREDICTION_IMAGES = 8  # the first validation images whose detections are kept for the notebook
PREDICTION_MIN_SCORE = 0.2
BOX_COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
MASK_COLUMNS = ("AP", "AP50", "AP75")
BASELINE = "R_50"
SECOND_BASELINE = "SE_R_50"  # the attention the paper improves on: 3D-AFF is also paired with SE
ONE_DOF = "†"  # an interval from 2 seeds: 1 degree of freedom (t = 12.7), a single spread estimate
EQUIVALENCE_AP = 1.0  # AP points: "equivalent" needs the whole interval inside +-this (the halving check's mark)
# the metrics the contrasts are given for: AP50 (the halving check's) and AP over IoU 0.5-0.95 (the paper's
# headline), since on these scenes AP50 sits at 98-99 % and leaves little room to differ
CONTRAST_COLUMNS = ("AP50", "AP")
# the contrasts the paper's Tables 8 and 9 are read for: (row, baseline)
CONTRASTS = (("AFF3D_R_50", "R_50"), ("AFF3D_R_50", "SE_R_50"), ("SE_R_50", "R_50"),
             ("CBAM_R_50", "R_50"), ("ECA_R_50", "R_50"))  # fmt: skip


def paper_ap(table, detector: str, backbone: str) -> dict[str, float]:
    """The paper's printed COCO numbers for a (detector, backbone label), keyed AP, AP50, ..., APl."""
    for row in table.rows:
        if row.detector == detector and row.label == backbone:
            return {name.replace("APS", "APs").replace("APM", "APm").replace("APL", "APl"): v for name, v in row.ap}
    return {}


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        out.setdefault((r["detector_key"], r["backbone_key"]), {})[int(r["seed"])] = r
    return out


def statistics(data: dict[str, Any], task: str, column: str) -> list[dict[str, Any]]:
    """Per (detector, backbone): the summary over seeds of ``record[task][column]`` and the paired
    differences to ResNet-50 and to SE; ``task`` is "box" or "mask". Seeds where the value is undefined
    are left out."""
    groups = _groups([r for r in data["records"] if task in r])
    rows = []
    for (detector, backbone), by_seed in groups.items():
        values = _values(by_seed, task, column)
        if not values:
            continue
        def against(baseline: str):
            base_values = _values(groups.get((detector, baseline), {}), task, column)
            return None if backbone == baseline else paired_difference(values, base_values)

        rows.append({
            "detector": detector, "backbone": backbone, "values": values, "summary": summarize(list(values.values())),
            "difference": against(BASELINE), "difference_se": against(SECOND_BASELINE),
        })  # fmt: skip
    return rows


def _values(by_seed: dict[int, dict[str, Any]], task: str, column: str) -> dict[int, float]:
    """seed -> ``record[task][column]``, leaving out seeds where it is undefined."""
    return {s: r[task][column] for s, r in by_seed.items() if r[task].get(column) is not None}


def _cell(values: dict[int, float]) -> str:
    s = summarize(list(values.values()))
    if s.n == 1:
        return f"{s.mean:.1f}"
    return f"{s.mean:.1f} ± {s.std:.1f} [{min(values.values()):.1f}, {max(values.values()):.1f}]"


def format_difference(d, missing: str = "baseline") -> str:
    """A paired difference as text: its mean and 95 % interval (marked ONE_DOF from 2 seeds), or
    ``missing`` / '(1 seed)'."""
    if d is None:
        return missing
    if d.n < 2 or math.isnan(d.half_width):
        return f"{d.mean:+.1f} (1 seed)"
    return f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}]{ONE_DOF if d.n == 2 else ''}"


def ap_verdict(d) -> str:
    """What a paired AP difference's 95 % interval supports: "higher" or "lower" (it excludes 0),
    "equivalent within ±1" (it lies inside ±EQUIVALENCE_AP), else "inconclusive"; with one seed there is
    no interval, and from two it rests on 1 degree of freedom (said, since such an interval says little)."""
    if d is None:
        return "no seeds in common"
    if d.n < 2:
        return "one seed: no interval"
    v = verdict(d, EQUIVALENCE_AP)
    v = {"lower error": "lower", "higher error": "higher"}.get(v, v)
    return v + (" (2 seeds: 1 degree of freedom)" if d.n == 2 else "")


def contrasts(data: dict[str, Any], task: str = "box", column: str = "AP50") -> list[dict[str, Any]]:
    """Per detector, each of CONTRASTS with both rows run: the paired difference (``statistics``'s, against
    ResNet-50 or SE) and its verdict."""
    stats = {(s["detector"], s["backbone"]): s for s in statistics(data, task, column)}
    against = {BASELINE: "difference", SECOND_BASELINE: "difference_se"}
    out = []
    for detector in DETECTORS:
        for row, base in CONTRASTS:
            if (detector, row) in stats and (detector, base) in stats:
                d = stats[(detector, row)][against[base]]
                out.append({"detector": detector, "row": row, "baseline": base, "difference": d, "verdict": ap_verdict(d)})
    return out


def _contrast_lines(data: dict[str, Any], task: str, column: str) -> list[str]:
    lines = ["| detector | contrast | seeds paired | difference [95 % CI] | what the interval supports |",
             "|---|---|---:|---|---|"]  # fmt: skip
    for c in contrasts(data, task, column):
        name = f"{BACKBONES[c['row']][0]} − {BACKBONES[c['baseline']][0]}"
        n = 0 if c["difference"] is None else c["difference"].n
        lines.append(f"| {DETECTORS[c['detector']]} | {name} | {n} | {format_difference(c['difference'], '–')} | "
                     f"{c['verdict']} |")
    return lines if len(lines) > 2 else ["No contrast has both of its backbones run yet."]


def _table(data: dict[str, Any], task: str, columns: tuple[str, ...], paper_table) -> list[str]:
    stats = {(s["detector"], s["backbone"], c): s for c in columns for s in statistics(data, task, c)}
    keys = list(dict.fromkeys((d, b) for d, b, _ in stats))
    head = ["detector", "backbone", "seeds", *columns, "AP50 − ResNet-50 [95 % CI]", "AP50 − SE [95 % CI]",
            "COCO (paper): " + ", ".join(columns)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for detector, backbone in keys:
        label, det_label = BACKBONES[backbone][0], DETECTORS[detector]
        cells = [stats[(detector, backbone, c)] if (detector, backbone, c) in stats else None for c in columns]
        coco = paper_ap(paper_table, det_label, label)
        ap50 = stats.get((detector, backbone, "AP50"))
        lines.append("| " + " | ".join([
            det_label, label, str(max(c["summary"].n for c in cells if c)),
            *[_cell(c["values"]) if c else "–" for c in cells],
            format_difference(ap50["difference"], "baseline" if backbone == BASELINE else "–") if ap50 else "–",
            format_difference(ap50["difference_se"], "baseline" if backbone == SECOND_BASELINE else "–") if ap50 else "–",
            ", ".join(f"{coco[c]:.1f}" for c in columns if c in coco) or "–",
        ]) + " |")  # fmt: skip
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    records = data["records"]
    first = records[0]
    iters = sorted({r["iterations"] for r in records})
    out = [
        "# Detection on the built-in shapes scenes: Tables 8 and 9 in miniature",
        "",
        "Written by `python -m detectron2_ext.compare` from `results.json`. Cells: mean ± sample standard "
        "deviation [lowest, highest seed] of detectron2's COCOEvaluator AP (%) on `shapes_val`; the "
        "difference columns pair each backbone with ResNet-50 and with SE over the same seeds (95 % t-interval; "
        f"{ONE_DOF}: from 2 seeds, 1 degree of freedom, t = 12.7: a single estimate of the spread, an interval "
        "that says little). "
        "The last column is the paper's COCO val2017 result (Tables 8 and 9): another data set, "
        "full-width ImageNet-pretrained backbones, MMDetection; compare directions, not values.",
        "",
        f"Budget `{data['budget_id']}`: {', '.join(map(str, iters))} iterations per run, {first['threads']} "
        f"thread(s) per run; machines: {'; '.join(machines_of(records))}.",
        "",
    ]
    out += _tables_and_contrasts(data, lambda title: f"## {title}", [
        f"\"higher\" / \"lower\": the 95 % interval excludes 0; \"equivalent within ±{EQUIVALENCE_AP:g}\": it lies "
        f"inside ±{EQUIVALENCE_AP:g} point; else \"inconclusive\". Up to {len(CONTRASTS)} contrasts per detector, "
        "task and metric, each at 95 %: where there is no difference, one interval in twenty still excludes 0 by "
        "chance. AP50 is near its ceiling (98-99 %) on these scenes, so AP (IoU 0.5-0.95) has more room to show "
        "a difference; the two are read from the same runs, not independent evidence.", ""])
    out += ["", "## Runs", "",
            "Wall time: the detector's training and evaluations, summed over the attempts of a run that was "
            "interrupted and resumed (work redone after a resume included). Pre-training: the backbone's classifier "
            "(`detectron2_ext.pretrain`), trained once per backbone and seed by the first run that needed it "
            "and kept for the others; its epochs, validation accuracy and wall time.", "",
            "| run | box AP | box AP50 | mask AP | mask AP50 | iterations | wall time | pre-training | machine |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        mask = r.get("mask", {})
        fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        out.append(
            f"| {r['run_key']} | {fmt(r['box']['AP'])} | {fmt(r['box']['AP50'])} | {fmt(mask.get('AP'))} | "
            f"{fmt(mask.get('AP50'))} | {r['iterations']} | {_wall_time(r)} | {_pretraining(r)} | "
            f"{r['machine']['cpu']} |"
        )
    return "\n".join(out) + "\n"


def _tables_and_contrasts(data: dict[str, Any], heading: Callable[[str], str], legend: list[str]) -> list[str]:
    """The AP tables (Table 8, and Table 9 once Mask R-CNN has run) and what the paired intervals
    support, each part under ``heading(title)``: the report's and the results page's common part."""
    masks = any("mask" in r for r in data["records"])
    out = [heading("Box AP (Table 8's columns)"), "", *_table(data, "box", BOX_COLUMNS, TABLE8)]
    if masks:
        out += ["", heading("Mask AP (Table 9's columns)"), "", *_table(data, "mask", MASK_COLUMNS, TABLE9)]
    out += ["", heading(f"What the intervals support ({' and '.join(CONTRAST_COLUMNS)}, paired by seed)"), "", *legend]
    for task in ("box", "mask") if masks else ("box",):
        for column in CONTRAST_COLUMNS:
            out += [f"{task.capitalize()} {column}:", "", *_contrast_lines(data, task, column), ""]
    return out[:-1]


def page_tables(data: dict[str, Any]) -> str:
    """The results page's part of the report (``render_markdown``'s tables and contrasts)."""
    return "\n".join(_tables_and_contrasts(data, lambda title: f"{title}:", []))


def update_results_page(data: dict[str, Any], page: Path = RESULTS_PAGE) -> bool:
    """Rewrite the block between ``PAGE_BEGIN`` and ``PAGE_END`` of the results page; True if it changed."""
    return replace_block(page, PAGE_BEGIN, PAGE_END, page_tables(data))


def summary_table(data: dict[str, Any]) -> str:
    """README's view of Tables 8 and 9: per detector (Faster R-CNN first, as in Table 8) and backbone, the
    seed means of box and mask AP and AP50, and box AP paired with ResNet-50 and with SE."""
    columns = [("box", "AP"), ("box", "AP50"), ("mask", "AP"), ("mask", "AP50")]
    stats = {(task, c, s["detector"], s["backbone"]): s for task, c in columns for s in statistics(data, task, c)}
    lines = ["| detector | backbone | seeds | box AP | box AP50 | mask AP | mask AP50 | box AP − ResNet-50 [95 % CI] "
             "| box AP − SE [95 % CI] |", "|---|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for detector in sorted(DETECTORS, key=lambda d: d != "faster_rcnn"):
        for backbone in BACKBONES:
            box = stats.get(("box", "AP", detector, backbone))
            if box is None:
                continue
            means = [stats.get((*key, detector, backbone)) for key in columns]
            lines.append("| " + " | ".join([
                DETECTORS[detector], BACKBONES[backbone][0], str(box["summary"].n),
                *("–" if m is None else f"{m['summary'].mean:.1f}" for m in means),
                format_difference(box["difference"], "baseline" if backbone == BASELINE else "–"),
                format_difference(box["difference_se"], "baseline" if backbone == SECOND_BASELINE else "–"),
            ]) + " |")  # fmt: skip
    return "\n".join(lines)


def update_readme(data: dict[str, Any], page: Path = README) -> bool:
    """Rewrite README's block between ``README_BEGIN`` and ``README_END``; True if it changed."""
    return replace_block(page, README_BEGIN, README_END, summary_table(data))


def machines_of(records: list[dict[str, Any]]) -> list[str]:
    """The distinct machines the runs trained on, with how many runs each (runs of one comparison may
    come from several sessions' machines; their wall times compare only within one machine)."""
    counts = Counter(f"{r['machine']['cpu']} ({r['machine']['cores']} cores), torch {r['versions']['torch']}" for r in records)
    return [f"{m}: {n} run{'s' if n > 1 else ''}" for m, n in counts.items()]


def _wall_time(record: dict[str, Any]) -> str:
    attempts = record.get("attempts", 1)  # older records do not count their attempts
    return f"{record['wall_time_s'] / 60:.1f} min" + (f" ({attempts} attempts)" if attempts > 1 else "")


def _pretraining(record: dict[str, Any]) -> str:
    p = record.get("pretrain")
    if not p:
        return "none"
    who = "this run" if p["trained_here"] else "kept"
    return f"{p['epochs']} epochs, {100 * p['val_accuracy']:.1f} %, {p['wall_time_s'] / 60:.1f} min ({who})"


def predictions_of(run_dir: Path) -> list[dict[str, Any]]:
    """The run's COCO-format detections (COCOEvaluator's ``coco_instances_results.json``) on the first
    PREDICTION_IMAGES validation images, score at least PREDICTION_MIN_SCORE: boxes, classes, scores
    and masks (RLE) to draw without the weights."""
    path = Path(run_dir) / "inference" / "coco_instances_results.json"
    if not path.exists():
        return []
    detections = json.loads(path.read_text())
    images = sorted({d["image_id"] for d in detections})[:PREDICTION_IMAGES]
    keep = set(images)
    return [d for d in detections if d["image_id"] in keep and d["score"] >= PREDICTION_MIN_SCORE]
