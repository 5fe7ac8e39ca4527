"""The benchmark's report: ``<prefix>.md`` and ``<prefix>.png`` from every section file present.

Each section file records the machine and a fingerprint of the code it measured (``code_id``: the
attention modules, the kernels and the networks). A section whose fingerprint differs from the code
of the checkout is marked **stale** in the table, so figures from an older fast path (a GPU run
taken months ago, say) are never read as today's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import benchmark_sections

MODELS = ("resnet50", "se_resnet50", "aff3d_resnet50_straightforward", "aff3d_resnet50_fast")
BASELINE = "resnet50"
TARGETS = {"cpu_latency_b1": 1.10, "cuda_train_time": 1.10, "cuda_peak_memory": 1.10}
# Section files written before the straightforward implementation had its name read as the new names.
_RENAMED = {"aff3d_resnet50_reference": "aff3d_resnet50_straightforward",
            "fast_vs_reference_max_abs_diff": "fast_vs_straightforward_max_abs_diff"}
# The code whose speed the benchmark measures.
_MEASURED = ("attention", "kernels", "models")


def code_id() -> str:
    """sha256 (12 hex digits) over the measured packages' Python sources, in path order."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for package in _MEASURED:
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def freshness(section: dict) -> str:
    """'' when the section measured this code, else why its figures may not hold any more."""
    measured = section.get("machine", {}).get("code_id")
    if measured is None:
        return "stale: measured before the code fingerprint was recorded"
    current = code_id()
    return "" if measured == current else f"stale: measured on code {measured}, the checkout is {current}"


_LABELS = {
    "resnet50": "ResNet-50 (torchvision)",
    "se_resnet50": "SE-ResNet-50",
    "aff3d_resnet50_straightforward": "3D-AFF-ResNet-50, straightforward",
    "aff3d_resnet50_fast": "3D-AFF-ResNet-50, fast",
    "aff3d_resnet50_fast_table": "3D-AFF-ResNet-50, fast, table gate where it fits (AFF3D_TABLE=1)",
}


def load_sections(prefix: Path) -> dict[str, dict]:
    """Every ``<prefix>_<section>.json`` present, by section name."""
    out = {}
    for section in ("cpu", "cuda", *benchmark_sections.SECTIONS):
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
    why = "" if section.get("skipped") else freshness(section)
    return [f"**{why}**", ""] if why else []


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
    lines += benchmark_sections.markdown(sections, notes=_stale_line)
    path = prefix.parent / f"{prefix.name}.md"
    path.write_text("\n".join(lines))
    return path


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
