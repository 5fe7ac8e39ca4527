"""The CPU section of ``python -m torch_impl.benchmark``: batch-1 latency and batch throughput, inference."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from .models import BASELINE, MODELS, TARGETS
from .provenance import machine
from .timing import interleaved_runs, load_average, ratios


def bench_cpu(models: dict, reps: int, threads: int, image_size: int, batch: int, warmup: int = 1,
              profile_path: Path | None = None) -> dict:
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, 3, image_size, image_size, generator=g)
    xb = torch.randn(batch, 3, image_size, image_size, generator=g)
    for m in models.values():
        m.cpu().eval()
    with torch.inference_mode():
        agree = float((models["aff3d_resnet50_fast"](x1) - models["aff3d_resnet50_straightforward"](x1)).abs().max())
        for m in models.values():
            for _ in range(warmup):
                m(x1)
            m(xb)

        cpu_times: dict[str, list[float]] = {n: [] for n in models}

        def once(x, record_cpu):
            def run(name, m):
                c0, t0 = time.process_time(), time.perf_counter()
                m(x)
                t1, c1 = time.perf_counter(), time.process_time()
                if record_cpu:
                    cpu_times[name].append(c1 - c0)
                return t1 - t0

            return run

        lat = interleaved_runs(models, reps, once(x1, True))
        thr = interleaved_runs(models, max(1, reps // 2), once(xb, False))
        if profile_path is not None:
            _profile_cpu(models, x1, profile_path)
    lat_ms = {n: statistics.median(v) * 1e3 for n, v in lat.items()}
    cpu_ms = {n: statistics.median(v) * 1e3 for n, v in cpu_times.items()}
    ips = {n: batch / statistics.median(v) for n, v in thr.items()}
    return {
        "section": "cpu",
        "threads": threads,
        "image_size": image_size,
        "reps": reps,
        "fast_vs_straightforward_max_abs_diff": agree,
        "latency_b1_ms": lat_ms,
        "latency_b1_ratio": ratios(lat_ms, BASELINE, False),
        "latency_b1_samples_ms": {n: [s * 1e3 for s in v] for n, v in lat.items()},
        # CPU seconds the process spent (all threads) per batch-1 forward: less sensitive than wall
        # time to other processes competing for the cores of a shared machine
        "cpu_time_b1_ms": cpu_ms,
        "cpu_time_b1_ratio": ratios(cpu_ms, BASELINE, False),
        "load_average": load_average(),
        f"throughput_b{batch}_img_s": ips,
        f"throughput_b{batch}_cost_ratio": ratios(ips, BASELINE, True),
        "throughput_batch": batch,
        "targets": {"latency_b1_ratio": TARGETS["cpu_latency_b1"]},
    }


def cpu_operator_times(model: nn.Module, x: torch.Tensor, reps: int = 10) -> dict[str, float]:
    """Self CPU time per forward (ms) of each operator (torch.profiler), no autograd."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            model(x)
    return {e.key: e.self_cpu_time_total / reps / 1e3 for e in prof.key_averages()}


def _profile_cpu(models, x, path: Path, rows: int = 14) -> None:
    """Where the batch-1 forward's extra time goes: each model's operators beside ResNet-50's."""
    per = {n: cpu_operator_times(models[n], x) for n in MODELS}
    base = per[BASELINE]
    lines = [f"Self CPU time per batch-1 forward (ms) by operator, torch.profiler on ({torch.get_num_threads()} "
             f"threads, image {x.shape[-1]}); columns: model, ResNet-50, difference. {machine('cpu')['cpu']}."]
    for n in MODELS[1:]:
        ops = set(per[n]) | set(base)
        diff = {k: per[n].get(k, 0.0) - base.get(k, 0.0) for k in ops}
        total, btotal = sum(per[n].values()), sum(base.values())
        lines.append(f"\n== {n}: {total:.2f} ms, ResNet-50 {btotal:.2f} ms, {total - btotal:+.2f} ms ==")
        for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:rows]:
            lines.append(f"  {k:36s} {per[n].get(k, 0.0):9.3f} {base.get(k, 0.0):9.3f} {v:+9.3f}")
    path.write_text("\n".join(lines) + "\n")
