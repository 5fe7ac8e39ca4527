"""What 3D-AFF costs over ResNet-50: ``python -m torch_impl.benchmark``.

One process, all models built up front, repetitions interleaved (each repetition times every model
once, in a rotating order, so that drifting clocks, caches and background load hit all of them
alike), medians over repetitions, ratios against torchvision's ``resnet50``:

    cpu     batch-1 latency at 224 x 224 (the paper's measure, section 4.3: 185 / 188 / 209 ms for
            ResNet-50 / SE / 3D-AFF on an 8-core desktop CPU) and batch-32 throughput, inference,
            on ``--threads`` threads (2 by default)
    cuda    training images/s (SGD step, bf16 autocast, channels_last, batch 256) and the peak
            memory of a training step, each model measured alone on the GPU (``benchmark_cuda``)

Models: torchvision ``resnet50``, our ``se_resnet50``, and ``aff3d_resnet50`` twice, with the
straightforward (``impl="straightforward"``) and the fast (``impl="fast"``, default) 3D-AFF, same weights.
The targets it reports against, as cost ratios to ResNet-50 (lower is better): CPU latency <= 1.10,
CUDA training time <= 1.10, peak training memory <= 1.10.

Further sections (``benchmark_sections``): ``small`` (CPU training step of the notebooks' small
networks), ``table`` (the table gate: arithmetic floor and channels_last inference) and
``detection`` (the detectron2 backbone's training step); the plain command (``--device auto``) runs
them too, ``--sections`` chooses any set.

Writes ``<prefix>_<section>.json`` per section run and redraws ``<prefix>.png`` and ``<prefix>.md``
(``benchmark_report``) from every section file present (so a CPU run here and a CUDA run on a GPU machine end up in one
table, each with its machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from . import benchmark_sections
from .benchmark_timing import interleaved_runs, ratios
from .benchmark_report import BASELINE, MODELS, TARGETS, code_id, load_sections, write_chart, write_markdown

EXTRA_SECTIONS = benchmark_sections.SECTIONS


# ------------------------------------------------------------------------------------------------
# Models and machine
# ------------------------------------------------------------------------------------------------


def build_models(seed: int = 0) -> dict[str, nn.Module]:
    """The four models, randomly initialised (timing needs no trained weights); the two 3D-AFF
    variants share one set of weights."""
    import torchvision

    from .attention.aff3d import AFF3D
    from .models.registry import create_model

    torch.manual_seed(seed)
    models = {"resnet50": torchvision.models.resnet50(), "se_resnet50": create_model("se_resnet50")}
    ref = create_model("aff3d_resnet50")
    fast = create_model("aff3d_resnet50")
    fast.load_state_dict(ref.state_dict())
    for model, impl in ((ref, "straightforward"), (fast, "fast")):
        for m in model.modules():
            if isinstance(m, AFF3D):
                m.impl = impl
    models["aff3d_resnet50_straightforward"], models["aff3d_resnet50_fast"] = ref, fast
    return models


def fused_block_tail(model: nn.Module) -> bool:
    """Whether the model's residual blocks take the fused, memory-saving tail (``Bottleneck.fused_tail``)."""
    from .models.blocks import Bottleneck

    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    return bool(blocks) and all(b.fused_tail for b in blocks)


def machine(device: str) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_id": code_id(),  # the measured code's fingerprint: the report marks older figures stale
    }
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratios(values: dict[str, float], higher_is_better: bool) -> dict[str, float]:
    """Cost ratio to ResNet-50 (``benchmark_timing.ratios`` against BASELINE)."""
    return ratios(values, BASELINE, higher_is_better)


# ------------------------------------------------------------------------------------------------
# CPU inference
# ------------------------------------------------------------------------------------------------


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
        "latency_b1_ratio": _ratios(lat_ms, False),
        "latency_b1_samples_ms": {n: [s * 1e3 for s in v] for n, v in lat.items()},
        # CPU seconds the process spent (all threads) per batch-1 forward: less sensitive than wall
        # time to other processes competing for the cores of a shared machine
        "cpu_time_b1_ms": cpu_ms,
        "cpu_time_b1_ratio": _ratios(cpu_ms, False),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        f"throughput_b{batch}_img_s": ips,
        f"throughput_b{batch}_cost_ratio": _ratios(ips, True),
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


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a user mistake: one line, exit status 2
        self.exit(2, f"error: {message}\n")


def _user_error(message: str):
    """Say a user mistake on one line and exit with status 2 (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="python -m torch_impl.benchmark", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="sections to run: cpu, cuda, or auto (cpu, and cuda when a GPU is present)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 15, --quick 3)")
    p.add_argument("--quick", action="store_true", help="few repetitions and steps, smaller CPU batch: a smoke run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cpu-batch", type=int, default=None, help="CPU throughput batch (default 32, --quick 8)")
    p.add_argument("--cuda-batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="CUDA training steps per repetition (default 5, --quick 2)")
    p.add_argument("--profile", action="store_true", help="also write a profile: CPU operators of a batch-1 forward, CUDA kernels of a training step")
    p.add_argument("--compile", action="store_true",
                   help="CUDA section: ResNet-50 and the fast 3D-AFF-ResNet-50 under torch.compile "
                        "(write it with its own --out)")
    p.add_argument("--sections", default=None,
                   help=f"comma-separated, among cpu, cuda, {', '.join(EXTRA_SECTIONS)} (default: --device's "
                        "sections, and with --device auto the further sections too)")
    p.add_argument("--out", type=Path, default=Path("docs/results/benchmark"),
                   help="output prefix (default docs/results/benchmark)")
    args = p.parse_args(argv)
    if args.reps is None:
        args.reps = 3 if args.quick else 15
    if args.cpu_batch is None:
        args.cpu_batch = 8 if args.quick else 32
    if args.steps is None:
        args.steps = 2 if args.quick else 5
    if min(args.reps, args.steps, args.cpu_batch, args.cuda_batch, args.threads, args.image_size) < 1:
        p.error("--reps, --steps, --cpu-batch, --cuda-batch, --threads and --image-size must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available here")
    if args.sections is not None:
        args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
        unknown = sorted(set(args.sections) - {"cpu", "cuda", *EXTRA_SECTIONS})
        if unknown or not args.sections:
            p.error(f"--sections: expected some of cpu, cuda, {', '.join(EXTRA_SECTIONS)}, got {unknown or 'none'}")
        if "cuda" in args.sections and not torch.cuda.is_available():
            p.error("--sections cuda: no CUDA GPU is available here")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    sections = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.sections is not None:
        sections = args.sections
    elif args.device == "auto":  # the plain command: every section this machine can run
        sections += list(EXTRA_SECTIONS)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _user_error(f"--out {args.out}: cannot create {args.out.parent}: {e.strerror or e}")
    if not os.access(args.out.parent, os.W_OK):
        _user_error(f"--out {args.out}: {args.out.parent} is not writable")
    models = build_models() if {"cpu", "cuda"} & set(sections) else {}
    results = {}
    for section in sections:
        t0 = time.perf_counter()
        if section in EXTRA_SECTIONS:
            res = benchmark_sections.run(section, args)
        elif section == "cpu":
            prof = args.out.parent / f"{args.out.name}_cpu_profile.txt" if args.profile else None
            res = bench_cpu(models, args.reps, args.threads, args.image_size, args.cpu_batch, profile_path=prof)
        else:
            prof = args.out.parent / f"{args.out.name}_cuda_profile.txt" if args.profile else None
            from .benchmark_cuda import bench_cuda  # (here: benchmark_cuda imports this module)

            res = bench_cuda(models, args.reps, args.cuda_batch, args.image_size, args.steps, profile_path=prof,
                             compiled=args.compile)
            for m in models.values():
                m.cpu()
        res["machine"] = machine("cuda" if section == "cuda" else "cpu")
        if models:
            res["fused_block_tail"] = fused_block_tail(models["aff3d_resnet50_fast"])
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["command"] = "python -m torch_impl.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
        path = args.out.parent / f"{args.out.name}_{section}.json"
        path.write_text(json.dumps(res, indent=2))
        results[section] = res
        _print(res)
    all_sections = load_sections(args.out)
    md, png = write_markdown(args.out, all_sections), write_chart(args.out, all_sections)
    print(f"wrote {', '.join(str(args.out.parent / f'{args.out.name}_{s}.json') for s in sections)}, {md}, {png}")
    return results


def _print(res: dict) -> None:
    if res["section"] in EXTRA_SECTIONS:
        print(benchmark_sections.summary(res))
    elif res["section"] == "cpu":
        b = res["throughput_batch"]
        print(f"CPU ({res['threads']} threads, image {res['image_size']}): latency b1 ms / ratio, "
              f"CPU time b1 ms / ratio, throughput b{b} img/s / cost ratio")
        for n in MODELS:
            print(f"  {n:28s} {res['latency_b1_ms'][n]:9.2f} {res['latency_b1_ratio'][n]:6.3f}   "
                  f"{res['cpu_time_b1_ms'][n]:9.2f} {res['cpu_time_b1_ratio'][n]:6.3f}   "
                  f"{res[f'throughput_b{b}_img_s'][n]:8.2f} {res[f'throughput_b{b}_cost_ratio'][n]:6.3f}")
    else:
        print(f"CUDA training (batch {res['batch']}, bf16, channels_last): img/s / time ratio, peak GiB / ratio")
        for n in [*(k for k in MODELS if k in res["train_img_s"]), *(k for k in res["train_img_s"] if k not in MODELS)]:
            print(f"  {n:28s} {res['train_img_s'][n]:9.1f} {res['train_time_ratio'][n]:6.3f}   "
                  f"{res['peak_memory_gib'][n]:8.2f} {res['peak_memory_ratio'][n]:6.3f}")


if __name__ == "__main__":
    main()
