"""The experiment runner's scheduler path: runs as submitit jobs (``--executor submitit-local`` here, since
CI has no SLURM; ``--executor slurm`` against stand-in sbatch/sacct commands), and its option errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_run import tiny_config

from torch_impl.experiments.__main__ import main

submitit = pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parents[1]
TINY = {k: v for k, v in tiny_config(epochs=1).items() if k not in ("model", "output_dir", "progress", "tensorboard")}
RUN_KEY = "resnet20_cifar.seed0"  # the one run of `table2 --rows resnet --seeds 1`
TIMES = ("wall_time_s", "epoch_time_s")  # the only numbers that differ between two trainings of one run


def _args(folder: Path, *extra, seeds: int = 1) -> list[str]:
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    return ["table2", "--rows", "resnet", "--seeds", str(seeds), *extra, *sets,
            "--out", str(folder / "out"), "--runs", str(folder / "runs"), "--no-progress"]  # fmt: skip


def _records(folder: Path) -> list[dict]:
    return json.loads((folder / "out" / "table2" / "results.json").read_text())["records"]


def _untimed(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in TIMES}
    out["history"] = [{k: v for k, v in h.items() if k not in TIMES} for h in record["history"]]
    return out


def test_a_submitit_job_writes_the_record_a_local_run_writes_and_is_skipped_once_finished(tmp_path, capsys):
    assert main(_args(tmp_path / "local")) == 0
    assert main(_args(tmp_path / "jobs", "--executor", "submitit-local")) == 0
    out = capsys.readouterr().out
    assert "as submitit local jobs" in out and "submitted 1 run(s) as job(s) " in out
    (local,), (job,) = _records(tmp_path / "local"), _records(tmp_path / "jobs")
    assert local.keys() == job.keys()
    # same seed, same machine, same child on the same spec: bit-identical numbers
    assert _untimed(job) == _untimed(local)
    assert job["final_val_top1_err"] == local["final_val_top1_err"] and len(job["history"]) == TINY["epochs"]

    (budget,) = [p for p in (tmp_path / "jobs" / "runs").iterdir() if p.is_dir()]
    logs = budget / "submitit"  # submitit's files under the runs folder, none in the results folder
    assert len(list(logs.glob("*_result.pkl"))) == 1 and list(logs.glob("*_log.out"))
    assert not list((tmp_path / "jobs" / "out").rglob("*.pkl"))
    assert "resnet20_cifar (" in (budget / f"{RUN_KEY}.log").read_text()  # the child's output: the run's log
    # a second invocation submits nothing and keeps the record
    stamp = (budget / RUN_KEY / "record.json").stat().st_mtime_ns
    assert main(_args(tmp_path / "jobs", "--executor", "submitit-local")) == 0
    assert "0 run(s) to train" in capsys.readouterr().out
    assert len(list(logs.glob("*_submitted.pkl"))) == 1
    assert (budget / RUN_KEY / "record.json").stat().st_mtime_ns == stamp
    assert _records(tmp_path / "jobs") == [job]


def test_a_jobs_child_outlives_slurms_warning_signal_and_the_job_requeues_itself(tmp_path):
    """SLURM sends USR2 to every process of a job before its time limit: the child ignores it (submitit
    requeues the job, which then stops the child with SIGTERM), and the requeued job is the same call."""
    from torch_impl.experiments.executors import ChildJob

    code = "import os, signal; os.kill(os.getpid(), signal.SIGUSR2); print('still training')"
    job = ChildJob(RUN_KEY, [sys.executable, "-c", code], str(tmp_path / "run.log"), None)
    assert job() == 0 and (tmp_path / "run.log").read_text() == "still training\n"
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission) and again.function is job


def _fake_slurm(tmp_path: Path, sacct_state: str) -> Path:
    """sbatch, srun, sacct and scancel stand-ins: sbatch keeps the script it is given and answers with a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" {tmp_path}/sbatch_script.sh\necho "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 1\n",
        "sacct": f"#!/bin/sh\nprintf 'JobID|State|NodeList\\n4242_0|{sacct_state}|n1\\n4242_1|{sacct_state}|n1\\n'\n",
        "scancel": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_slurm_submits_one_job_array_with_the_asked_resources_and_reports_failed_jobs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_slurm(tmp_path, 'FAILED')}{os.pathsep}{os.environ['PATH']}")
    argv = _args(tmp_path, "--executor", "slurm", "--partition", "gpu", "--time", "600", "--cpus-per-run", "8",
                 "--array-parallelism", "1", "--nproc-per-node", "2", seeds=2)  # fmt: skip
    assert main(argv) == 1  # the stand-in sacct says the jobs failed
    captured = capsys.readouterr()
    assert "as SLURM jobs on gpu, 2 GPU(s) and 600 min each" in captured.out
    assert "submitted 2 run(s) as job(s) 4242" in captured.out
    assert "run resnet20_cifar.seed0 failed (job 4242_0: " in captured.err and "2 run(s) failed" in captured.err
    script = (tmp_path / "sbatch_script.sh").read_text()
    (budget,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    for line in ("--partition=gpu", "--time=600", "--cpus-per-task=8", "--gpus-per-node=2", "--ntasks-per-node=1",
                 "--array=0-1%1", f"--job-name=aff3d-{budget.name}", "--signal=USR2@90",
                 f"--output={budget / 'submitit'}/"):  # fmt: skip
        assert f"#SBATCH {line}" in script, (line, script)
    assert f"export PYTHONPATH={ROOT}" in script
    # each job runs the run's child under torchrun, on its spec, and is requeued when SLURM signals it
    calls = [submitit.core.utils.DelayedSubmission.load(p).function for p in (budget / "submitit").glob("*.pkl")]
    assert sorted(c.key for c in calls) == [RUN_KEY, "resnet20_cifar.seed1"]
    assert all(callable(c.checkpoint) for c in calls)
    for call in calls:
        assert call.command[:3] == ["torchrun", "--standalone", "--nproc_per_node=2"]
        assert call.command[-1] == str(budget / f"{call.key}.spec.json") and Path(call.command[-1]).exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--executor", "slurm"], "error: --executor slurm: no sbatch or srun on PATH"),
        (["--gpus-per-run", "1"], "error: --gpus-per-run is for --executor slurm (or submitit-local), not local"),
        (["--executor", "submitit-local", "--gpus-per-run", "-1"], "error: --gpus-per-run must be >= 0, got -1"),
        (["--executor", "submitit-local", "--time", "0"], "error: --time must be >= 1, got 0"),
        (
            ["--executor", "submitit-local", "--nproc-per-node", "2", "--gpus-per-run", "1"],
            "error: --gpus-per-run 1 is fewer than --nproc-per-node 2",
        ),
    ],
)
def test_bad_executor_options_are_one_error_line(tmp_path, capsys, monkeypatch, extra, message, one_error_line):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no sbatch, whatever this machine has
    assert main(_args(tmp_path, *extra)) == 2
    assert one_error_line().startswith(message)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # checked before anything


def test_slurm_needs_a_time_limit(tmp_path, capsys, monkeypatch, one_error_line):
    monkeypatch.setenv("PATH", f"{_fake_slurm(tmp_path, 'FAILED')}{os.pathsep}{os.environ['PATH']}")
    assert main(_args(tmp_path, "--executor", "slurm")) == 2
    assert one_error_line() == "error: --executor slurm needs --time MINUTES, each job's time limit"
    assert not (tmp_path / "sbatch_script.sh").exists()


def test_without_submitit_the_package_imports_and_slurm_is_one_error_line(tmp_path):
    code = ("import sys; sys.modules['submitit'] = None; import torch_impl.experiments; "
            "from torch_impl.experiments.__main__ import main; sys.exit(main(sys.argv[1:]))")  # fmt: skip
    argv = [sys.executable, "-c", code, *_args(tmp_path, "--executor", "slurm", "--time", "60")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: --executor slurm needs submitit: python -m pip install submitit"
