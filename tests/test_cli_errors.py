"""User mistakes end as one line ``error: ...`` and exit status 2 (train, evaluate, zoo, the converter).

Each test is a probe a new user ran into: a traceback before, a sentence that names the problem now.
"""

from __future__ import annotations

import os
import pickle
import re
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_run import tiny_config

from detectron2_ext import convert_checkpoint as converter
from torch_impl import create_model
from torch_impl.data.cifar import FOLDER
from torch_impl.evaluate import main as evaluate_main
from torch_impl.train import main as train_main
from torch_impl.training import checkpoint as ckpt
from torch_impl.training import make_config, run
from torch_impl.zoo.__main__ import main as zoo_main

FAST = ["--image-size", "16", "--train-samples", "32", "--val-samples", "16", "--batch-size", "8",
        "--epochs", "1", "--steps-per-epoch", "2", "--no-progress", "--no-tensorboard", "--threads", "1"]  # fmt: skip


def write_tiny_cifar100(root, n=8, names=None):
    """``root/cifar-100-python/{train,test,meta}`` in the official layout (bytes keys, uint8 rows)."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(n))}
        (folder / split).write_bytes(pickle.dumps(batch))
    names = names or [f"class{i:02d}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))
    return root


def error_of(main, argv, capsys) -> str:
    """Run a command's ``main``; assert it ends with status 2 and one ``error:`` line; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run of resnet20_cifar on shapes."""
    return run(**tiny_config(tmp_path_factory.mktemp("trained"), model="resnet20_cifar", epochs=1, run_name="r"))


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet21"], "unknown model 'resnet21'"),
        (["--model-kwargs", "{bogus: 1}"], r"unknown option\(s\) \['bogus'\]"),
        (["--model", "aff3d_resnet20_cifar", "--model-kwargs", "{reduction: 0}"], "positive integer d, got 0"),
        (["--model-kwargs", "{num_classes: 5}"], "model_kwargs may not set num_classes"),
        (["--run-name", "../../x"], "run_name must be a plain folder name"),
        (["--data-dir", "/data"], "--data-dir /data does not apply to the built-in shapes data set"),
    ],
)
def test_train_refuses_bad_settings(tmp_path, capsys, argv, message):
    line = error_of(train_main, [*FAST, "--output-dir", str(tmp_path / "a" / "runs"), *argv], capsys)
    assert re.search(message, line), line
    assert not list(tmp_path.iterdir())  # nothing written (runs/../../x would be tmp_path / "x")


def test_train_missing_and_malformed_data(tmp_path, capsys):
    line = error_of(train_main, [*FAST, "--dataset", "cifar100", "--data-dir", str(tmp_path / "none")], capsys)
    assert "CIFAR-100 not found under" in line
    data = write_tiny_cifar100(tmp_path / "data")
    (data / FOLDER / "train").write_bytes(b"\x80\x04not a pickle")
    line = error_of(train_main, [*FAST, "--dataset", "cifar100", "--data-dir", str(data), "--image-size", "32",
                                 "--train-samples", "none", "--val-samples", "none"], capsys)  # fmt: skip
    assert "train is not a readable CIFAR-100 pickle" in line


def test_recipe_numbers_are_yaml_12_and_every_type_is_checked(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("lr: 1e-3\nwarmup_lr: 5E-4\nepochs: 3\n")
    cfg = make_config(tmp_path / "r.yaml")
    assert (cfg.lr, cfg.warmup_lr, cfg.epochs) == (0.001, 0.0005, 3) and isinstance(cfg.lr, float)
    (tmp_path / "bad.yaml").write_text("lr: '0.1'\n")
    line = error_of(train_main, ["--recipe", str(tmp_path / "bad.yaml")], capsys)
    assert "lr must be a number, got '0.1' of type str" in line
    for key, value, kind in [("epochs", "2.5", "an integer"), ("channels_last", "1", "true or false"),
                             ("model_kwargs", "[4]", "a mapping"), ("run_name", "7", "a string or null")]:  # fmt: skip
        (tmp_path / "bad.yaml").write_text(f"{key}: {value}\n")
        with pytest.raises(ValueError, match=f"{key} must be {kind}"):
            make_config(tmp_path / "bad.yaml")
    assert make_config(epochs=2, lr=1).lr == 1.0  # an integer for a float field is fine


def test_resume_refuses_another_architecture_and_a_new_folder(trained, capsys, tmp_path):
    line = error_of(train_main, ["--resume", str(trained.run_dir), "--model", "se_resnet20_cifar"], capsys)
    assert "holds a different network: resnet20_cifar" in line
    for flag, value in (("--output-dir", str(tmp_path)), ("--run-name", "elsewhere")):
        line = error_of(train_main, ["--resume", str(trained.run_dir), flag, value], capsys)
        assert f"{flag} cannot be used with --resume" in line and str(trained.run_dir) in line
    with pytest.raises(ValueError, match="--run-name cannot be used with --resume"):
        run(resume=str(trained.run_dir), run_name="elsewhere")
    assert not list(tmp_path.iterdir())


def test_unwritable_output_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("a file where the output folder should be")
    line = error_of(train_main, [*FAST, "--output-dir", str(tmp_path / "file")], capsys)
    assert "error: " in line and str(tmp_path / "file") in line and "(E" in line  # errno name, e.g. EEXIST
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        line = error_of(train_main, [*FAST, "--output-dir", str(locked)], capsys)
        assert "Permission denied (EACCES)" in line


def test_full_disk_names_the_reason(tmp_path, capsys, monkeypatch):
    """ENOSPC while a checkpoint is written: the reason and the file, not torch's 'unexpected pos'."""
    import errno

    from torch_impl import atomic

    def full_disk_open(name, mode, **kw):
        f = open(name, mode, **kw)
        if str(name).endswith(".tmp") and ".pth." in str(name):
            f.close()

            class Full:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    return False

                def write(self, data):
                    raise OSError(errno.ENOSPC, "No space left on device")

            return Full()
        return f

    monkeypatch.setattr(atomic, "open", full_disk_open, raising=False)
    line = error_of(train_main, [*FAST, "--output-dir", str(tmp_path), "--run-name", "full"], capsys)
    assert line == f"error: {tmp_path / 'full' / 'last.pth'}: No space left on device (ENOSPC)"


def test_file_size_limit_in_a_real_process(tmp_path):
    """A real write failure from the operating system (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC)."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    done = subprocess.run(
        [sys.executable, "-m", "torch_impl.train", *FAST, "--model", "resnet20_cifar", "--output-dir", str(tmp_path),
         "--run-name", "big"],
        capture_output=True, text=True, timeout=300, preexec_fn=limit, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'big' / 'last.pth'}: File too large (EFBIG)"
    assert not [p.name for p in (tmp_path / "big").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_refuses_corrupt_and_foreign_files(trained, tmp_path, capsys):
    damaged = tmp_path / "damaged.pth"
    raw = bytearray((trained.run_dir / "last.pth").read_bytes())
    weights = trained.model.fc.weight.detach().numpy().tobytes()
    raw[raw.find(weights) + 5] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    assert f"error: checkpoint {damaged} is corrupt" in error_of(evaluate_main, ["--checkpoint", str(damaged)], capsys)
    (tmp_path / "noise.pth").write_bytes(os.urandom(1000))
    line = error_of(evaluate_main, ["--checkpoint", str(tmp_path / "noise.pth")], capsys)
    assert "cannot read checkpoint" in line
    line = error_of(evaluate_main, ["--checkpoint", str(trained.run_dir), "--data-dir", str(tmp_path)], capsys)
    assert "--data-dir does not apply" in line and "built-in shapes" in line


def test_evaluate_compares_class_names(tmp_path, capsys):
    data = write_tiny_cifar100(tmp_path / "data")
    settings = dict(dataset="cifar100", data_dir=str(data), image_size=32, train_samples=None, val_samples=None)
    result = run(**tiny_config(tmp_path, model="resnet20_cifar", epochs=1, steps_per_epoch=1, **settings))
    other = write_tiny_cifar100(tmp_path / "other", names=[f"class{(i + 1) % 100:02d}".encode() for i in range(100)])
    line = error_of(evaluate_main, ["--checkpoint", str(result.run_dir), "--data-dir", str(other)], capsys)
    assert "classes are not those of the cifar100 validation set" in line
    assert "100 of 100 labels differ (label 0: 'class00' vs 'class01'" in line


# ----------------------------------------------------------------------------- zoo and the converter


def test_zoo_output_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    line = error_of(zoo_main, ["--tables", "3", "--output", str(tmp_path / "file" / "zoo.md")], capsys)
    assert line == f"error: {tmp_path / 'file' / 'zoo.md'}: File exists (EEXIST)"  # its folder is a file
    with pytest.raises(SystemExit) as caught:  # argparse's own "error:" line
        zoo_main(["--tables", "3", "--output", str(tmp_path)])
    assert caught.value.code == 2 and "is a folder" in capsys.readouterr().err
    stale = tmp_path / ".zoo.md.0badf00d.tmp"  # what a write killed by SIGKILL leaves
    stale.write_text("half a table")
    assert zoo_main(["--tables", "3", "--output", str(tmp_path / "zoo.md")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "zoo.md"]


def test_converter_errors(tmp_path, capsys, trained):
    source = tmp_path / "r18.pth"
    torch.save(create_model("resnet18", num_classes=10).state_dict(), source)
    before = source.read_bytes()
    line = error_of(converter.main, [str(source), str(source)], capsys)
    assert "is the source checkpoint itself" in line
    assert source.read_bytes() == before
    line = error_of(converter.main, [str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")], capsys)
    assert "missing path" in line
    line = error_of(converter.main, [str(trained.run_dir / "last.pth"), str(tmp_path / "out.pth")], capsys)
    assert "cannot convert key" in line and "CIFAR networks have no detectron2 counterpart" in line
    state = create_model("resnet18", num_classes=10).state_dict()
    good = ckpt.save_checkpoint({"model": state}, tmp_path / "train.pth")
    assert converter.main([str(good), str(tmp_path / "out.pth")]) == 0
    raw = bytearray(good.read_bytes())
    raw[raw.find(state["layer1.0.conv1.weight"].numpy().tobytes()) + 3] ^= 0xFF
    good.write_bytes(bytes(raw))
    line = error_of(converter.main, [str(good), str(tmp_path / "out2.pth")], capsys)
    assert f"checkpoint {good} is corrupt" in line and not (tmp_path / "out2.pth").exists()
