"""The CUDA section of ``python -m torch_impl.benchmark``: training time and peak memory against ResNet-50, eager.

A training step is an SGD step under bf16 autocast on a channels_last batch. Peak memory is each model
alone on the GPU. Times are medians of interleaved repetitions in one process; ``--profile`` also writes
where a step's GPU time goes. Under torch.compile: the ``compiled`` section (``compiled.py``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from .models import BASELINE, TARGETS
from .timing import interleaved_runs, ratios

PROFILED = ("resnet50", "aff3d_resnet50_fast")


def train_step(model, opt, x, y) -> None:
    """One SGD step under bf16 autocast (on the device of ``x``)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


def batch_of(batch: int, image_size: int, device: str = "cuda", classes: int = 1000):
    """A channels_last batch of random images and labels (seed 0)."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, device=device, generator=g)
    y = torch.randint(0, classes, (batch,), device=device, generator=g)
    return x.contiguous(memory_format=torch.channels_last), y


def bench_cuda(models: dict, reps: int, batch: int, image_size: int, steps: int, warmup: int = 3,
               profile_path: Path | None = None) -> dict:
    torch.backends.cudnn.benchmark = True
    x, y = batch_of(batch, image_size)
    opts = {}
    peak = {}
    # Peak memory: each model alone on the GPU (weights, gradients, momentum and activations).
    for n, m in models.items():
        m.cuda().to(memory_format=torch.channels_last).train()
        opts[n] = sgd(m)
        for _ in range(warmup):
            train_step(m, opts[n], x, y)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        train_step(m, opts[n], x, y)
        torch.cuda.synchronize()
        peak[n] = torch.cuda.max_memory_allocated() / 2**30
        m.cpu()
        opts[n].state.clear()  # momentum buffers follow on the next step
        torch.cuda.empty_cache()
    for m in models.values():
        m.cuda()
    for n, m in models.items():
        for _ in range(warmup):
            train_step(m, opts[n], x, y)
    torch.cuda.synchronize()

    def run(name, m):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(m, opts[name], x, y)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps

    samples = interleaved_runs(models, reps, run)
    ips = {n: batch / statistics.median(v) for n, v in samples.items()}
    if profile_path is not None:
        _profile(models, opts, x, y, profile_path)
    return {
        "section": "cuda",
        "compiled": False,
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
    for n in PROFILED:
        m = models[n]
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                train_step(m, opts[n], x, y)
            torch.cuda.synchronize()
        lines += [f"== {n}: 2 training steps ==", prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)]
    path.write_text("\n".join(lines))
