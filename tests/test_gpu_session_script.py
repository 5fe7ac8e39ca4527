"""scripts/gpu_session.sh, the one command a lent GPU machine runs: its stages, summary and packed results.

Run here on the CPU with a grid of one tiny run (``GRID_DEVICE=cpu``); on a GPU it is the same script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_GRID = ("--rows resnet --seeds 1 --seeds-for resnet=1 --set epochs=1 --set train_samples=64 "
             "--set val_samples=32 --set steps_per_epoch=2 --set batch_size=16")  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_the_gpu_session_script_packs_what_its_stages_made(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "PYTHON": sys.executable, "STAGES": "shapes_pixels grid", "GRID_DEVICE": "cpu", "GRID_JOBS": "1",
           "GRID_ARGS": TINY_GRID, "GIT_COMMIT": "test"}  # fmt: skip
    done = subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "== shapes_pixels: exit 0" in summary and "grid: 1 runs finished" in summary
    assert "cuda_tests" not in summary and "benchmark" not in summary  # not in STAGES
    with tarfile.open(tmp_path / "out" / "gpu_session.tar.gz") as tar:
        names = tar.getnames()
        assert not [n for n in names if n.endswith(".pth")]  # no checkpoints: the files that come back are small
        results = json.load(tar.extractfile("./grid/table1/results.json"))
    (record,) = results["records"]
    assert record["row_key"] == "resnet" and record["epochs"] == 1
    assert set(record["data_fingerprint"]) == {"train", "val"}
    assert "./shapes_pixels.log" in names and "./grid.log" in names and "./machine.txt" in names


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_the_compiled_stage_without_a_gpu_ends_with_one_error_line(tmp_path):
    """Where no GPU is, the compiled stage exits 2 with one error line, and the script still packs and ends."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "PYTHON": sys.executable, "STAGES": "compiled", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    done = subprocess.run(["bash", "scripts/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "--compile-mode reduce-overhead,default" in summary and "== compiled: exit 2" in summary
    assert "error: the compiled section: no CUDA GPU" in summary and "Traceback" not in summary
    with tarfile.open(tmp_path / "out" / "gpu_session.tar.gz") as tar:
        assert "./compiled.log" in tar.getnames()
