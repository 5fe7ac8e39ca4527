"""The ``compiled`` section of ``python -m torch_impl.benchmark``: training under torch.compile, as a GPU user runs it.

ResNet-50, SE-ResNet-50 and 3D-AFF-ResNet-50 (its default, fast path; ``models.COMPILED_MODELS``), each
``torch.compile(model, mode=...)`` for every mode asked (``--compile-mode default,reduce-overhead``: ``default``,
``reduce-overhead`` = CUDA graphs, ``max-autotune-no-cudagraphs``, ``max-autotune``), trained with SGD under bf16
autocast on a channels_last batch (256 on the GPU), and the same networks eager beside them. Per mode and
network: the median training-step time over interleaved repetitions (``timing``) and its ratio to ResNet-50 in the
same mode (compiled against compiled), the peak memory of a training step (``torch.cuda.max_memory_allocated``,
reset before each network's step, less what was allocated before the network was built) and its ratio, and the
compile time (the first training step, which compiles forward and backward; the later warm-up steps record the
CUDA graphs). A network that fails to compile is recorded under ``errors`` with the message, and the others
still run; the file is written after each mode, so a run stopped at a time limit keeps the modes it finished.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable

import torch
from torch import nn

from .cuda import batch_of, sgd, train_step
from .models import BASELINE, COMPILED_MODELS, COMPILED_TARGETS
from .timing import interleaved_runs, medians_ms, ratios

MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
EAGER = "eager"


def build_networks() -> dict[str, nn.Module]:
    """The compiled measurement's networks (``models.COMPILED_MODELS``), on the CPU, seed 0."""
    from .models import build_models

    return build_models(names=COMPILED_MODELS)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _counters() -> dict[str, int]:
    """dynamo's and inductor's counters that say how a compilation went (graph breaks, CUDA-graph skips,
    cache hits), flattened."""
    from torch._dynamo.utils import counters

    out = {"graph_breaks": sum(counters["graph_break"].values())}
    for group, keys in (("stats", ("unique_graphs",)),
                        ("inductor", ("cudagraph_skips", "fxgraph_cache_hit", "fxgraph_cache_miss")),
                        ("aot_autograd", ("autograd_cache_hit", "autograd_cache_miss"))):
        for key in keys:
            out[key] = int(counters[group][key])
    return out


def _error(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text if len(text) <= 2000 else text[:2000] + " [...]"


def measure_variant(mode: str | None, networks: dict[str, nn.Module], x, y, reps: int, steps: int, warmup: int = 3,
                    backend: str = "inductor") -> dict:
    """One variant: the networks eager (``mode`` None) or each under ``torch.compile(mode=mode)``; copies of
    ``networks``, so every variant starts from the same weights."""
    device = x.device.type
    cuda_graphs = mode in CUDA_GRAPH_MODES
    out = {"step_ms": {}, "train_time_ratio": {}, "peak_memory_gib": {}, "peak_memory_ratio": {}, "compile_s": {},
           "warmup_s": {}, "errors": {}, "compile_counters": {}}
    ready: dict[str, Callable[[], None]] = {}
    keep = []  # the models and optimizers alive until the variant is timed

    for name, net in networks.items():
        _sync(device)
        if device == "cuda":
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
        model = copy.deepcopy(net).to(device).to(memory_format=torch.channels_last).train()
        opt = sgd(model)
        before = _counters() if mode is not None else None
        try:
            if mode is None:
                run = model
            elif backend == "inductor":
                run = torch.compile(model, mode=mode)
            else:  # another backend (aot_eager, eager: the path without code generation) takes no mode
                run = torch.compile(model, backend=backend)
        except Exception as e:  # noqa: BLE001  (an unknown mode or backend: recorded, the others go on)
            out["errors"][name] = _error(e)
            continue

        def step(run=run, opt=opt):
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            train_step(run, opt, x, y)

        try:
            t0 = time.perf_counter()
            step()  # compiles forward and backward
            _sync(device)
            t1 = time.perf_counter()
            for _ in range(max(0, warmup - 1)):  # CUDA graphs are recorded here
                step()
            _sync(device)
            t2 = time.perf_counter()
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            step()
            _sync(device)
        except Exception as e:  # noqa: BLE001  (a network that does not compile or run: the others go on)
            out["errors"][name] = _error(e)
            del run, model, opt, step
            gc.collect()
            continue
        if mode is not None:
            out["compile_s"][name] = round(t1 - t0, 2)
            after = _counters()
            out["compile_counters"][name] = {k: after[k] - before[k] for k in after}
        out["warmup_s"][name] = round(t2 - t1, 2)
        if device == "cuda":
            out["peak_memory_gib"][name] = (torch.cuda.max_memory_allocated() - base) / 2**30
        ready[name] = step
        keep.append((model, opt))

    if ready:
        def timed(name, step):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
            return (time.perf_counter() - t0) / steps

        try:
            samples = interleaved_runs(ready, reps, timed)
        except Exception as e:  # noqa: BLE001
            out["errors"]["timing"] = _error(e)
            samples = {}
        if samples:
            out["step_ms"], _ = medians_ms(samples, lambda n: n)
            out["step_samples_ms"] = {n: [round(s * 1e3, 3) for s in v] for n, v in samples.items()}
    if BASELINE in out["step_ms"]:
        out["train_time_ratio"] = ratios(out["step_ms"], BASELINE, False)
    if BASELINE in out["peak_memory_gib"]:
        out["peak_memory_ratio"] = ratios(out["peak_memory_gib"], BASELINE, False)
    return out


def bench_compiled(modes: list[str], reps: int, batch: int, image_size: int, steps: int, device: str = "cuda",
                   warmup: int = 3, backend: str = "inductor", networks: dict[str, nn.Module] | None = None,
                   progress: Callable[[dict], None] | None = None) -> dict:
    """The eager variant, then each mode; ``progress(result_so_far)`` after each (the caller writes the file)."""
    networks = build_networks() if networks is None else networks
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    x, y = batch_of(batch, image_size, device=device)
    res = {"section": "compiled", "device": device, "batch": batch, "image_size": image_size, "amp": "bfloat16",
           "memory_format": "channels_last", "optimizer": "SGD momentum 0.9", "reps": reps, "steps_per_rep": steps,
           "warmup_steps": warmup, "backend": getattr(backend, "__name__", str(backend)), "models": list(networks), "modes": list(modes),
           "eager": None, "compiled": {}, "targets": dict(COMPILED_TARGETS),
           "memory_method": "max_memory_allocated during one training step, reset before it, less the memory "
                            "allocated before the network was built (the other networks, the batch)"}
    current = EAGER
    try:
        t0 = time.perf_counter()
        res["eager"] = measure_variant(None, networks, x, y, reps, steps, warmup)
        res["eager"]["seconds"] = round(time.perf_counter() - t0, 1)
        if progress:
            progress(res)
        for mode in modes:
            current = mode
            torch._dynamo.reset()
            t0 = time.perf_counter()
            res["compiled"][mode] = measure_variant(mode, networks, x, y, reps, steps, warmup, backend)
            res["compiled"][mode]["seconds"] = round(time.perf_counter() - t0, 1)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            if progress:
                progress(res)
    except KeyboardInterrupt:  # a time limit (SIGINT): keep what was measured
        res["interrupted"] = f"stopped while measuring {current}"
    return res


def summary(res: dict) -> str:
    """Console lines: per variant and network, step ms / time ratio, peak GiB / memory ratio, compile s."""
    lines = [f"compiled ({res['device']}, batch {res['batch']}, bf16, channels_last, backend {res['backend']}): "
             "step ms / time ratio, peak GiB / memory ratio, compile s"]
    variants = [(EAGER, res.get("eager"))] + list(res.get("compiled", {}).items())
    for mode, v in variants:
        if not v:
            continue
        for n in res["models"]:
            if n in v["errors"]:
                lines.append(f"  {mode:28s} {n:22s} error: {v['errors'][n].splitlines()[0][:120]}")
            elif n in v["step_ms"]:
                mem = (f"{v['peak_memory_gib'][n]:7.2f} {v['peak_memory_ratio'].get(n, float('nan')):6.3f}"
                       if n in v["peak_memory_gib"] else "      -      -")
                comp = f"{v['compile_s'][n]:7.1f}" if n in v["compile_s"] else "      -"
                lines.append(f"  {mode:28s} {n:22s} {v['step_ms'][n]:9.2f} "
                             f"{v['train_time_ratio'].get(n, float('nan')):6.3f}   {mem}   {comp}")
    if res.get("interrupted"):
        lines.append(f"  interrupted: {res['interrupted']}")
    return "\n".join(lines)
