"""Sections of ``python -m torch_impl.benchmark`` beyond ResNet-50 inference and CUDA training.

    small      CPU training step of the notebooks' small networks (resnet20_cifar family, 8 classes,
               24 px, batch 32, one thread, SGD): plain vs SE vs 3D-AFF, each 3D-AFF path, in NCHW
               and in channels_last (ratios within one layout)
    table      the table gate: multiply-accumulates of each 3D-AFF path over ResNet-50 (the
               arithmetic floor), and CPU inference of 3D-AFF-ResNet-50 through the table against
               ResNet-50, channels_last, batch 1 and a batch
    routes     where CPU training leaves the fast forms for the autograd route: one module's
               forward + backward per route at the notebooks' shapes (``torch_impl.benchmark.routes``)
    detection  a training step of the detectron2 backbone (3D-AFF-R50-FPN against R50-FPN); skipped,
               with the reason, where detectron2 is not installed

Same protocol as the benchmark: one process, models built up front, repetitions interleaved in a
rotating order, medians; each section records the machine's load average beside its figures.
The fast path's dispatch (``aff3d_fast``) serves the table gate in CPU channels_last training;
``use_table_gate`` routes a model's 3D-AFF modules to ``attention.aff3d_fast.table_gate.table_forward`` in
every mode (inference too), to measure it where the dispatch keeps the product form.
"""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

from . import breakdown
from .timing import interleaved_calls, load_average, medians_ms, paired_ratio_quartiles

SECTIONS = ("small", "table", "routes", "detection")
SMALL = ("resnet20_cifar", "se_resnet20_cifar", "aff3d_resnet20_cifar")


def use_table_gate(model: nn.Module) -> int:
    """Route every 3D-AFF module that the table serves to ``table_gate.table_forward`` (its forward
    and the blocks' ``gate_add_relu``); returns how many modules were routed."""
    from ..attention.aff3d import AFF3D
    from ..attention.aff3d_fast import table_gate as tg

    count = 0
    for m in model.modules():
        if isinstance(m, AFF3D) and tg.supports(m):
            m.forward = functools.partial(tg.table_forward, m)
            m.gate_add_relu = lambda R, X, relu=True, norm=None, _m=m: tg.table_forward(
                _m, R, X, norm=norm, add=True, relu=relu)
            count += 1
    return count


def _op_profile(step, rows: int = 12) -> dict[str, float]:
    """Self CPU ms per call of ``step`` by operator (torch.profiler), the largest ``rows``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    ops = {e.key: e.self_cpu_time_total / 3 / 1e3 for e in prof.key_averages()}
    return dict(sorted(ops.items(), key=lambda kv: -kv[1])[:rows])


# ------------------------------------------------------------------------------------------------
# Small networks: CPU training step
# ------------------------------------------------------------------------------------------------


def small_models(seed: int = 0) -> dict[str, nn.Module]:
    """Each network of the notebooks in both layouts; 3D-AFF straightforward and fast (the dispatch: the
    table gate in channels_last training, the autograd route in NCHW)."""
    from ..attention.aff3d import AFF3D
    from ..models.registry import create_model

    out = {}
    for layout in ("nchw", "nhwc"):
        for name in SMALL:
            for impl in ("straightforward", "fast") if name.startswith("aff3d") else (None,):
                torch.manual_seed(seed)
                m = create_model(name, num_classes=8)
                for mod in m.modules():
                    if isinstance(mod, AFF3D):
                        mod.impl = impl
                if layout == "nhwc":
                    m = m.to(memory_format=torch.channels_last)
                label = name if impl is None else f"{name}_{impl}"
                out[f"{label}_{layout}"] = m.train()
    return out


def bench_small_train(reps: int, batch: int = 32, image_size: int = 24, threads: int = 1, warmup: int = 2) -> dict:
    """Seconds per SGD step (forward, cross-entropy, backward, update) of each small network."""
    torch.set_num_threads(threads)
    models = small_models()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=g)
    y = torch.randint(0, 8, (batch,), generator=g)
    xs = {"nchw": x, "nhwc": x.contiguous(memory_format=torch.channels_last)}
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for n, m in models.items()}

    def step(n):
        m, opt = models[n], opts[n]
        loss = nn.functional.cross_entropy(m(xs[n[-4:]]), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for n in models:  # includes the table pass's first-call compilation
        for _ in range(warmup):
            step(n)
    warm_s = time.perf_counter() - t0
    load_before = load_average()
    samples = interleaved_calls({n: functools.partial(step, n) for n in models}, reps)
    ms, ratio = medians_ms(samples, lambda n: f"resnet20_cifar_{n[-4:]}")
    profile = {n: _op_profile(functools.partial(step, n)) for n in
               ("resnet20_cifar_nhwc", "aff3d_resnet20_cifar_fast_nhwc", "aff3d_resnet20_cifar_fast_nchw")}
    def split_of(*names):  # plain, 3D-AFF: each profiled alone
        return breakdown.extra_by_kind(*(breakdown.time_by_kind(functools.partial(step, n)) for n in names))

    split = {lay: split_of(f"resnet20_cifar_{lay}", f"aff3d_resnet20_cifar_fast_{lay}") for lay in ("nchw", "nhwc")}
    floor = macs_floor(models["resnet20_cifar_nchw"], models["aff3d_resnet20_cifar_fast_nchw"], image_size)
    return {"section": "small", "batch": batch, "image_size": image_size, "threads": threads, "reps": reps,
            "classes": 8, "optimizer": "SGD momentum 0.9", "step_ms": ms, "step_ratio": ratio,
            "time_split_ms": split, "macs_floor_ratio": floor,
            "step_samples_ms": {n: [s * 1e3 for s in v] for n, v in samples.items()},
            "warmup_s_incl_compile": round(warm_s, 1), "load_average_before": load_before,
            "load_average_after": load_average(), "op_profile_ms": profile, "target": 1.30}


# ------------------------------------------------------------------------------------------------
# The table gate: arithmetic floor and ResNet-50 inference
# ------------------------------------------------------------------------------------------------


def module_macs(design, C: int, H: int, W: int, path: str) -> int:
    """Multiply-accumulates of one 3D-AFF call on one sample (C, H, W), by path:
    "straightforward" (eqs. as written), "fast" (``aff3d_fast``) or "table" (``table_gate``)."""
    P, K, k2 = H * W, design.hidden_channels(C), design.kernel_size ** 2
    if not design.has_spatial:
        return 2 * C * K  # SE: F_ex on the channel vector
    parallel = design.fusion == "parallel"
    if path == "straightforward":
        return k2 * design.spatial_in_channels(C) * P + (2 * C * K if parallel else 2 * C * K * P)
    inputs = 1 if design.spatial_input == "residual" else 2  # split convolution: taps of U (and X_l)
    spatial = k2 * C * inputs * P
    if parallel:
        return spatial + 2 * C * K
    if path == "fast":  # v = W_1 M_c, h = relu(v + r m) per pixel, W_2 h per pixel
        return spatial + C * K + K * P + C * K * P
    # table: v, the tables (A_0's two products and the two cumulative deltas), one lookup per channel
    return spatial + C * K + 4 * C * K + C * P


def macs_floor(plain: nn.Module, aff3d: nn.Module, image_size: int) -> dict[str, float]:
    """Per 3D-AFF path, the 3D-AFF network's multiply-accumulates over the plain network's at
    ``image_size``: the step's ratio if time followed arithmetic alone (training's backward costs about
    twice the forward in both networks, so the forward's ratio is the step's)."""
    base = network_macs(plain, image_size)["network"]
    extra = network_macs(aff3d, image_size)
    return {p: (base + extra[f"aff3d_{p}"]) / base for p in ("straightforward", "fast", "table")}


def network_macs(model: nn.Module, image_size: int) -> dict[str, int]:
    """The network's multiply-accumulates at batch 1 (torch's FLOP counter, over 2) and each 3D-AFF
    path's module total (``module_macs`` at the shapes the modules see)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..attention.aff3d import AFF3D

    shapes = []
    mods = [m for m in model.modules() if isinstance(m, AFF3D)]

    def recorder(m, name):  # the blocks call ``gate_add_relu``, other callers the module itself
        def call(R, *args, _orig=getattr(m, name), **kw):
            shapes.append((m.design, *R.shape[1:]))
            return _orig(R, *args, **kw)
        return call

    for m in mods:
        m.forward, m.gate_add_relu = recorder(m, "forward"), recorder(m, "gate_add_relu")
    x = torch.zeros(1, 3, image_size, image_size)
    was_training = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model.eval()(x)
    finally:
        model.train(was_training)
        for m in mods:
            del m.forward, m.gate_add_relu  # back to the class's methods
    out = {"network": fc.get_total_flops() // 2}
    for path in ("straightforward", "fast", "table"):
        out[f"aff3d_{path}"] = sum(module_macs(d, C, H, W, path) for d, C, H, W in shapes)
    return out


def bench_table(reps: int, threads: int = 2, image_size: int = 224, batch: int = 32) -> dict:
    """ResNet-50 against 3D-AFF-ResNet-50 (fast path and table gate), channels_last, CPU inference."""
    import torchvision

    from ..models.registry import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = torchvision.models.resnet50()
    base_macs = network_macs(base, image_size)["network"]
    aff_fast = create_model("aff3d_resnet50")
    extra = network_macs(aff_fast, image_size)
    floors = macs_floor(base, aff_fast, image_size)
    aff_table = create_model("aff3d_resnet50")
    aff_table.load_state_dict(aff_fast.state_dict())
    use_table_gate(aff_table)
    cl = torch.channels_last
    models = {"resnet50": base, "aff3d_resnet50_fast": aff_fast, "aff3d_resnet50_table": aff_table}
    models = {n: m.eval().to(memory_format=cl) for n, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, 3, image_size, image_size, generator=g).contiguous(memory_format=cl)
    xb = torch.randn(batch, 3, image_size, image_size, generator=g).contiguous(memory_format=cl)
    with torch.no_grad():
        t0 = time.perf_counter()
        diff = float((aff_table(x1) - aff_fast(x1)).abs().max())
        aff_table(xb)
        warm_s = time.perf_counter() - t0
        load_before = load_average()
        lat = interleaved_calls({n: functools.partial(m, x1) for n, m in models.items()}, reps)
        thr = interleaved_calls({n: functools.partial(m, xb) for n, m in models.items()}, max(1, reps // 3))
        profile = {n: _op_profile(functools.partial(models[n], x1)) for n in models}
    lat_ms, lat_ratio = medians_ms(lat, lambda n: "resnet50")
    thr_ms, thr_ratio = medians_ms(thr, lambda n: "resnet50")
    return {"section": "table", "threads": threads, "image_size": image_size, "reps": reps, "batch": batch,
            "memory_format": "channels_last", "table_vs_fast_max_abs_diff": diff,
            "resnet50_gmacs": base_macs / 1e9,
            "aff3d_extra_gmacs": {p: extra[f"aff3d_{p}"] / 1e9 for p in floors}, "macs_floor_ratio": floors,
            "latency_b1_ms": lat_ms, "latency_b1_ratio": lat_ratio,
            f"time_b{batch}_ms": thr_ms, f"time_b{batch}_ratio": thr_ratio,
            "warmup_s_incl_compile": round(warm_s, 1), "load_average_before": load_before,
            "load_average_after": load_average(), "op_profile_b1_ms": profile,
            "targets": {"latency_b1_ratio": 1.10, f"time_b{batch}_ratio": 1.10}}


# ------------------------------------------------------------------------------------------------
# Detection backbone
# ------------------------------------------------------------------------------------------------


def bench_detection(reps: int, threads: int = 2, image_size: int = 256, batch: int = 2) -> dict:
    """Training step of the FPN backbone alone (sum of its features as the loss), R50-FPN against
    3D-AFF-R50-FPN (the fast path, and the straightforward path with the same weights), the COCO
    configs' norm (FrozenBN)."""
    try:
        from detectron2.config import get_cfg
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
    except ImportError as e:
        return {"section": "detection", "skipped": f"detectron2 is not installed ({e}); see detectron2_ext/README.md"}
    from detectron2_ext.backbone import build_aff3d_resnet_fpn_backbone
    from detectron2_ext.config import add_aff3d_config

    from ..attention.aff3d import AFF3D

    torch.set_num_threads(threads)
    cfg = get_cfg()
    add_aff3d_config(cfg)
    stages = ["res2", "res3", "res4", "res5"]
    cfg.merge_from_list(["MODEL.RESNETS.OUT_FEATURES", stages, "MODEL.FPN.IN_FEATURES", stages])
    torch.manual_seed(0)
    models = {"r50_fpn": build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)),
              "aff3d_r50_fpn": build_aff3d_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))}
    models["aff3d_r50_fpn_straightforward"] = build_aff3d_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    models["aff3d_r50_fpn_straightforward"].load_state_dict(models["aff3d_r50_fpn"].state_dict())
    for m in models["aff3d_r50_fpn_straightforward"].modules():
        if isinstance(m, AFF3D):
            m.impl = "straightforward"
    x = torch.randn(batch, 3, image_size, image_size)
    opts = {n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.01) for n, m in models.items()}

    def step(n):
        loss = sum(f.float().mean() for f in models[n].train()(x).values())
        loss.backward()
        opts[n].step()
        opts[n].zero_grad(set_to_none=True)

    for n in models:
        step(n)
    load_before = load_average()
    samples = interleaved_calls({n: functools.partial(step, n) for n in models}, reps)
    ms, ratio = medians_ms(samples, lambda n: "r50_fpn")
    split = breakdown.extra_by_kind(*(breakdown.time_by_kind(functools.partial(step, n))
                                      for n in ("r50_fpn", "aff3d_r50_fpn")))
    floor = macs_floor(models["r50_fpn"], models["aff3d_r50_fpn"], image_size)
    return {"section": "detection", "threads": threads, "image_size": image_size, "batch": batch, "reps": reps,
            "norm": cfg.MODEL.RESNETS.NORM, "step_ms": ms, "step_ratio": ratio, "target": 1.15,
            "time_split_ms": split, "macs_floor_ratio": floor,
            "step_ratio_per_round_quartiles": paired_ratio_quartiles(samples, lambda n: "r50_fpn"),
            "step_samples_ms": {n: [round(t * 1e3, 2) for t in v] for n, v in samples.items()},
            "load_average_before": load_before, "load_average_after": load_average()}


# ------------------------------------------------------------------------------------------------
# Running and reporting (called by ``cli.main``)
# ------------------------------------------------------------------------------------------------


def run(section: str, args) -> dict:
    """One section with the command line's options (repetitions, threads, image size, batch)."""
    if section == "small":  # the notebooks' batch; --quick: a smoke run
        return bench_small_train(args.reps, batch=8 if args.quick else 32)
    if section == "routes":
        from .routes import bench_routes

        return bench_routes(args.reps, batch=8 if args.quick else 32)
    if section == "table":
        return bench_table(args.reps, threads=args.threads, image_size=args.image_size, batch=args.cpu_batch)
    return bench_detection(args.reps, threads=args.threads)


def _loads(s: dict) -> str:
    a, b = s.get("load_average_before"), s.get("load_average_after")
    return f"1-minute load average {a if a is None else round(a, 2)} before, {b if b is None else round(b, 2)} after"


def summary(res: dict) -> str:
    """Console lines for one section."""
    if res.get("skipped"):
        return f"{res['section']}: skipped: {res['skipped']}"
    if res["section"] == "small":
        rows = [f"  {n:44s} {res['step_ms'][n]:8.1f} ms  {res['step_ratio'][n]:6.3f}" for n in res["step_ms"]]
        split = [f"  extra time, {layout} (profiled): {breakdown.largest(v)}" for layout, v in res["time_split_ms"].items()]
        return "\n".join([f"small networks, CPU training step (batch {res['batch']}, {res['threads']} thread): "
                          f"ms / ratio to plain, same layout ({_loads(res)})", *rows, *split])
    if res["section"] == "table":
        b = res["batch"]
        rows = [f"  {n:28s} {res['latency_b1_ms'][n]:8.1f} {res['latency_b1_ratio'][n]:6.3f}   "
                f"{res[f'time_b{b}_ms'][n]:9.1f} {res[f'time_b{b}_ratio'][n]:6.3f}" for n in res["latency_b1_ms"]]
        floors = ", ".join(f"{p} {g:.3f} G ({res['macs_floor_ratio'][p]:.3f}x)" for p, g in res["aff3d_extra_gmacs"].items())
        return "\n".join([f"table gate: 3D-AFF extra MACs over ResNet-50 ({res['resnet50_gmacs']:.2f} G): {floors}",
                          f"CPU inference, channels_last ({res['threads']} threads): b1 ms / ratio, b{b} ms / ratio "
                          f"({_loads(res)})", *rows])
    if res["section"] == "routes":
        from . import routes as benchmark_routes

        return benchmark_routes.summary(res, _loads(res))
    q = res.get("step_ratio_per_round_quartiles", {})
    return "\n".join([f"detection backbone training step ({res['norm']}): ms / ratio [per-round ratio quartiles] "
                      f"({_loads(res)})", *[f"  {n:30s} {res['step_ms'][n]:8.1f} {res['step_ratio'][n]:6.3f} "
                                            f"{q.get(n, '')}" for n in res["step_ms"]],
                      f"  extra time (profiled): {breakdown.largest(res['time_split_ms'])}"])


def _where_the_time_goes(s: dict, titles: dict) -> list[str]:
    """The section's profiled split of the extra time (``breakdown``) and its arithmetic floor, where recorded."""
    if "time_split_ms" not in s:
        return []
    floor = s["macs_floor_ratio"]
    lines = [f"Where the extra time goes: operator self-times by kind of work, ms per step, mean of 3 profiled "
             f"steps (`benchmark.breakdown`). Arithmetic floor of the ratio (multiply-accumulates): "
             f"{floor['fast']:.3f} on the product form, {floor['table']:.3f} through the table gate.", ""]
    for key, title in titles.items():
        lines += [*breakdown.markdown(title, s["time_split_ms"] if key is None else s["time_split_ms"][key]), ""]
    return lines


def markdown(sections: dict, notes=lambda section: []) -> list[str]:
    """Markdown lines for the further sections present in ``sections`` (section name -> result);
    ``notes(section)`` gives lines to put under each section's heading (the report's staleness)."""
    lines = []
    s = sections.get("small")
    if s:
        m = s["machine"]
        lines += [f"## CPU training step, small networks ({m['cpu']}, {s['threads']} thread, batch {s['batch']}, "
                  f"{s['image_size']} px, {s['classes']} classes, SGD, torch {m['torch']}, {m['date']})", "", *notes(s),
                  "| network | layout | step (ms) | ratio to plain, same layout |", "| --- | --- | ---: | ---: |"]
        for n in s["step_ms"]:
            lines.append(f"| {n[:-5]} | {n[-4:]} | {s['step_ms'][n]:.1f} | {s['step_ratio'][n]:.3f} |")
        lines += ["", f"Target <= {s['target']}. {s['reps']} repetitions; {_loads(s)} (provisional while the "
                      "machine is shared). `op_profile_ms` in the JSON file lists the largest operators.", ""]
        lines += _where_the_time_goes(s, {"nchw": "NCHW", "nhwc": "channels_last"})
    s = sections.get("table")
    if s:
        m, b = s["machine"], s["batch"]
        lines += [f"## Table gate ({m['cpu']}, {s['threads']} thread(s), channels_last, torch {m['torch']}, "
                  f"{m['date']})", "", *notes(s), f"ResNet-50: {s['resnet50_gmacs']:.3f} GMACs at {s['image_size']} px. "
                  "3D-AFF's extra multiply-accumulates and the arithmetic floor they set:", "",
                  "| 3D-AFF path | extra GMACs | floor ratio |", "| --- | ---: | ---: |"]
        for p, g in s["aff3d_extra_gmacs"].items():
            lines.append(f"| {p} | {g:.3f} | {s['macs_floor_ratio'][p]:.3f} |")
        lines += ["", f"| model | latency b1 (ms) | ratio | batch {b} (ms) | ratio |", "| --- | ---: | ---: | ---: | ---: |"]
        for n in s["latency_b1_ms"]:
            lines.append(f"| {n} | {s['latency_b1_ms'][n]:.1f} | {s['latency_b1_ratio'][n]:.3f} | "
                         f"{s[f'time_b{b}_ms'][n]:.1f} | {s[f'time_b{b}_ratio'][n]:.3f} |")
        lines += ["", f"Targets <= 1.10. {s['reps']} repetitions; {_loads(s)} (provisional while the machine is "
                      "shared).", ""]
    s = sections.get("routes")
    if s:
        from . import routes as benchmark_routes

        lines += benchmark_routes.markdown(s, notes(s), _loads(s))
    s = sections.get("detection")
    if s:
        lines += ["## Detection backbone training step", "", *notes(s)]
        if s.get("skipped"):
            lines += [f"Skipped: {s['skipped']}", ""]
        else:
            q = s.get("step_ratio_per_round_quartiles", {})
            lines += ["| backbone | step (ms) | ratio | per-round ratio, quartiles |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {n} | {s['step_ms'][n]:.1f} | {s['step_ratio'][n]:.3f} | "
                      f"{', '.join(f'{x:.3f}' for x in q[n]) if n in q else '–'} |" for n in s["step_ms"]]
            lines += ["", f"Norm {s['norm']}, batch {s['batch']}, {s['image_size']} px, target <= {s['target']}; "
                          f"{_loads(s)}.", ""]
            lines += _where_the_time_goes(s, {None: "3D-AFF-R50-FPN (fast) against R50-FPN"})
    return lines
