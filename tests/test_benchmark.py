"""``python -m torch_impl.benchmark`` runs on a fresh install and writes what it promises.

A smoke run on CPU at a tiny image size (the numbers are not checked, only their presence and
consistency); the CUDA section runs only where a GPU is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_impl import benchmark, benchmark_cuda, benchmark_report


def _tiny(tmp_path: Path, *extra: str) -> list[str]:
    return ["--device", "cpu", "--quick", "--reps", "2", "--image-size", "32", "--cpu-batch", "2",
            "--out", str(tmp_path / "bench"), *extra]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench")
    return tmp_path, benchmark.main(_tiny(tmp_path))


def test_cpu_smoke_run_writes_json_chart_and_table(smoke_run):
    tmp_path, results = smoke_run
    res = json.loads((tmp_path / "bench_cpu.json").read_text())
    assert res == json.loads(json.dumps(results["cpu"]))
    assert set(res["latency_b1_ms"]) == set(benchmark.MODELS)
    assert res["latency_b1_ratio"]["resnet50"] == 1.0
    for name in benchmark.MODELS:
        assert len(res["latency_b1_samples_ms"][name]) == 2
        assert res["latency_b1_ms"][name] > 0 and res["throughput_b2_img_s"][name] > 0
        expected = res["latency_b1_ms"][name] / res["latency_b1_ms"]["resnet50"]
        assert abs(res["latency_b1_ratio"][name] - expected) < 1e-9
    # both 3D-AFF paths compute the same network
    assert res["fast_vs_straightforward_max_abs_diff"] < 1e-3
    assert res["machine"]["cpu"] and res["threads"] == 2
    png = (tmp_path / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "bench.md").read_text()
    assert "3D-AFF-ResNet-50, fast" in md and "CPU inference" in md
    assert res["cpu_time_b1_ratio"]["resnet50"] == 1.0 and all(v > 0 for v in res["cpu_time_b1_ms"].values())


def test_section_files_combine_into_one_report(smoke_run):
    """A CUDA section written on another machine joins the CPU one in the table and the chart."""
    tmp_path, _ = smoke_run
    models = benchmark.MODELS
    fake_cuda = {
        "section": "cuda", "batch": 256, "image_size": 224, "reps": 1, "steps_per_rep": 1,
        "train_img_s": dict(zip(models, (3000.0, 2800.0, 1500.0, 2750.0))),
        "peak_memory_gib": dict(zip(models, (20.0, 21.0, 40.0, 22.0))),
        "machine": {"gpu": "test GPU", "torch": "x", "triton": "y", "date": "today"},
        "fused_block_tail": True,
    }
    fake_cuda["train_time_ratio"] = benchmark._ratios(fake_cuda["train_img_s"], True)
    fake_cuda["peak_memory_ratio"] = benchmark._ratios(fake_cuda["peak_memory_gib"], False)
    assert fake_cuda["train_time_ratio"]["aff3d_resnet50_straightforward"] == 2.0
    (tmp_path / "bench_cuda.json").write_text(json.dumps(fake_cuda))
    sections = benchmark_report.load_sections(tmp_path / "bench")
    assert set(sections) == {"cpu", "cuda"}
    md = benchmark_report.write_markdown(tmp_path / "bench", sections).read_text()
    assert "CUDA training (test GPU" in md and "| 3D-AFF-ResNet-50, fast | 2750 | 1.091 |" in md
    # the CPU section measured this checkout; the fake CUDA one records no code fingerprint
    cpu_part, cuda_part = md.split("## CUDA training")
    assert "stale" not in cpu_part.split("## ")[1] and "**stale: measured before the code fingerprint" in cuda_part
    assert benchmark_report.write_chart(tmp_path / "bench", sections).stat().st_size > 0
    # the table-gate variant the CUDA section also times gets its own row, after the four models
    fake_cuda["train_img_s"][benchmark_cuda.TABLE_FORM] = 2000.0
    fake_cuda["peak_memory_gib"][benchmark_cuda.TABLE_FORM] = 22.0
    fake_cuda["train_time_ratio"] = benchmark._ratios(fake_cuda["train_img_s"], True)
    fake_cuda["peak_memory_ratio"] = benchmark._ratios(fake_cuda["peak_memory_gib"], False)
    (tmp_path / "bench_cuda.json").write_text(json.dumps(fake_cuda))
    md = benchmark_report.write_markdown(tmp_path / "bench", benchmark_report.load_sections(tmp_path / "bench"))
    rows = [line for line in md.read_text().split("## CUDA training")[1].splitlines() if line.startswith("| 3D-AFF")]
    label = "3D-AFF-ResNet-50, fast, table gate where it fits (AFF3D_TABLE=1)"
    assert rows[-1] == f"| {label} | 2000 | 1.500 | 22.00 | 1.100 |"


def test_cpu_profile_lists_each_models_extra_time(tmp_path):
    benchmark.main(_tiny(tmp_path, "--profile"))
    text = (tmp_path / "bench_cpu_profile.txt").read_text()
    for name in benchmark.MODELS[1:]:
        assert f"== {name}: " in text
    # the convolutions are in every model: their row shows both columns
    assert "aten::mkldnn_convolution" in text or "aten::convolution" in text


@pytest.mark.parametrize("argv", [["--reps", "0"], ["--image-size", "0"], ["--threads", "x"], ["--device", "tpu"]])
def test_bad_options_are_refused_with_one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.parse_args(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_cuda_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as exc:
        benchmark.parse_args(["--device", "cuda"])
    assert exc.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_unwritable_output_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = subprocess.run([sys.executable, "-m", "torch_impl.benchmark", *_tiny(tmp_path)[:-2], "--out",
                          str(blocker / "sub" / "bench")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: --out ") and "Traceback" not in res.stderr


def test_section_files_of_the_old_names_still_combine(smoke_run):
    """Section files written when the straightforward implementation was called "reference"."""
    tmp_path, results = smoke_run
    old = json.loads(json.dumps(results["cpu"]).replace("aff3d_resnet50_straightforward", "aff3d_resnet50_reference"))
    (tmp_path / "old_cpu.json").write_text(json.dumps(old))
    sections = benchmark_report.load_sections(tmp_path / "old")
    assert "3D-AFF-ResNet-50, straightforward" in benchmark_report.write_markdown(tmp_path / "old", sections).read_text()


def test_fused_block_tail_is_read_from_the_blocks():
    from torch_impl.models.registry import create_model

    model = create_model("aff3d_resnet50")
    assert benchmark.fused_block_tail(model)
    for m in model.modules():
        if hasattr(m, "impl"):
            m.impl = "straightforward"
    assert not benchmark.fused_block_tail(model)


def test_module_runs_as_a_command(tmp_path):
    res = subprocess.run([sys.executable, "-m", "torch_impl.benchmark", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--quick" in res.stdout and "--reps" in res.stdout


def test_a_section_measured_on_other_code_is_marked_stale(smoke_run):
    tmp_path, results = smoke_run
    section = json.loads(json.dumps(results["cpu"]))
    assert section["machine"]["code_id"] == benchmark_report.code_id() and benchmark_report.freshness(section) == ""
    section["machine"]["code_id"] = "0123456789ab"
    why = benchmark_report.freshness(section)
    assert why == f"stale: measured on code 0123456789ab, the checkout is {benchmark_report.code_id()}"
    (tmp_path / "older_cpu.json").write_text(json.dumps(section))
    md = benchmark_report.write_markdown(tmp_path / "older", benchmark_report.load_sections(tmp_path / "older"))
    assert f"**{why}**" in md.read_text()


def test_each_cuda_model_is_timed_under_its_own_environment(monkeypatch):
    """The table-gate variant runs with AFF3D_TABLE=1; the others and everything after see the
    environment as it was (set or unset)."""
    import os

    for before in (None, "0"):
        if before is None:
            monkeypatch.delenv("AFF3D_TABLE", raising=False)
        else:
            monkeypatch.setenv("AFF3D_TABLE", before)
        with benchmark_cuda._env_of(benchmark_cuda.TABLE_FORM):
            assert os.environ["AFF3D_TABLE"] == "1"
        assert os.environ.get("AFF3D_TABLE") == before
        with benchmark_cuda._env_of("aff3d_resnet50_fast"):
            assert os.environ.get("AFF3D_TABLE") == before


def test_a_compiled_cuda_section_reports_the_models_it_timed(tmp_path):
    """``--compile`` times ResNet-50 and the fast 3D-AFF only: the table and the chart show those two."""
    assert benchmark.parse_args(["--compile"]).compile
    assert not benchmark.parse_args([]).compile
    img_s, mem = {"resnet50": 3000.0, "aff3d_resnet50_fast": 2000.0}, {"resnet50": 10.0, "aff3d_resnet50_fast": 12.0}
    section = {"section": "cuda", "compiled": True, "batch": 256, "image_size": 224, "reps": 1, "steps_per_rep": 1,
               "train_img_s": img_s, "peak_memory_gib": mem, "train_time_ratio": benchmark._ratios(img_s, True),
               "peak_memory_ratio": benchmark._ratios(mem, False), "fused_block_tail": True,
               "machine": {"gpu": "test GPU", "torch": "x", "triton": "y", "date": "today"}}
    (tmp_path / "c_cuda.json").write_text(json.dumps(section))
    sections = benchmark_report.load_sections(tmp_path / "c")
    md = benchmark_report.write_markdown(tmp_path / "c", sections).read_text()
    assert "torch.compile, " in md and "| 3D-AFF-ResNet-50, fast | 2000 | 1.500 | 12.00 | 1.200 |" in md
    assert "straightforward" not in md and "SE-ResNet-50" not in md
    assert benchmark_report.write_chart(tmp_path / "c", sections).stat().st_size > 0
