"""The compiled section of ``python -m torch_impl.benchmark``: ResNet-50, SE and 3D-AFF under torch.compile.

On the CPU with tiny networks (the shape of the file, the ratios, a network that fails to compile recorded as
an error while the others run); the real measurement, batch 256 on a GPU, is marked ``cuda``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from torch_impl import benchmark
from torch_impl.benchmark import compiled, provenance, report


class _Tiny(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.Linear(width, 1000)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _tiny_networks(widths=(4, 5, 6)) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {n: _Tiny(w) for w, n in zip(widths, ("resnet50", "se_resnet50", "aff3d_resnet50_fast"))}


def _fails_on_width_5(gm, inputs):
    """A backend that cannot compile the network of width 5 (the tiny SE stand-in), and runs the others."""
    if any(getattr(t, "shape", None) == torch.Size([5, 3, 3, 3]) for t in inputs):
        raise RuntimeError("this network does not compile")
    return gm.forward


def _run(modes=("default",), backend="aot_eager", **kw):
    return compiled.bench_compiled(list(modes), reps=2, batch=2, image_size=8, steps=1, device="cpu", warmup=2,
                                   backend=backend, networks=_tiny_networks(), **kw)


def test_each_mode_reports_ratios_to_resnet50_and_compile_times():
    seen = []
    res = _run(("default", "reduce-overhead"), progress=lambda r: seen.append(sorted(r["compiled"])))
    assert seen == [[], ["default"], ["default", "reduce-overhead"]]  # written after eager and after each mode
    assert res["section"] == "compiled" and res["models"] == ["resnet50", "se_resnet50", "aff3d_resnet50_fast"]
    assert res["targets"] == {"train_time_ratio_compiled": 1.30, "train_time_ratio_compiled_moonshot": 1.10,
                              "train_time_ratio_eager": 2.0, "peak_memory_ratio": 1.10}
    for v in (res["eager"], *res["compiled"].values()):
        assert set(v["step_ms"]) == set(res["models"]) and v["train_time_ratio"]["resnet50"] == 1.0
        assert v["errors"] == {} and all(len(s) == 2 for s in v["step_samples_ms"].values())
        n = "aff3d_resnet50_fast"
        assert abs(v["train_time_ratio"][n] - v["step_ms"][n] / v["step_ms"]["resnet50"]) < 1e-9
        assert v["peak_memory_gib"] == {}  # no memory figures on the CPU
    assert res["eager"]["compile_s"] == {} and set(res["compiled"]["default"]["compile_s"]) == set(res["models"])
    assert json.loads(json.dumps(res)) == res


def test_a_network_that_fails_to_compile_is_an_error_and_the_others_still_run():
    res = _run(backend=_fails_on_width_5)
    v = res["compiled"]["default"]
    assert "this network does not compile" in v["errors"]["se_resnet50"]
    assert set(v["step_ms"]) == {"resnet50", "aff3d_resnet50_fast"} and v["train_time_ratio"]["resnet50"] == 1.0
    assert res["eager"]["errors"] == {}  # eager, the same network runs
    text = compiled.summary(res)
    assert any("se_resnet50" in line and "error: " in line for line in text.splitlines())


def test_an_unknown_backend_is_an_error_per_network():
    res = _run(backend="no_such_backend")
    assert set(res["compiled"]["default"]["errors"]) == set(res["models"])


def test_the_command_writes_the_file_with_its_fingerprint_and_report(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "build_networks", _tiny_networks)
    out = tmp_path / "bench"
    before = provenance.sources_sha256()
    res = benchmark.main(["--device", "cpu", "--compile-mode", "default", "--compile-backend", "aot_eager",
                          "--reps", "2", "--steps", "1", "--cuda-batch", "2", "--image-size", "8", "--out", str(out)])
    written = json.loads((tmp_path / "bench_compiled.json").read_text())
    assert written == json.loads(json.dumps(res["compiled"]))
    assert written["code"]["sources_sha256"] in {before, provenance.sources_sha256()}  # (either, if edited meanwhile)
    assert written["machine"]["date"] and "--compile-mode default" in written["command"]
    md = (tmp_path / "bench.md").read_text()
    assert "## Training under torch.compile" in md and "| default | ResNet-50 (torchvision) |" in md
    rows = report.speed_rows(tmp_path, "bench")
    assert [r[0].split(",")[:2] for r in rows] == [["CPU training time", " eager"],
                                                   ["CPU training time", " torch.compile mode default"]]
    assert all(r[-1] == provenance.label(written) for r in rows)


@pytest.mark.slow
def test_inductor_compiles_the_tiny_networks_on_the_cpu():
    """The real backend, code generation included (the GPU run's path, on the CPU)."""
    res = _run(backend="inductor")
    assert res["compiled"]["default"]["errors"] == {} and res["compiled"]["default"]["train_time_ratio"]["resnet50"] == 1.0


@pytest.mark.cuda
def test_cuda_graphs_compile_and_report_memory_on_the_gpu():
    """The GPU path of the section (inductor, CUDA graphs, memory figures) on tiny networks of one width (the
    second and third compile from the cache); the three ResNet-50s compile in the GPU session's compiled stage."""
    res = compiled.bench_compiled(["reduce-overhead"], reps=2, batch=4, image_size=16, steps=2, device="cuda",
                                  warmup=3, networks=_tiny_networks(widths=(8, 8, 8)))
    v = res["compiled"]["reduce-overhead"]
    assert v["errors"] == {} and set(v["peak_memory_ratio"]) == set(res["models"])
    assert all(g > 0 for g in v["peak_memory_gib"].values()) and v["train_time_ratio"]["resnet50"] == 1.0
    assert all(t > 0 for t in v["compile_s"].values()) and res["eager"]["peak_memory_ratio"]["resnet50"] == 1.0
