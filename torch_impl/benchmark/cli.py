"""The command line of ``python -m torch_impl.benchmark`` (``__init__`` says what each section measures)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import compiled as compiled_section
from . import sections as extra_sections
from .cpu import bench_cpu
from .models import MODELS, build_models, fused_block_tail
from .provenance import code_fingerprint, machine
from .report import load_sections, update_speed_doc, write_chart, write_markdown

EXTRA_SECTIONS = extra_sections.SECTIONS
ALL_SECTIONS = ("cpu", "cuda", "compiled", *EXTRA_SECTIONS)
DESCRIPTION = "What 3D-AFF costs over ResNet-50: python -m torch_impl.benchmark."


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
    p = _Parser(prog="python -m torch_impl.benchmark", description=DESCRIPTION)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="sections to run: cpu, cuda, or auto (cpu, and cuda when a GPU is present)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 15, --quick 3)")
    p.add_argument("--quick", action="store_true", help="few repetitions and steps, smaller CPU batch: a smoke run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cpu-batch", type=int, default=None, help="CPU throughput batch (default 32, --quick 8)")
    p.add_argument("--cuda-batch", type=int, default=256, help="training batch of the cuda and compiled sections")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per repetition, cuda and compiled sections (default 5, --quick 2)")
    p.add_argument("--profile", action="store_true", help="also write a profile: CPU operators of a batch-1 forward, CUDA kernels of a training step")
    p.add_argument("--compile", action="store_true",
                   help="run the compiled section: ResNet-50, SE-ResNet-50 and 3D-AFF-ResNet-50 trained under "
                        "torch.compile, with their eager figures beside (on the GPU; on the CPU with --device cpu)")
    p.add_argument("--compile-mode", default=None,
                   help=f"torch.compile modes of the compiled section, comma-separated, among {', '.join(compiled_section.MODES)} "
                        "(default: default); implies --compile")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor; aot_eager checks the path without code generation)")
    p.add_argument("--sections", default=None,
                   help=f"comma-separated, among {', '.join(ALL_SECTIONS)} (default: --device's "
                        "sections, and with --device auto the further sections too; --compile: compiled)")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: redraw <out>.md and <out>.png from the section files present and, for the "
                        "default --out, the speed table of docs/speed.md")
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
    if args.compile_mode is not None:
        args.compile = True
        args.compile_mode = [x.strip() for x in args.compile_mode.split(",") if x.strip()]
        unknown = sorted(set(args.compile_mode) - set(compiled_section.MODES))
        if unknown or not args.compile_mode:
            p.error(f"--compile-mode: expected some of {', '.join(compiled_section.MODES)}, got {unknown or 'none'}")
    else:
        args.compile_mode = ["default"]
    if args.sections is not None:
        args.sections = [x.strip() for x in args.sections.split(",") if x.strip()]
        unknown = sorted(set(args.sections) - set(ALL_SECTIONS))
        if unknown or not args.sections:
            p.error(f"--sections: expected some of {', '.join(ALL_SECTIONS)}, got {unknown or 'none'}")
        if "cuda" in args.sections and not torch.cuda.is_available():
            p.error("--sections cuda: no CUDA GPU is available here")
        if args.compile and "compiled" not in args.sections:
            args.sections.append("compiled")
    elif args.compile:
        args.sections = ["compiled"]
    if args.sections and "compiled" in args.sections and not torch.cuda.is_available() and args.device != "cpu":
        p.error("the compiled section: no CUDA GPU is available here (--device cpu runs it on the CPU)")
    args.compile_device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    sections = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if args.sections is not None:
        sections = args.sections
    elif args.device == "auto":  # the plain command: every section this machine can run
        sections += list(EXTRA_SECTIONS)
    if args.report_only:
        sections = []
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _user_error(f"--out {args.out}: cannot create {args.out.parent}: {e.strerror or e}")
    if not os.access(args.out.parent, os.W_OK):
        _user_error(f"--out {args.out}: {args.out.parent} is not writable")
    code = code_fingerprint()  # the code as it was loaded: what every section below measures
    command = "python -m torch_impl.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])
    models = build_models() if {"cpu", "cuda"} & set(sections) else {}
    results = {}
    for section in sections:
        t0 = time.perf_counter()
        path = args.out.parent / f"{args.out.name}_{section}.json"
        device = "cuda" if section == "cuda" or (section == "compiled" and args.compile_device == "cuda") else "cpu"

        def finish(res, device=device, path=path, t0=t0):
            res["machine"] = machine(device)
            res["code"] = code
            if models and section in ("cpu", "cuda"):
                res["fused_block_tail"] = fused_block_tail(models["aff3d_resnet50_fast"])
            res["seconds"] = round(time.perf_counter() - t0, 1)
            res["command"] = command
            path.write_text(json.dumps(res, indent=2))
            return res

        if section in EXTRA_SECTIONS:
            res = extra_sections.run(section, args)
        elif section == "cpu":
            prof = args.out.parent / f"{args.out.name}_cpu_profile.txt" if args.profile else None
            res = bench_cpu(models, args.reps, args.threads, args.image_size, args.cpu_batch, profile_path=prof)
        elif section == "cuda":
            from .cuda import bench_cuda

            prof = args.out.parent / f"{args.out.name}_cuda_profile.txt" if args.profile else None
            res = bench_cuda(models, args.reps, args.cuda_batch, args.image_size, args.steps, profile_path=prof)
            for m in models.values():
                m.cpu()
        else:  # compiled: the file is written after each mode (a time limit keeps the modes finished)
            res = compiled_section.bench_compiled(
                args.compile_mode, args.reps, args.cuda_batch, args.image_size, args.steps, device=device,
                backend=args.compile_backend, progress=lambda partial: finish(dict(partial)))
        results[section] = finish(res)
        _print(res)
    all_sections = load_sections(args.out)
    md, png = write_markdown(args.out, all_sections), write_chart(args.out, all_sections)
    wrote = [str(args.out.parent / f"{args.out.name}_{s}.json") for s in sections] + [str(md), str(png)]
    default_out = Path("docs/results/benchmark")
    if args.out.resolve() == default_out.resolve() and Path("docs/speed.md").exists():
        if update_speed_doc(Path("docs/speed.md"), args.out.parent, args.out.name):
            wrote.append("docs/speed.md (its speed table)")
    print(f"wrote {', '.join(wrote)}")
    return results


def _print(res: dict) -> None:
    if res["section"] in EXTRA_SECTIONS:
        print(extra_sections.summary(res))
    elif res["section"] == "compiled":
        print(compiled_section.summary(res))
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
