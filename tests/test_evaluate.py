"""``python -m torch_impl.evaluate``: the checkpoint's top-1/top-5 error, as measured during training."""

from __future__ import annotations

import pytest
from tiny_run import tiny_config, write_cifar100

from torch_impl.evaluate import evaluate_checkpoint, main
from torch_impl.training import run


def tiny(out, **kw):
    return tiny_config(out, **{"model": "se_resnet20_cifar", "train_samples": 32, "val_samples": 40,
                               "steps_per_epoch": 2, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return run(**tiny(tmp_path_factory.mktemp("eval")))


def test_reproduces_the_training_evaluation(trained):
    metrics = evaluate_checkpoint(trained.run_dir / "last.pth", batch_size=16, progress=False)
    last = trained.history[-1]
    assert metrics["count"] == 40 and metrics["model"] == "se_resnet20_cifar" and metrics["epoch"] == 2
    assert metrics["top1_err"] == pytest.approx(last["val_top1_err"], abs=1e-9)
    assert metrics["top5_err"] == pytest.approx(last["val_top5_err"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(last["val_loss"], rel=1e-4)


def test_best_checkpoint_holds_the_best_epoch(trained):
    metrics = evaluate_checkpoint(trained.run_dir, progress=False)  # a run folder means its last.pth
    best = evaluate_checkpoint(trained.run_dir / "best.pth", progress=False)
    assert best["top1_err"] == pytest.approx(min(r["val_top1_err"] for r in trained.history))
    assert best["top1_err"] <= metrics["top1_err"]


def test_command_line(trained, capsys):
    assert main(["--checkpoint", str(trained.run_dir / "last.pth"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"top-1 error {trained.history[-1]['val_top1_err']:.2f}%" in out and "40 images" in out
    assert main(["--checkpoint", str(trained.run_dir / "nothing.pth")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_data_dir_must_match_the_network(tmp_path):
    write_cifar100(tmp_path / "data", n_train=16, n_test=8)
    result = run(
        **tiny(
            tmp_path,
            dataset="cifar100",
            data_dir=str(tmp_path / "data"),
            model="resnet20_cifar",
            image_size=32,
            train_samples=None,
            val_samples=None,
            epochs=1,
            steps_per_epoch=1,
        )
    )
    assert evaluate_checkpoint(result.run_dir, progress=False)["count"] == 8
    moved = tmp_path / "moved"
    write_cifar100(moved, n_train=4, n_test=6)
    assert evaluate_checkpoint(result.run_dir, data_dir=str(moved), progress=False)["count"] == 6
    with pytest.raises(FileNotFoundError, match="CIFAR-100 not found"):
        evaluate_checkpoint(result.run_dir, data_dir=str(tmp_path / "empty"), progress=False)
