"""The benchmark's further sections: MAC counts, the table-gate routing, and a smoke run of each.

The timings are not checked (a shared machine), only that the sections run, agree with their
files, and that the arithmetic they report is counted right.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from torch_impl import benchmark
from torch_impl.benchmark import breakdown
from torch_impl.benchmark import routes as benchmark_routes
from torch_impl.benchmark import sections as benchmark_sections
from torch_impl.benchmark import timing
from torch_impl.attention import AFF3D
from torch_impl.models.registry import create_model


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r+ms_r", "mc_rs+ms_rs", "parallel_sum", "mc_r"])
def test_straightforward_macs_are_what_torch_counts(design):
    m = AFF3D(32, design, impl="straightforward", reduction=4, kernel_size=3).eval()
    U = torch.zeros(1, 32, 6, 5)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(U, U)
    assert benchmark_sections.module_macs(m.design, 32, 6, 5, "straightforward") == fc.get_total_flops() // 2


def test_resnet50_floor_of_each_path():
    """The table takes 3D-AFF's extra MACs over ResNet-50 from about 0.31 G to about 0.11 G."""
    import torchvision

    base = benchmark_sections.network_macs(torchvision.models.resnet50(), 224)["network"]
    extra = benchmark_sections.network_macs(create_model("aff3d_resnet50"), 224)
    assert 4.0e9 < base < 4.2e9
    straight, fast, table = (extra[f"aff3d_{p}"] for p in ("straightforward", "fast", "table"))
    assert table < fast < straight
    assert 1.02 < (base + table) / base < 1.035  # the table gate's arithmetic floor, about 1.03x
    assert 1.06 < (base + fast) / base < 1.09


def test_routed_network_equals_the_fast_one_in_training(randomize_bn):
    torch.manual_seed(0)
    ref = randomize_bn(create_model("aff3d_resnet20_cifar", num_classes=8), 1).double()
    routed = create_model("aff3d_resnet20_cifar", num_classes=8).double()
    routed.load_state_dict(ref.state_dict())
    assert benchmark_sections.use_table_gate(routed) == 6
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    y_ref, y = ref.train()(x), routed.train()(x)
    assert float((y - y_ref).detach().abs().max()) < 1e-10
    g = torch.autograd.grad(y.square().sum(), list(routed.parameters()))
    g_ref = torch.autograd.grad(y_ref.square().sum(), list(ref.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(g, g_ref)) < 1e-10


def test_sections_smoke_run(tmp_path):
    out = tmp_path / "bench"
    res = benchmark.main(["--sections", "small,table,routes,detection", "--quick", "--reps", "1", "--image-size", "32",
                          "--cpu-batch", "2", "--out", str(out)])
    for name in ("small", "table", "routes", "detection"):
        assert json.loads((tmp_path / f"bench_{name}.json").read_text()) == json.loads(json.dumps(res[name]))
    small = res["small"]
    assert small["step_ratio"]["resnet20_cifar_nhwc"] == 1.0 and len(small["step_ms"]) == 8
    assert small["load_average_before"] is not None
    assert res["table"]["table_vs_fast_max_abs_diff"] < 1e-3
    routes = res["routes"]["shapes"]
    assert len(routes) == len(benchmark_routes.cases(8)) and all(set(r["ms"]) == set(r["forms"]) for r in routes)
    for layout in ("nchw", "nhwc"):  # the profiled split: every kind, and a total that adds up
        split = small["time_split_ms"][layout]
        assert set(split) == {*breakdown.KIND_NAMES, "total"}
        assert split["total"][1] == pytest.approx(sum(split[k][1] for k in breakdown.KIND_NAMES), abs=0.05)
        assert split["convolution"][0] > 0 and split["convolution"][1] > 0  # (times: no order on a shared machine)
    assert 1.0 < small["macs_floor_ratio"]["table"] < small["macs_floor_ratio"]["fast"]
    md = (tmp_path / "bench.md").read_text()
    assert md.count("Where the extra time goes") == 1 + ("time_split_ms" in res["detection"])
    assert "CPU training step, small networks" in md and "Table gate" in md and "Detection backbone" in md
    assert "Routes of the fast path" in md
    if res["detection"].get("skipped"):
        assert "detectron2" in res["detection"]["skipped"]


def test_per_round_ratio_quartiles_pair_each_round():
    """Round r's ratio is t_n[r] / t_baseline[r]: a burst that slows both in one round cancels."""
    samples = {"base": [1.0, 2.0, 1.0, 1.0, 4.0], "x": [1.2, 2.4, 1.1, 1.3, 4.8]}
    q = timing.paired_ratio_quartiles(samples, lambda n: "base")
    assert q["base"] == [1.0, 1.0, 1.0]
    assert q["x"] == [1.2, 1.2, 1.2]  # ratios 1.2, 1.2, 1.1, 1.3, 1.2
    one = timing.paired_ratio_quartiles({"base": [2.0], "x": [3.0]}, lambda n: "base")
    assert one["x"] == [1.5, 1.5, 1.5]


def test_profiler_events_are_sorted_by_the_kind_of_work():
    assert breakdown.kind_of("aten::mkldnn_convolution") == "convolution"
    assert breakdown.kind_of("aten::convolution_backward") == "convolution"
    assert breakdown.kind_of("aten::native_batch_norm_backward") == "batch norm"
    assert breakdown.kind_of("aten::bmm") == "matrix products"
    assert breakdown.kind_of("aten::mul") == breakdown.kind_of("aten::copy_") == breakdown.OTHER
    assert breakdown.kind_of("autograd::engine::evaluate_function: MulBackward0") == "autograd engine, custom Functions"
    assert breakdown.kind_of("## Call CompiledFxGraph abc ##") == "compiled pass (inductor)"


def test_ops_inside_the_optimizers_step_count_as_the_optimizers():
    """An event counts as the optimizer's when it, or any event around it, is the optimizer's step."""
    from types import SimpleNamespace as Event

    step = Event(name="Optimizer.step#SGD.step", cpu_parent=None)
    inner = Event(name="aten::add_", cpu_parent=Event(name="aten::_foreach_add_", cpu_parent=step))
    outside = Event(name="aten::add_", cpu_parent=Event(name="autograd::engine::evaluate_function", cpu_parent=None))
    assert breakdown._under_optimizer(step) and breakdown._under_optimizer(inner)
    assert not breakdown._under_optimizer(outside)


def test_time_split_counts_the_optimizer_apart_and_adds_up():
    """A step of one convolution and SGD: convolution time in its row, the optimizer's in its own, every
    kind present, and the extra over itself zero."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    opt = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9, foreach=False)
    x = torch.randn(2, 3, 16, 16)

    def step():
        conv(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    split = breakdown.time_by_kind(step, steps=2)
    assert set(split) == set(breakdown.KIND_NAMES)
    assert split["convolution"] > 0 and split[breakdown.OPTIMIZER] > 0
    assert all(v >= 0 for v in split.values())
    rows = breakdown.extra_by_kind(split, split)
    assert all(d == 0 for _, _, d in rows.values())
    assert rows["total"][0] == pytest.approx(sum(split.values()), abs=0.05)
    md = breakdown.markdown("toy", breakdown.extra_by_kind(split, {k: 2 * v for k, v in split.items()}))
    assert md[0].startswith("| toy |") and any(line.startswith("| **total** |") for line in md)


def test_small_network_arithmetic_floor():
    """ResNet-20 (bottleneck, 24 px): the table gate's MACs floor lies under the product form's, both above 1."""
    floor = benchmark_sections.macs_floor(create_model("resnet20_cifar", num_classes=8),
                                          create_model("aff3d_resnet20_cifar", num_classes=8), 24)
    assert 1.0 < floor["table"] < floor["fast"] < floor["straightforward"]
