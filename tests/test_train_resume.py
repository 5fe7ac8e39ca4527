"""An interrupted run, resumed from its last checkpoint, ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_run import tiny_config

from torch_impl.training import load_checkpoint, read_csv, run, runner


def tiny(out=None, **kw):
    return tiny_config(out, **{"val_samples": 16, "epochs": 3, "optimizer": "sgd", "lr": 0.05,
                               "lr_schedule": "multistep", "lr_milestones": [0.5], "warmup_steps": 2, **kw})


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_stopped_then_resumed_equals_uninterrupted(tmp_path):
    full = run(**tiny(tmp_path, run_name="full"))
    part = run(**tiny(tmp_path, run_name="part", stop_after_epochs=1))
    assert [r["epoch"] for r in part.history] == [1]
    resumed = run(resume=str(part.run_dir))  # the checkpoint's own settings
    assert resumed.run_dir == part.run_dir and [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert_same_weights(full.model.state_dict(), resumed.model.state_dict())
    a, b = load_checkpoint(full.run_dir / "last.pth"), load_checkpoint(part.run_dir / "last.pth")
    assert_same_weights(a["optimizer"]["state"][0], b["optimizer"]["state"][0])  # momentum buffers too
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 9
    rows = read_csv(part.run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # each epoch once
    assert [r["val_top1_err"] for r in rows] == [r["val_top1_err"] for r in full.history]


@pytest.mark.size_rule  # the killed run is another process: both keep the fast path's size rule as users get it
def test_killed_process_resumes_exactly(tmp_path):
    """A real SIGKILL during epoch 2 of 3, then ``python -m torch_impl.train --resume``."""
    # The same thread count in both processes: float sums (and so the last bits) depend on it.
    settings = tiny(tmp_path, run_name="killed", steps_per_epoch=None, train_samples=96, epochs=3, threads=1)
    args = [sys.executable, "-m", "torch_impl.train", "--no-progress"]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last.pth").exists():  # written atomically at the end of epoch 1
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    killed_at = load_checkpoint(run_dir / "last.pth")["epoch"]
    assert killed_at < 3, "the process finished before it was killed"

    done = subprocess.run(
        [sys.executable, "-m", "torch_impl.train", "--resume", str(run_dir), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in done.stderr + done.stdout
    assert "3/3 epochs" in done.stdout  # the summary line

    uninterrupted = run(**{**settings, "run_name": "uninterrupted"})
    assert_same_weights(uninterrupted.model.state_dict(), load_checkpoint(run_dir / "last.pth")["model"])


# ----------------------------------------------------------------------------- kills at any moment


class Killed(BaseException):
    """Stands in for SIGKILL at a chosen file write (a BaseException: no handler of the run catches it)."""


# The validation error each epoch reports, by construction: epoch 2 is the best, so the last epoch writes
# best.pth too. What a tiny network really measures depends on the CPU's kernels (another instruction
# set rounds differently and can make epoch 2 tie epoch 1); the file writes this test is about do not.
SCRIPTED_VAL_TOP1_ERR = {1: 60.0, 2: 40.0}


def improving(out, **kw):
    """Two epochs of a tiny run (the validation errors are scripted by ``scripted_val``)."""
    return tiny_config(out, model="resnet20_cifar", train_samples=48, val_samples=24, epochs=2,
                       steps_per_epoch=None, optimizer="adamw", lr=0.003, weight_decay=0.0,
                       lr_schedule="constant", seed=1, **kw)  # fmt: skip


@pytest.fixture
def scripted_val(monkeypatch):
    """The run's evaluation, with its top-1 error replaced by ``SCRIPTED_VAL_TOP1_ERR[epoch]``."""
    real = runner.evaluate

    def evaluate(*args, desc="val", **kwargs):
        measured = real(*args, desc=desc, **kwargs)
        epoch = int(desc.split("epoch ")[1].split("/")[0])  # desc: "val epoch E/N"
        return {**measured, "top1_err": SCRIPTED_VAL_TOP1_ERR[epoch]}

    monkeypatch.setattr(runner, "evaluate", evaluate)


def test_a_kill_between_any_two_file_writes_then_resume_leaves_files_that_agree(
    tmp_path, monkeypatch, capsys, scripted_val
):
    """Kill the run just before each file it commits (os.replace), resume, and check that best.pth,
    metrics.csv and the summary line name the same best epoch, and every epoch is logged once."""
    real_replace = os.replace
    commits = []
    monkeypatch.setattr(os, "replace", lambda a, b: (commits.append(b), real_replace(a, b))[1])
    full = run(**improving(tmp_path, run_name="full"))
    assert [r["val_top1_err"] for r in full.history] == sorted(
        [r["val_top1_err"] for r in full.history], reverse=True
    ), "this test needs a run whose last epoch is its best"
    n_commits = len(commits)
    assert n_commits >= 6  # per epoch at least last.pth, best.pth and metrics.csv (also config.yaml, curve.png)

    for k in range(n_commits):
        calls = []

        def replace(a, b, k=k, calls=calls):
            if len(calls) == k:
                raise Killed(f"killed before writing {b}")
            calls.append(b)
            real_replace(a, b)

        monkeypatch.setattr(os, "replace", replace)
        run_dir = tmp_path / f"kill{k}"
        with pytest.raises(Killed):
            run(**improving(tmp_path, run_name=f"kill{k}"))
        monkeypatch.setattr(os, "replace", real_replace)
        if not (run_dir / "last.pth").exists():
            continue  # killed before the first epoch was saved: nothing to resume
        capsys.readouterr()
        resumed = run(resume=str(run_dir))
        summary = capsys.readouterr().out
        best_epoch = resumed.best["epoch"]
        assert best_epoch == full.best["epoch"] == 2
        assert load_checkpoint(run_dir / "best.pth")["epoch"] == best_epoch, f"kill before commit {k}: {calls}"
        rows = read_csv(run_dir / "metrics.csv")
        assert [r["epoch"] for r in rows] == [1, 2], f"kill before commit {k}: {calls}"
        assert min(rows, key=lambda r: r["val_top1_err"])["epoch"] == best_epoch
        assert f"best top-1 error {full.best['val_top1_err']:.2f}% at epoch {best_epoch}" in summary
        assert [r["val_top1_err"] for r in rows] == [r["val_top1_err"] for r in full.history]


def test_temporary_files_of_a_killed_save_are_removed_by_the_resume(tmp_path, capsys):
    part = run(**tiny(tmp_path, run_name="part", stop_after_epochs=1))
    left = [part.run_dir / ".last.pth.1f2e3d4c.tmp", part.run_dir / ".metrics.csv.00ff00ff.tmp"]
    for p in left:
        p.write_bytes(b"half a file")  # what SIGKILL during a save leaves behind
    capsys.readouterr()
    run(resume=str(part.run_dir))
    assert not any(p.exists() for p in left)
    assert "removed 2 temporary file(s) of a save that was killed" in capsys.readouterr().out
    assert not [p.name for p in part.run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_with_one_line_saying_how_to_resume(tmp_path, sig):
    run_dir = tmp_path / "stopped"
    args = [sys.executable, "-m", "torch_impl.train", "--model", "resnet20_cifar", "--image-size", "16",
            "--train-samples", "96", "--val-samples", "16", "--batch-size", "8", "--epochs", "50",
            "--threads", "1", "--output-dir", str(tmp_path), "--run-name", "stopped", "--no-tensorboard"]  # fmt: skip
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across
    # exec: the child would never see the SIGINT. A handler in this process is reset to the default there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        # Signal once epoch 1's files are all written (curve.png is the last, after last.pth, best.pth and
        # metrics.csv): the run is then in epoch 2's steps, not importing the plotting backends for its first
        # curve, which can take seconds on a loaded machine. The deadlines are generous for the same reason.
        deadline = time.monotonic() + 300
        while not (run_dir / "curve.png").exists():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no finished epoch after 300 s"
            time.sleep(0.01)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig.value, err[-3000:]
    assert "Traceback" not in err
    last_line = [line for line in err.splitlines() if line.strip()][-1]
    saved = load_checkpoint(run_dir / "last.pth")["epoch"]
    assert last_line == (
        f"interrupted by {sig.name}: epoch {saved}/50 is saved; continue with: "
        f"python -m torch_impl.train --resume {run_dir}"
    )
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
