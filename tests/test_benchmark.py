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

from torch_impl import benchmark
from torch_impl.benchmark import models as bench_models
from torch_impl.benchmark import provenance
from torch_impl.benchmark import report as benchmark_report
from torch_impl.benchmark.timing import ratios

MODELS = bench_models.MODELS


def _ratios(values, higher_is_better):
    return ratios(values, bench_models.BASELINE, higher_is_better)


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
    assert set(res["latency_b1_ms"]) == set(MODELS)
    assert res["latency_b1_ratio"]["resnet50"] == 1.0
    for name in MODELS:
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
    models = MODELS
    fake_cuda = {
        "section": "cuda", "batch": 256, "image_size": 224, "reps": 1, "steps_per_rep": 1,
        "train_img_s": dict(zip(models, (3000.0, 2800.0, 1500.0, 2750.0))),
        "peak_memory_gib": dict(zip(models, (20.0, 21.0, 40.0, 22.0))),
        "machine": {"gpu": "test GPU", "torch": "x", "triton": "y", "date": "today"},
        "fused_block_tail": True,
    }
    fake_cuda["train_time_ratio"] = _ratios(fake_cuda["train_img_s"], True)
    fake_cuda["peak_memory_ratio"] = _ratios(fake_cuda["peak_memory_gib"], False)
    assert fake_cuda["train_time_ratio"]["aff3d_resnet50_straightforward"] == 2.0
    (tmp_path / "bench_cuda.json").write_text(json.dumps(fake_cuda))
    sections = benchmark_report.load_sections(tmp_path / "bench")
    assert set(sections) == {"cpu", "cuda"}
    md = benchmark_report.write_markdown(tmp_path / "bench", sections).read_text()
    assert "CUDA training (test GPU" in md and "| 3D-AFF-ResNet-50, fast | 2750 | 1.091 |" in md
    # the CPU section measured this checkout; the fake CUDA one records no code fingerprint
    cpu_part, cuda_part = md.split("## CUDA training")
    assert "older code" not in cpu_part.split("## ")[1]
    assert "**older code (measured unknown date)**: measured before the code fingerprint" in cuda_part
    assert benchmark_report.write_chart(tmp_path / "bench", sections).stat().st_size > 0
    # a variant an older file carries (the table gate on CUDA) gets its own row, after the four models
    fake_cuda["train_img_s"]["aff3d_resnet50_fast_table"] = 2000.0
    fake_cuda["peak_memory_gib"]["aff3d_resnet50_fast_table"] = 22.0
    fake_cuda["train_time_ratio"] = _ratios(fake_cuda["train_img_s"], True)
    fake_cuda["peak_memory_ratio"] = _ratios(fake_cuda["peak_memory_gib"], False)
    (tmp_path / "bench_cuda.json").write_text(json.dumps(fake_cuda))
    md = benchmark_report.write_markdown(tmp_path / "bench", benchmark_report.load_sections(tmp_path / "bench"))
    rows = [line for line in md.read_text().split("## CUDA training")[1].splitlines() if line.startswith("| 3D-AFF")]
    label = "3D-AFF-ResNet-50, fast, table gate where it fits (AFF3D_TABLE=1)"
    assert rows[-1] == f"| {label} | 2000 | 1.500 | 22.00 | 1.100 |"


def test_cpu_profile_lists_each_models_extra_time(tmp_path):
    benchmark.main(_tiny(tmp_path, "--profile"))
    text = (tmp_path / "bench_cpu_profile.txt").read_text()
    for name in MODELS[1:]:
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
    assert bench_models.fused_block_tail(model)
    for m in model.modules():
        if hasattr(m, "impl"):
            m.impl = "straightforward"
    assert not bench_models.fused_block_tail(model)


def test_module_runs_as_a_command(tmp_path):
    res = subprocess.run([sys.executable, "-m", "torch_impl.benchmark", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--quick" in res.stdout and "--reps" in res.stdout


def test_a_section_measured_on_other_code_is_labelled_older(smoke_run):
    tmp_path, results = smoke_run
    section = json.loads(json.dumps(results["cpu"]))
    assert set(section["code"]) >= {"commit", "dirty", "sources_sha256"} and len(section["code"]["sources_sha256"]) == 16
    section["code"] = provenance.code_fingerprint()  # (the smoke run's, unless a source was edited since)
    assert provenance.matches_current(section)
    assert provenance.label(section) == "current code" and benchmark_report.freshness(section) == ""
    section["code"]["sources_sha256"] = "0123456789abcdef"
    assert not provenance.matches_current(section)
    assert provenance.label(section) == f"older code (measured {section['machine']['date'][:10]})"
    why = benchmark_report.freshness(section)
    assert why == f"stale: measured on code 0123456789ab, the checkout is {provenance.sources_sha256()[:12]}"
    (tmp_path / "older_cpu.json").write_text(json.dumps(section))
    md = benchmark_report.write_markdown(tmp_path / "older", benchmark_report.load_sections(tmp_path / "older"))
    assert f"**{provenance.label(section)}**: the code fingerprint it records, 0123456789ab, is not" in md.read_text()


def test_a_compile_flag_asks_for_the_compiled_section():
    """``--compile`` (or ``--compile-mode``) runs the compiled section; its modes are checked."""
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            benchmark.parse_args(["--compile"])
    args = benchmark.parse_args(["--compile", "--device", "cpu"])
    assert args.compile and args.sections == ["compiled"] and args.compile_mode == ["default"]
    args = benchmark.parse_args(["--device", "cpu", "--compile-mode", "default,reduce-overhead", "--sections", "cpu"])
    assert args.sections == ["cpu", "compiled"] and args.compile_mode == ["default", "reduce-overhead"]
    assert not benchmark.parse_args([]).compile
