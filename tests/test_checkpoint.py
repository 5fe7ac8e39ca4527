"""Checkpoints: atomic writes, weights_only loading, refusal of another architecture."""

from __future__ import annotations

import pickle
import random

import pytest
import torch
from tiny_run import tiny_config

from torch_impl import create_model
from torch_impl.training import checkpoint as ckpt
from torch_impl.training import run
from torch_impl.training.seeding import rng_state, set_rng_state


def tiny(out, **kw):
    return tiny_config(out, **{"model": "resnet20_cifar", "train_samples": 32, "val_samples": 16, "epochs": 1,
                               "steps_per_epoch": 2, **kw})


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "last.pth"
    ckpt.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    ckpt.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 2 and state["format"] == ckpt.CHECKPOINT_FORMAT


def test_crash_while_saving_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    ckpt.save_checkpoint({"epoch": 1}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. the job is killed mid-write

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_load_refuses_bare_state_dict_and_pickled_objects(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save(create_model("resnet20_cifar", num_classes=3).state_dict(), bare)
    with pytest.raises(ValueError, match="not a torch_impl.train checkpoint"):
        ckpt.load_checkpoint(bare)
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"format": ckpt.CHECKPOINT_FORMAT, "obj": random.Random(0)}, f, protocol=2)
    with pytest.raises(ValueError, match="weights_only=True"):
        ckpt.load_checkpoint(evil)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ckpt.load_checkpoint(tmp_path / "missing.pth")


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    path = ckpt.save_checkpoint({"rng": rng_state()}, tmp_path / "r.pth")
    expected = (random.random(), torch.rand(3), __import__("numpy").random.rand())
    set_rng_state(ckpt.load_checkpoint(path)["rng"])
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])
    assert __import__("numpy").random.rand() == expected[2]


def test_resume_refuses_another_architecture(tmp_path):
    result = run(**tiny(tmp_path))
    last = result.run_dir / ckpt.LAST
    state = ckpt.load_checkpoint(last)
    assert state["model_name"] == "resnet20_cifar" and state["num_classes"] == 8 and state["epoch"] == 1
    with pytest.raises(
        ValueError,
        match=r"holds a different network: resnet20_cifar \{\} with 8 classes; "
        r"this run builds aff3d_resnet20_cifar",
    ):
        run(resume=str(last), model="aff3d_resnet20_cifar", epochs=2)
    with pytest.raises(ValueError, match="holds a different network"):
        run(resume=str(result.run_dir), model_kwargs={"in_chans": 1}, epochs=2)


def test_weights_that_do_not_fit_are_named():
    model = create_model("resnet20_cifar", num_classes=8)
    other = create_model("se_resnet20_cifar", num_classes=8).state_dict()
    with pytest.raises(
        ValueError, match=r"does not fit PreActResNetCIFAR: 0 missing keys .* unexpected keys \['layer1\.0\.attn"
    ):
        ckpt.load_model_state(model, other, where="x.pth")
    smaller = create_model("resnet20_cifar", num_classes=5).state_dict()
    with pytest.raises(ValueError, match=r"1 shape mismatches|2 shape mismatches"):
        ckpt.load_model_state(model, smaller)
