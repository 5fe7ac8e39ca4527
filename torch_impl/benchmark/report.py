"""The benchmark's report: ``<prefix>.md`` and ``<prefix>.png`` from every section file present, and the speed
table of ``docs/speed.md`` (``speed_table``) from the committed section files.

Each section file records the machine and the fingerprint of the code it measured (``provenance``). A section
whose fingerprint differs from the code checked out here is labelled "older code (measured YYYY-MM-DD)", so
figures from an older fast path (a GPU run taken weeks ago, say) are never read as today's.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..marked_block import read_block, replace_block
from . import sections as extra_sections
from .models import BASELINE, MODELS, TARGETS
from .provenance import freshness, label, matches_current, measured_fingerprint

SECTION_NAMES = ("cpu", "cuda", "compiled", *extra_sections.SECTIONS)
# Section files written before the straightforward implementation had its name read as the new names.
_RENAMED = {"aff3d_resnet50_reference": "aff3d_resnet50_straightforward",
            "fast_vs_reference_max_abs_diff": "fast_vs_straightforward_max_abs_diff"}

__all__ = ["BASELINE", "MODELS", "TARGETS", "freshness", "label", "matches_current", "load_sections",
           "write_markdown", "write_chart", "speed_table", "update_speed_doc"]


_LABELS = {
    "resnet50": "ResNet-50 (torchvision)",
    "se_resnet50": "SE-ResNet-50",
    "aff3d_resnet50_straightforward": "3D-AFF-ResNet-50, straightforward",
    "aff3d_resnet50_fast": "3D-AFF-ResNet-50, fast",
    # a variant that files measured before 2026-12-04 carry (the table gate on CUDA, since dropped)
    "aff3d_resnet50_fast_table": "3D-AFF-ResNet-50, fast, table gate where it fits (AFF3D_TABLE=1)",
}


def load_sections(prefix: Path) -> dict[str, dict]:
    """Every ``<prefix>_<section>.json`` present, by section name."""
    out = {}
    for section in SECTION_NAMES:
        p = prefix.parent / f"{prefix.name}_{section}.json"
        if p.exists():
            out[section] = _renamed(json.loads(p.read_text()))
    return out


def _renamed(obj):
    """``obj`` with the keys of ``_RENAMED`` under their current names, at any depth."""
    if isinstance(obj, dict):
        return {_RENAMED.get(k, k): _renamed(v) for k, v in obj.items()}
    return obj


def _stale_line(section: dict) -> list[str]:
    if section.get("skipped") or matches_current(section):
        return []
    measured = measured_fingerprint(section) or section.get("machine", {}).get("code_id")
    why = (f"the code fingerprint it records, {measured[:12]}, is not the checkout's" if measured
           else "measured before the code fingerprint was recorded")
    return [f"**{label(section)}**: {why}", ""]


def write_markdown(prefix: Path, sections: dict) -> Path:
    lines = ["# Benchmark: 3D-AFF-ResNet-50 against ResNet-50", "",
             "Written by `python -m torch_impl.benchmark`; cost ratios to torchvision's ResNet-50 "
             "(time or memory over ResNet-50's; lower is better), medians over interleaved repetitions.", ""]
    if "cpu" in sections:
        s = sections["cpu"]
        m = s["machine"]
        b = s["throughput_batch"]
        lines += [f"## CPU inference ({m['cpu']}, {s['threads']} thread(s), torch {m['torch']}, {m['date']})", "",
                  *_stale_line(s),
                  f"| model | latency b1 (ms) | ratio | CPU time b1 (ms) | ratio | throughput b{b} (img/s) "
                  "| cost ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for n in MODELS:
            lines.append(f"| {_LABELS[n]} | {s['latency_b1_ms'][n]:.1f} | {s['latency_b1_ratio'][n]:.3f} | "
                         f"{s['cpu_time_b1_ms'][n]:.1f} | {s['cpu_time_b1_ratio'][n]:.3f} | "
                         f"{s[f'throughput_b{b}_img_s'][n]:.2f} | {s[f'throughput_b{b}_cost_ratio'][n]:.3f} |")
        lines += ["", f"Target: latency ratio <= {TARGETS['cpu_latency_b1']} for the fast 3D-AFF "
                      f"(paper: 209 / 185 = 1.13). Image {s['image_size']}, {s['reps']} repetitions; "
                      f"1-minute load average at the end {s.get('load_average') or 0:.2f} (CPU time is the process's "
                      "own, all threads: the steadier measure on a shared machine).", ""]
        if s.get("note"):
            lines += [f"Note: {s['note']}", ""]
    if "cuda" in sections:
        s = sections["cuda"]
        m = s["machine"]
        lines += [f"## CUDA training ({m['gpu']}, batch {s['batch']}, bf16 autocast, channels_last, "
                  f"{'torch.compile, ' if s.get('compiled') else ''}"
                  f"torch {m['torch']}, triton {m.get('triton')}, {m['date']})", "",
                  *_stale_line(s),
                  "| model | train img/s | time ratio | peak memory (GiB) | memory ratio |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for n in [*(k for k in MODELS if k in s["train_img_s"]), *(k for k in s["train_img_s"] if k not in MODELS)]:
            lines.append(f"| {_LABELS.get(n, n)} | {s['train_img_s'][n]:.0f} | {s['train_time_ratio'][n]:.3f} | "
                         f"{s['peak_memory_gib'][n]:.2f} | {s['peak_memory_ratio'][n]:.3f} |")
        lines += ["", f"Targets: time ratio <= {TARGETS['cuda_train_time']}, memory ratio <= "
                      f"{TARGETS['cuda_peak_memory']}. Fused block tail in the blocks: "
                      f"{s.get('fused_block_tail')}.", ""]
        if s.get("note"):
            lines += [f"Note: {s['note']}", ""]
    if "compiled" in sections:
        lines += _compiled_markdown(sections["compiled"])
    lines += extra_sections.markdown(sections, notes=_stale_line)
    path = prefix.parent / f"{prefix.name}.md"
    path.write_text("\n".join(lines))
    return path


def _machine_words(s: dict) -> str:
    m = s["machine"]
    if "gpu" in m:
        return f"{m['gpu']}, torch {m['torch']}, Triton {m.get('triton')}"
    load = s.get("load_average", s.get("load_average_before"))
    threads = f", {s['threads']} thread(s)" if "threads" in s else ""
    return (f"{m['cpu']}, {m.get('cpu_count')} cores{threads}, torch {m['torch']}"
            + (f", load {load:.1f}" if isinstance(load, (int, float)) else ""))


def _compiled_markdown(s: dict) -> list[str]:
    m = s["machine"]
    where = m.get("gpu", m.get("cpu"))
    lines = [f"## Training under torch.compile ({where}, batch {s['batch']}, bf16 autocast, channels_last, "
             f"backend {s['backend']}, torch {m['torch']}, triton {m.get('triton')}, {m['date']})", "",
             *_stale_line(s),
             "Ratios within each mode (compiled against compiled ResNet-50). Compile: the first training step.", "",
             "| mode | network | step (ms) | time ratio | peak memory (GiB) | memory ratio | compile (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    variants = [("eager", s.get("eager"))] + list(s.get("compiled", {}).items())
    for mode, v in variants:
        if not v:
            continue
        for n in s["models"]:
            if n in v["errors"]:
                first = v["errors"][n].splitlines()[0][:160].replace("|", "\\|")
                lines.append(f"| {mode} | {_LABELS.get(n, n)} | error: {first} | | | | |")
            elif n in v["step_ms"]:
                def num(d, fmt):
                    return format(d[n], fmt) if n in d else "–"
                lines.append(f"| {mode} | {_LABELS.get(n, n)} | {v['step_ms'][n]:.1f} | "
                             f"{num(v['train_time_ratio'], '.3f')} | {num(v['peak_memory_gib'], '.2f')} | "
                             f"{num(v['peak_memory_ratio'], '.3f')} | {num(v['compile_s'], '.1f')} |")
    t = s["targets"]
    lines += ["", f"Targets (not claimed): time ratio <= {t['train_time_ratio_compiled']} compiled "
                  f"(moonshot {t['train_time_ratio_compiled_moonshot']}), <= {t['train_time_ratio_eager']} eager; "
                  f"peak memory ratio <= {t['peak_memory_ratio']}. {s['reps']} repetitions of {s['steps_per_rep']} "
                  "steps.", ""]
    if s.get("interrupted"):
        lines += [f"Interrupted: {s['interrupted']}; the modes before it are complete.", ""]
    return lines


# ------------------------------------------------------------------------------------------------
# The speed table of docs/speed.md
# ------------------------------------------------------------------------------------------------

SPEED_DOC = Path(__file__).resolve().parents[2] / "docs" / "speed.md"
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
SPEED_BEGIN = ("<!-- speed table: written by torch_impl.benchmark.report.speed_table from docs/results/benchmark_*.json "
               "(python -m torch_impl.benchmark --report-only rewrites it); do not edit by hand -->")
SPEED_END = "<!-- end of speed table -->"
_SPEED_HEAD = ["| cost over the plain network (torchvision's ResNet-50, or ResNet-20) | machine | SE | "
               "3D-AFF straightforward | 3D-AFF fast | target | measured on |",
               "| --- | --- | ---: | ---: | ---: | ---: | --- |"]


def _cell(ratios: dict, key: str | None, errors: dict | None = None) -> str:
    if key is None:
        return "–"
    if errors and key in errors:
        return "error"
    return f"{ratios[key]:.3f}" if key in ratios else "–"


def _target(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def speed_rows(results: Path = RESULTS, prefix: str = "benchmark") -> list[tuple]:
    """(what, machine, SE, 3D-AFF straightforward, 3D-AFF fast, target, measured on) per row, from the
    section files ``<results>/<prefix>_<section>.json`` present."""
    sections = load_sections(results / prefix)
    rows = []

    def row(what, s, ratios, keys, target, errors=None):
        rows.append((what, _machine_words(s), *(_cell(ratios, k, errors) for k in keys), target, label(s)))

    aff = ("se_resnet50", "aff3d_resnet50_straightforward", "aff3d_resnet50_fast")
    s = sections.get("cpu")
    if s:
        b = s["throughput_batch"]
        row(f"CPU latency, batch 1, {s['image_size']} px", s, s["latency_b1_ratio"], aff,
            _target(s.get("targets", {}).get("latency_b1_ratio")))
        row(f"CPU throughput cost, batch {b}", s, s[f"throughput_b{b}_cost_ratio"], aff,
            _target(TARGETS["cpu_throughput"]))
    s = sections.get("small")
    if s:
        for layout, words in (("nchw", "NCHW"), ("nhwc", "channels_last")):
            keys = [f"{n}_{layout}" for n in ("se_resnet20_cifar", "aff3d_resnet20_cifar_straightforward",
                                              "aff3d_resnet20_cifar_fast")]
            row(f"CPU training step, notebooks' ResNet-20 (batch {s['batch']}, {s['image_size']} px), {words}", s,
                s["step_ratio"], keys, _target(s.get("target")))
    s = sections.get("detection")
    if s and not s.get("skipped"):
        row(f"detectron2 backbone training step, R50-FPN ({s['norm']}, batch {s['batch']}, {s['image_size']} px)", s,
            s["step_ratio"], (None, "aff3d_r50_fpn_straightforward", "aff3d_r50_fpn"), _target(s.get("target")))
    s = sections.get("cuda")
    if s:
        what = f"GPU training time, batch {s['batch']}, bf16, channels_last{', torch.compile' if s.get('compiled') else ''}"
        row(what, s, s["train_time_ratio"], aff, _target(s.get("targets", {}).get("train_time_ratio")))
        row("GPU peak training memory", s, s["peak_memory_ratio"], aff,
            _target(s.get("targets", {}).get("peak_memory_ratio")))
    s = sections.get("compiled")
    if s:
        t = s["targets"]
        keys = ("se_resnet50", None, "aff3d_resnet50_fast")
        where = "GPU" if s.get("device", "cuda") == "cuda" else "CPU"
        variants = [("eager", s.get("eager"), _target(t["train_time_ratio_eager"]))]
        variants += [(f"torch.compile mode {mode}", v,
                      f"{_target(t['train_time_ratio_compiled'])} ({_target(t['train_time_ratio_compiled_moonshot'])})")
                     for mode, v in s.get("compiled", {}).items()]
        for words, v, target in variants:
            if not v:
                continue
            row(f"{where} training time, {words}, batch {s['batch']}, bf16, channels_last", s, v["train_time_ratio"],
                keys, target, v["errors"])
            if v["peak_memory_ratio"] or where == "GPU":
                row(f"{where} peak training memory, {words}", s, v["peak_memory_ratio"], keys,
                    _target(t["peak_memory_ratio"]), v["errors"])
    return rows


def speed_table(results: Path = RESULTS, prefix: str = "benchmark") -> str:
    """The markdown table of ``docs/speed.md``: one row per measured cost, each labelled "current code" or
    "older code (measured YYYY-MM-DD)" by the code fingerprint its file records."""
    lines = [*_SPEED_HEAD]
    lines += ["| " + " | ".join(r) + " |" for r in speed_rows(results, prefix)]
    return "\n".join(lines)


def speed_doc_table(doc: Path = SPEED_DOC) -> str:
    """The table between the markers of ``docs/speed.md``, as committed."""
    return read_block(doc, SPEED_BEGIN, SPEED_END)


def update_speed_doc(doc: Path = SPEED_DOC, results: Path = RESULTS, prefix: str = "benchmark") -> bool:
    """Rewrite the table between the markers of ``doc`` from the section files; whether it changed."""
    return replace_block(doc, SPEED_BEGIN, SPEED_END, speed_table(results, prefix))


def write_chart(prefix: Path, sections: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "cpu" in sections:
        s = sections["cpu"]
        b = s["throughput_batch"]
        panels += [(f"CPU latency, batch 1\n({s['threads']} thread(s))", s["latency_b1_ratio"],
                    TARGETS["cpu_latency_b1"]),
                   (f"CPU throughput cost, batch {b}", s[f"throughput_b{b}_cost_ratio"], None)]
    if "cuda" in sections:
        s = sections["cuda"]
        panels += [(f"CUDA training time, batch {s['batch']}\n({s['machine']['gpu']})", s["train_time_ratio"],
                    TARGETS["cuda_train_time"]),
                   ("CUDA peak training memory", s["peak_memory_ratio"], TARGETS["cuda_peak_memory"])]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 4), squeeze=False)
    colors = ["#888888", "#4c72b0", "#dd8452", "#55a868"]
    for ax, (title, ratios, target) in zip(axes[0], panels):
        shown = [i for i, n in enumerate(MODELS) if n in ratios]
        vals = [ratios[MODELS[i]] for i in shown]
        bars = ax.bar(range(len(shown)), vals, color=[colors[i] for i in shown])
        for bar, v in zip(bars, vals):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        if target is not None:
            ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"target {target}")
            ax.legend(fontsize=8, loc="upper left")
        ax.set_xticks(range(len(shown)), [["R50", "SE", "3D-AFF\nstraight", "3D-AFF\nfast"][i] for i in shown], fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("cost ratio to ResNet-50")
        ax.set_ylim(0, max(vals + [target or 0]) * 1.2)
    fig.tight_layout()
    path = prefix.parent / f"{prefix.name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
