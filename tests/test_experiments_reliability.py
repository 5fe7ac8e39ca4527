"""The experiment runner under mishaps: a runner killed mid-run, two runners on one folder, folders that
cannot be written, and the settings that decide what a run learns (the budget's identity).

Each test is a probe that went wrong before: an orphaned child training on, two writers in one run
folder, a traceback instead of an ``error:`` line, ``workers`` called irrelevant to the weights.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_run import tiny_config

from torch_impl.experiments.__main__ import main, run_settings
from torch_impl.experiments.store import NOT_BUDGET, ResultsMismatch, budget_id, budget_of, load_results
from torch_impl.training.config import make_config

ROOT = Path(__file__).resolve().parents[1]
TINY = {k: v for k, v in tiny_config().items() if k not in ("model", "output_dir", "progress", "tensorboard")}
RUN_KEY = "resnet20_cifar.seed0"  # the one run of `table2 --rows resnet --seeds 1`


def _args(tmp_path, *extra, **sets):
    pairs = [a for k, v in {**TINY, **sets}.items() for a in ("--set", f"{k}={v}")]
    return ["table2", "--rows", "resnet", "--seeds", "1", *extra, *pairs,
            "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--no-progress"]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.1)


def _gone(proc: psutil.Process) -> bool:
    try:  # an orphan is reaped by whoever adopts it; a container's init may leave it a zombie
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@contextlib.contextmanager
def _holding(folder: Path):
    """Another live process holding ``folder``'s lock, as a second runner or a training run does."""
    # folder_lock.py loaded on its own: the torch_impl package would import torch (seconds)
    code = "import importlib.util as u, sys; s = u.spec_from_file_location('folder_lock', sys.argv[2]); " \
           "m = u.module_from_spec(s); s.loader.exec_module(m); lock = m.lock_folder(sys.argv[1]); " \
           "print('held', flush=True); sys.stdin.read()"  # fmt: skip
    module = ROOT / "torch_impl" / "folder_lock.py"
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder), str(module)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()  # the holder ends, and the OS drops its lock
        holder.wait(timeout=60)


# ----------------------------------------------------------------------------- a runner killed mid-run


def test_a_killed_runner_takes_its_run_with_it_and_a_restart_resumes(tmp_path):
    """SIGKILL the runner while a run trains: the child ends too (its epochs saved), and the next runner
    resumes the run in place, so that every epoch is in metrics.csv once."""
    argv = [sys.executable, "-m", "torch_impl.experiments", *_args(tmp_path, epochs=5000)]
    runner = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = []
    try:
        last = lambda: list((tmp_path / "runs").glob(f"*/{RUN_KEY}/last.pth"))  # noqa: E731
        _wait_for(lambda: last() or runner.poll() is not None, 180, "the run's first checkpoint")
        assert runner.poll() is None, "the runner ended before its run had trained an epoch"
        children = psutil.Process(runner.pid).children(recursive=True)
        assert any("torch_impl.experiments.child" in " ".join(c.cmdline()) for c in children)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        _wait_for(lambda: all(_gone(c) for c in children), 30, "the orphaned child to end")
    finally:
        runner.kill()
        for child in children:  # a child that outlived the runner must not outlive the test
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    (run_dir,) = [p.parent for p in last()]
    log = run_dir.parent / f"{RUN_KEY}.log"
    assert "interrupted by SIGTERM" in log.read_text()  # ended as a training run ends on SIGTERM
    saved = _epochs(run_dir)
    # The restart resumes the run in the same folder; stopped (SIGTERM) once it has trained on a little.
    restart = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_epochs(run_dir)) > len(saved) + 1 or restart.poll() is not None, 180, "resumed epochs")
        restart.send_signal(signal.SIGTERM)
        assert restart.wait(timeout=60) == 130, restart.stderr.read()
    finally:
        restart.kill()
    assert f"resuming after epoch {saved[-1]}" in log.read_text()
    epochs = _epochs(run_dir)
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > len(saved)  # each once: one writer
    assert [p.name for p in run_dir.parent.iterdir() if p.is_dir()] == [RUN_KEY]


def _epochs(run_dir: Path) -> list[int]:
    try:
        with (run_dir / "metrics.csv").open() as f:
            return [int(r["epoch"]) for r in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def test_a_run_whose_folder_is_held_is_reported_not_trained(tmp_path, capsys):
    """A child whose run folder another live process holds waits, then ends; the runner names it."""
    assert main(_args(tmp_path, "--dry-run")) == 0
    spec = Path(capsys.readouterr().out.split()[-1])  # the dry run prints the child's command
    run_dir = spec.parent / RUN_KEY
    with _holding(run_dir) as pid:
        assert main(_args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"run {RUN_KEY} not trained: {run_dir} is in use by another process (process {pid}" in err
    assert "1 run(s) not trained, their folder held by another process" in err
    assert not (run_dir / "last.pth").exists() and not (run_dir / "record.json").exists()
    assert json.loads((tmp_path / "out" / "table2" / "results.json").read_text())["records"] == []


def test_the_child_is_told_when_its_runner_dies():
    from torch_impl.experiments.runner import parent_death_signal

    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux's; elsewhere the run folder's lock keeps a second writer out")
    assert callable(parent_death_signal())


# ----------------------------------------------------------------------------- two runners, one folder


@pytest.mark.parametrize("held, extra", [("out", ()), ("runs", ()), ("out", ("--report-only",))])
def test_a_second_runner_on_a_held_folder_stops_at_once(tmp_path, capsys, held, extra, one_error_line):
    with _holding(tmp_path / held) as pid:
        assert main(_args(tmp_path, *extra)) == 2
        line = one_error_line()
        assert line.startswith(f"error: --{held}: {tmp_path / held} is in use by another process (process {pid}")
        assert not list((tmp_path / "runs").glob("*/*"))  # nothing trained, no spec written
        assert main(_args(tmp_path, "--dry-run")) == 0  # a dry run locks nothing (and writes no results)
        assert not (tmp_path / "out" / "table2").exists()
    assert main(_args(tmp_path, "--report-only")) == 0  # the holder has gone: the folder is free again


# ----------------------------------------------------------------------------- folders that cannot be written


def _unwritable(tmp_path) -> list[Path]:
    """Paths that no one can create folders in, root included (root ignores chmod)."""
    paths = [Path("/proc/aff3d-results")]  # procfs refuses new entries: ENOENT
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        paths.append(locked / "results")  # EACCES
    return paths


@pytest.mark.parametrize("flag", ["--out", "--runs"])
def test_folders_that_cannot_be_written_are_an_error_line(tmp_path, capsys, flag, one_error_line):
    (tmp_path / "file").write_text("a file where a folder should be")
    cases = [(tmp_path / "file", "is a file, not a folder"), (tmp_path / "file" / "sub", "(ENOTDIR)")]
    cases += [(path, "(E") for path in _unwritable(tmp_path)]  # the errno's name: ENOENT, EACCES
    for path, reason in cases:
        argv = _args(tmp_path / "ok")
        argv[argv.index(flag) + 1] = str(path)
        assert main(argv) == 2, path
        line = one_error_line()
        assert line.startswith(f"error: {flag} ") and str(path.parent if "ENOTDIR" in reason else path) in line
        assert reason in line, line
    assert not list((tmp_path / "ok").glob("runs/*/*"))  # nothing trained


# ----------------------------------------------------------------------------- what a run learns


def _shapes_budget(**overrides) -> dict:
    cfg = make_config("experiments_shapes", progress=False, tensorboard=False, threads=1, **overrides)
    return {**budget_of(run_settings(cfg)), "backbone": "resnet20_cifar"}


def test_workers_is_part_of_what_a_run_learns():
    """Each loader process draws its own augmentation, so workers 0 and 2 train different weights: the
    number is part of the budget; the committed results (all trained with workers 0) keep their ids."""
    assert "workers" not in NOT_BUDGET
    assert budget_id(_shapes_budget(workers=2)) != budget_id(_shapes_budget(workers=0))
    assert budget_id(_shapes_budget(workers=1)) != budget_id(_shapes_budget(workers=2))
    assert isinstance(run_settings(make_config("quickstart", workers=None))["workers"], int)  # this machine's
    with pytest.raises(ValueError, match="not None"):
        budget_of({"workers": None})
    committed = sorted((ROOT / "docs" / "results" / "experiments").glob("table*/results.json"))
    assert len(committed) == 5
    for path in committed:
        data = load_results(path, path.parent.name, _shapes_budget(workers=0))
        assert data["records"] and all(r["budget_id"] == data["budget_id"] for r in data["records"])
        with pytest.raises(ResultsMismatch, match=r"differs in \['workers'\]"):
            load_results(path, path.parent.name, _shapes_budget(workers=2))
    assert "workers" not in budget_of(run_settings(make_config("experiments_shapes")))  # 0: implicit
