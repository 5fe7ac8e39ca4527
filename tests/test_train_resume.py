"""An interrupted run, resumed from its last checkpoint, ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from tiny_run import tiny_config

from torch_impl.training import load_checkpoint, read_csv, run


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
