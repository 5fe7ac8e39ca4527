"""The CUDA section of ``python -m torch_impl.benchmark``: training time and peak memory against ResNet-50.

A training step is an SGD step under bf16 autocast on a channels_last batch. Peak memory is each model
alone on the GPU. Times are medians of interleaved repetitions in one process; ``--profile`` also writes
where a step's GPU time goes. ``--compile`` times ResNet-50 and the fast 3D-AFF under torch.compile.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from .benchmark_report import BASELINE, TARGETS
from .benchmark_timing import interleaved_runs, ratios


def _train_step(model, opt, x, y):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


# The CUDA section also times the fast model with the table gate where ``aff3d_fast.CUDA_TABLE_MIN`` lets it
# run (``AFF3D_TABLE=1``; the default is the product form everywhere), same weights: the two forms side by side.
TABLE_FORM = "aff3d_resnet50_fast_table"
# Under ``--compile`` the section times these (inductor's compilation of every model would not fit a short
# GPU session); under torch.compile the fast path takes its plain-autograd route (``aff3d_fast.choose_route``).
COMPILED_MODELS = ("resnet50", "aff3d_resnet50_fast")
_ENV_OF = {TABLE_FORM: {"AFF3D_TABLE": "1"}}


def _env_of(name: str):
    """The environment model ``name`` is timed under (``_ENV_OF``), restored on exit."""
    return mock.patch.dict(os.environ, _ENV_OF.get(name, {}))


def bench_cuda(models: dict, reps: int, batch: int, image_size: int, steps: int, warmup: int = 3,
               profile_path: Path | None = None, compiled: bool = False) -> dict:
    if compiled:  # each model under torch.compile (inductor); the fast path then runs as plain autograd
        models = {n: torch.compile(models[n]) for n in COMPILED_MODELS}
    else:
        models = {**models, TABLE_FORM: copy.deepcopy(models["aff3d_resnet50_fast"])}
    torch.backends.cudnn.benchmark = True
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, device="cuda", generator=g).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda", generator=g)
    opts = {}
    peak = {}
    # Peak memory: each model alone on the GPU (weights, gradients, momentum and activations).
    for n, m in models.items():
        m.cuda().to(memory_format=torch.channels_last).train()
        opts[n] = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        with _env_of(n):
            for _ in range(warmup):
                _train_step(m, opts[n], x, y)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            _train_step(m, opts[n], x, y)
            torch.cuda.synchronize()
        peak[n] = torch.cuda.max_memory_allocated() / 2**30
        m.cpu()
        opts[n].state.clear()  # momentum buffers follow on the next step
        torch.cuda.empty_cache()
    for m in models.values():
        m.cuda()
    for n, m in models.items():
        with _env_of(n):
            for _ in range(warmup):
                _train_step(m, opts[n], x, y)
    torch.cuda.synchronize()

    def run(name, m):
        with _env_of(name):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                _train_step(m, opts[name], x, y)
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps

    samples = interleaved_runs(models, reps, run)
    ips = {n: batch / statistics.median(v) for n, v in samples.items()}
    if profile_path is not None and not compiled:
        _profile(models, opts, x, y, profile_path)
    return {
        "section": "cuda",
        "compiled": compiled,
        "batch": batch,
        "image_size": image_size,
        "amp": "bfloat16",
        "memory_format": "channels_last",
        "reps": reps,
        "steps_per_rep": steps,
        "train_img_s": ips,
        "train_time_ratio": ratios(ips, BASELINE, True),
        "train_step_samples_ms": {n: [s * 1e3 for s in v] for n, v in samples.items()},
        "peak_memory_gib": peak,
        "peak_memory_ratio": ratios(peak, BASELINE, False),
        "targets": {"train_time_ratio": TARGETS["cuda_train_time"], "peak_memory_ratio": TARGETS["cuda_peak_memory"]},
    }


def _profile(models, opts, x, y, path: Path) -> None:
    """Where a training step's GPU time goes, per model (torch.profiler, CUDA kernels by total time)."""
    from torch.profiler import ProfilerActivity, profile

    lines = []
    for n in ("resnet50", "aff3d_resnet50_fast", TABLE_FORM):
        m = models[n]
        with _env_of(n), profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                _train_step(m, opts[n], x, y)
            torch.cuda.synchronize()
        lines += [f"== {n}: 2 training steps ==", prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)]
    path.write_text("\n".join(lines))
