"""A run folder has one writer; a diverged run never leaves a checkpoint that cannot be resumed; a recipe
file that cannot be what the user meant is an error naming it.

No assertion depends on a number that training produces (rounding differs between CPUs): each
situation is constructed, e.g. a learning rate of 1e30, which no network survives for two steps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tiny_run import tiny_config

from torch_impl.folder_lock import LOCK_NAME, try_lock_folder
from torch_impl.train import main as train_main
from torch_impl.training import checkpoint as ckpt
from torch_impl.training import load_checkpoint, make_config, read_csv, run, run_folder, runner
from torch_impl.training.optim import build_optimizer, build_scheduler, rescale_lr
from torch_impl.training.signals import deferred_signals

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--model", "resnet20_cifar", "--image-size", "16", "--train-samples", "32", "--val-samples", "16",
              "--batch-size", "8", "--steps-per-epoch", "2", "--threads", "1", "--no-progress",
              "--no-tensorboard"]  # fmt: skip


def flags(settings: dict) -> list[str]:
    """``tiny_config``'s dict as command-line flags."""
    args = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            args += [flag, str(value)]
    return args


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def wait_for(path: Path, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the process ended before {what}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def assert_finite(state: dict) -> None:
    assert ckpt.non_finite_entries(state["model"], state["optimizer"]) == []


def lock_is_free(folder: Path) -> bool:
    lock = try_lock_folder(folder)
    if lock is None:
        return False
    lock.release()
    return True


# ----------------------------------------------------------------------------- one writer per run folder

# ``python -m torch_impl.train ARGS`` behind a start gate: the slow imports first, then every process
# waits for the file GO, so two runs begin within milliseconds of each other, not a whole import apart.
GATED_TRAIN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from torch_impl.train import main
    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.002)
    sys.exit(main(sys.argv[3:]))
    """
)


def test_two_runs_started_at_once_with_one_name_get_a_folder_each(tmp_path):
    go = tmp_path / "go"
    procs = {}
    for seed in (0, 1):
        argv = [*TINY_FLAGS, "--epochs", "1", "--seed", str(seed), "--output-dir", str(tmp_path / "runs"),
                "--run-name", "conc"]  # fmt: skip
        procs[seed] = subprocess.Popen(
            [sys.executable, "-c", GATED_TRAIN, str(tmp_path / f"ready{seed}"), str(go), *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
        )  # fmt: skip
    try:
        for seed, proc in procs.items():
            wait_for(tmp_path / f"ready{seed}", proc, "the imports")
        go.touch()
        done = {seed: proc.communicate(timeout=300) for seed, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    folders = {}
    for seed, (out, err) in done.items():
        assert procs[seed].returncode == 0, err[-2000:]
        summary = [line for line in out.splitlines() if "val top-1 error" in line]
        assert len(summary) == 1, out
        folders[seed] = Path(summary[0].rsplit("; outputs in ", 1)[1])
        assert f"outputs in {folders[seed]}" in out  # the first line too names its own folder
    assert sorted(folders.values()) == [tmp_path / "runs" / "conc", tmp_path / "runs" / "conc-2"]
    for seed, folder in folders.items():
        assert load_checkpoint(folder)["config"]["seed"] == seed
        assert lock_is_free(folder)  # released when the process ended


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A run folder holding one epoch (of two), to resume."""
    out = tmp_path_factory.mktemp("runs")
    return run(**tiny_config(out, model="resnet20_cifar", run_name="one", stop_after_epochs=1, threads=1)).run_dir


HOLD = textwrap.dedent(
    """
    import sys
    from torch_impl.folder_lock import lock_folder
    lock = lock_folder(sys.argv[1])
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    """
)


def test_resume_of_a_folder_another_process_writes_is_refused_naming_it(one_epoch, capsys, monkeypatch):
    monkeypatch.setattr(run_folder, "RESUME_WAIT_S", 0.5)  # the wait for a dying holder: short here
    before = (one_epoch / "last.pth").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(one_epoch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env(),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train_main(["--resume", str(one_epoch)]) == 2
        line = error_line(capsys)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert line.startswith(f"error: {one_epoch} is in use by another process (process {holder.pid} on "), line
    assert (one_epoch / "last.pth").read_bytes() == before  # nothing was written
    # The holder is gone: the same resume now runs (and releases the folder, so a second run() can too).
    resumed = run(resume=str(one_epoch))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert lock_is_free(one_epoch)


def test_a_killed_run_leaves_a_lock_file_that_never_blocks_its_resume(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "killed"
    argv = [*TINY_FLAGS, "--epochs", "500", "--output-dir", str(tmp_path), "--run-name", "killed"]
    proc = subprocess.Popen([sys.executable, "-m", "torch_impl.train", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env(), start_new_session=True)  # fmt: skip
    try:
        wait_for(run_dir / "last.pth", proc, "the first checkpoint")
        assert not lock_is_free(run_dir)  # the live run holds it
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert (run_dir / LOCK_NAME).exists()  # its lock file stays, naming a dead process
    saved = load_checkpoint(run_dir)["epoch"]
    monkeypatch.setattr(run_folder, "RESUME_WAIT_S", 0.0)  # no waiting: the lock must be free at once
    capsys.readouterr()
    resumed = run(resume=str(run_dir), stop_after_epochs=1)
    assert f"resuming after epoch {saved}" in capsys.readouterr().out
    assert [r["epoch"] for r in resumed.history] == list(range(1, saved + 2))
    assert load_checkpoint(run_dir)["epoch"] == saved + 1


# ----------------------------------------------------------------------------- divergence


def diverging(out, **kw):
    """Epoch 1 trains at warmup_lr 0.01 (its 3 steps are the warm-up); from epoch 2 on the lr is 1e30,
    and weight decay alone multiplies every weight by 1e26 per step: inf or nan within 2 steps."""
    return tiny_config(out, model="resnet20_cifar", epochs=3, optimizer="sgd", lr=1e30, weight_decay=1e-4,
                       lr_schedule="constant", warmup_steps=3, warmup_lr=0.01, threads=1, **kw)  # fmt: skip


def test_a_diverged_run_keeps_its_last_finite_epoch_and_resumes_from_it_with_a_new_lr(tmp_path, capsys):
    settings = diverging(tmp_path, run_name="div")
    run_dir = tmp_path / "div"
    assert train_main(flags(settings)) == 2
    line = error_line(capsys)
    assert re.match(r"error: (train )?epoch 2/3: ", line), line  # the loss or the state check, whichever is first
    assert f"{run_dir / 'last.pth'} keeps epoch 1, the last finite state" in line
    assert f"--resume {run_dir} --lr" in line
    for name in ("last.pth", "best.pth"):
        state = load_checkpoint(run_dir / name)
        assert state["epoch"] == 1
        assert_finite(state)
    assert [r["epoch"] for r in read_csv(run_dir / "metrics.csv")] == [1]
    assert lock_is_free(run_dir)  # released on the error

    assert train_main(["--resume", str(run_dir), "--lr", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "learning rate 1e+30 -> 0.01" in out and "resuming after epoch 1" in out and "3/3 epochs" in out
    state = load_checkpoint(run_dir / "last.pth")
    assert state["epoch"] == 3 and state["config"]["lr"] == 0.01
    assert_finite(state)
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3]
    assert [r["lr"] for r in state["history"]] == pytest.approx([0.01, 0.01, 0.01])  # warm-up, then the new lr
    assert [r["epoch"] for r in read_csv(run_dir / "metrics.csv")] == [1, 2, 3]


def _break_after_epoch_2(monkeypatch, what: str) -> list[str]:
    """Make epoch 2 end in a state that its losses do not show, or with a non-finite validation loss;
    the returned list receives the name of the tensor made non-finite."""
    real_train, real_evaluate = runner.train_one_epoch, runner.evaluate
    broken = []

    def train_one_epoch(model, loader, steps, optimizer, *args, desc="train", **kwargs):
        metrics = real_train(model, loader, steps, optimizer, *args, desc=desc, **kwargs)
        if "epoch 2/" in desc:
            with torch.no_grad():
                if what == "running statistics":  # BN uses batch statistics in training: the loss stays finite
                    name, bn = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
                    bn.running_var[0] = float("inf")
                    broken.append(f"{name}.running_var")
                elif what == "momentum":  # read by the next step only
                    name, weight = list(model.named_parameters())[-2]  # the classifier's weight
                    optimizer.state[weight]["momentum_buffer"].view(-1)[0] = float("nan")
                    broken.append(f"momentum_buffer of {name}")
        return metrics

    def evaluate(*args, desc="val", **kwargs):
        metrics = real_evaluate(*args, desc=desc, **kwargs)
        if what == "validation loss" and "epoch 2/" in desc:
            return {**metrics, "loss": float("nan")}
        return metrics

    monkeypatch.setattr(runner, "train_one_epoch", train_one_epoch)
    monkeypatch.setattr(runner, "evaluate", evaluate)
    return broken


@pytest.mark.parametrize("what", ["running statistics", "momentum", "validation loss"])
def test_a_non_finite_state_or_validation_loss_is_never_saved(tmp_path, monkeypatch, what):
    broken = _break_after_epoch_2(monkeypatch, what)
    settings = tiny_config(tmp_path, model="resnet20_cifar", run_name="broken", epochs=3, optimizer="sgd", threads=1)
    with pytest.raises(FloatingPointError) as err:
        run(**settings)
    message = str(err.value)
    if what == "validation loss":
        assert "the validation loss is non-finite (inf or nan)" in message, message
    else:
        assert f"non-finite (inf or nan) in 1 tensor(s), e.g. {broken}" in message, message
    assert message.startswith("epoch 2/3: ") and "keeps epoch 1, the last finite state" in message, message
    run_dir = tmp_path / "broken"
    state = load_checkpoint(run_dir / "last.pth")
    assert state["epoch"] == 1
    assert_finite(state)
    assert [r["epoch"] for r in read_csv(run_dir / "metrics.csv")] == [1]


def test_a_checkpoint_saved_with_non_finite_weights_is_refused_by_name(one_epoch, tmp_path):
    state = load_checkpoint(one_epoch)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name].view(-1)[0] = float("nan")  # as an older version could save a diverged epoch
    ckpt.save_checkpoint(state, tmp_path / "poisoned" / "last.pth")
    expected = f"holds non-finite values (inf or nan) in 1 tensor(s), e.g. ['{name}']"
    with pytest.raises(ValueError, match=re.escape(expected)):
        run(resume=str(tmp_path / "poisoned"))


@pytest.mark.parametrize("schedule", ["step", "multistep", "cosine", "constant"])
@pytest.mark.parametrize("steps_done", [1, 7, 11])  # in the warm-up, after it, after a step of the schedule
def test_resume_with_another_lr_follows_the_new_lrs_schedule(schedule, steps_done):
    """The restored optimizer and scheduler, moved to lr 0.1, agree with a run that had lr 0.1 all along."""
    common = dict(epochs=4, lr_schedule=schedule, lr_step_size=2, lr_milestones=[0.5], warmup_steps=2,
                  warmup_lr=0.05)  # fmt: skip
    steps_per_epoch = 3

    def stepped(lr: float, steps: int):
        net = torch.nn.Linear(2, 2)
        optimizer = build_optimizer(net, make_config(lr=lr, **common))
        scheduler = build_scheduler(optimizer, make_config(lr=lr, **common), steps_per_epoch)
        for _ in range(steps):
            optimizer.step()  # no gradients: only the schedule moves
            scheduler.step()
        return optimizer, scheduler

    old_opt, old_sched = stepped(1.0, steps_done)
    opt, sched = stepped(0.1, 0)  # the resumed run's, before its states are restored
    opt.load_state_dict(old_opt.state_dict())
    sched.load_state_dict(old_sched.state_dict())
    assert rescale_lr(opt, sched, 0.1) == 1.0
    ref_opt, ref_sched = stepped(0.1, steps_done)
    for _ in range(4):  # now and for the steps after
        assert sched.get_last_lr() == pytest.approx(ref_sched.get_last_lr())
        assert sched.base_lrs == ref_sched.base_lrs == [0.1]
        for key in ("lr", "initial_lr"):
            assert opt.param_groups[0][key] == pytest.approx(ref_opt.param_groups[0][key]), key
        opt.step(), sched.step(), ref_opt.step(), ref_sched.step()
    assert rescale_lr(opt, sched, 0.1) is None  # the same lr: nothing to do


# ----------------------------------------------------------------------------- stop signals


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)  # as the experiment child's SIGTERM handler does


def test_a_signal_inside_deferred_signals_is_delivered_when_the_block_ends():
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        finished = False
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler would have run by now
            finished = True
        assert finished
        assert signal.getsignal(signal.SIGTERM) is _raise_interrupt  # the handler is put back
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_while_an_epoch_is_written_waits_until_its_files_are(tmp_path, monkeypatch):
    """SIGTERM arriving while the curve is drawn: raised inside matplotlib, it could surface as another
    error (pybind11 turns it into a TypeError). It is held until metrics.csv and the curve are written."""
    draw = runner.RunLog._plot

    def plot_after_a_stop(self, history):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        draw(self, history)

    monkeypatch.setattr(runner.RunLog, "_plot", plot_after_a_stop)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with pytest.raises(runner.TrainingInterrupted, match="interrupted by SIGTERM: epoch 1/2 is saved") as err:
            run(tiny_config(tmp_path, epochs=2, run_name="stopped"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    run_dir = err.value.run_dir
    assert (run_dir / "curve.png").exists()
    assert [row["epoch"] for row in read_csv(run_dir / "metrics.csv")] == [1]
    assert load_checkpoint(run_dir / ckpt.LAST)["epoch"] == 1


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("content", [b"", b"# only a comment\n\n# and another\n", b"---\n"])
def test_an_empty_recipe_is_an_error_naming_it(tmp_path, capsys, content):
    recipe = tmp_path / "empty.yaml"
    recipe.write_bytes(content)
    assert train_main(["--recipe", str(recipe), *TINY_FLAGS, "--output-dir", str(tmp_path / "runs")]) == 2
    assert error_line(capsys) == f"error: recipe {recipe} is empty: expected a mapping of recipe keys to values, " \
                                 "e.g. 'epochs: 10'"  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_a_recipe_that_is_not_utf8_is_an_error_naming_it(tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("# café\nepochs: 1\n".encode("latin-1"))
    assert train_main(["--recipe", str(recipe), *TINY_FLAGS, "--output-dir", str(tmp_path / "runs")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: recipe {recipe} is not UTF-8 text (invalid continuation byte at byte 5)"), line
    assert not (tmp_path / "runs").exists()
