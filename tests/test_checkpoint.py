"""Checkpoints: atomic writes, checksums, weights_only loading, refusal of another architecture."""

from __future__ import annotations

import errno
import pickle
import random

import pytest
import torch
from tiny_run import tiny_config

from torch_impl import atomic, create_model
from torch_impl.checksum import ChecksumError
from torch_impl.pretrained import load_pretrained
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
    assert ckpt.load_checkpoint(path)["epoch"] == 2  # its checksum verifies


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


def flip_bytes_in_tensor(path, tensor: torch.Tensor, offset: int = 8) -> None:
    """Damage ``path`` as a bad disk would: flip the bits of one byte inside ``tensor``'s stored data."""
    raw = bytearray(path.read_bytes())
    at = raw.find(tensor.numpy().tobytes())
    assert at >= 0 and raw.find(tensor.numpy().tobytes(), at + 1) < 0, "the tensor's bytes must occur once"
    raw[at + offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_inside_a_tensor_are_detected(tmp_path):
    weights = torch.linspace(-1, 1, 256)
    path = ckpt.save_checkpoint({"epoch": 1, "model": {"w": weights}}, tmp_path / "last.pth")
    flip_bytes_in_tensor(path, weights)
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["w"], weights)  # torch.load does not notice
    with pytest.raises(ChecksumError, match=rf"checkpoint {path} is corrupt"):
        ckpt.load_checkpoint(path)
    with pytest.raises(ChecksumError, match="is corrupt"):  # the same file as pretrained weights
        load_pretrained(create_model("resnet20_cifar"), path)


def test_checksum_covers_values_beside_tensors(tmp_path):
    path = ckpt.save_checkpoint({"epoch": 12345678, "model": {}}, tmp_path / "last.pth")
    raw = path.read_bytes()
    path.write_bytes(raw.replace((12345678).to_bytes(4, "little"), (12345679).to_bytes(4, "little")))
    with pytest.raises(ChecksumError, match="is corrupt"):
        ckpt.load_checkpoint(path)


def test_resume_refuses_a_corrupt_checkpoint(tmp_path):
    result = run(**tiny(tmp_path))
    last = result.run_dir / ckpt.LAST
    flip_bytes_in_tensor(last, result.model.fc.weight.detach())
    with pytest.raises(ChecksumError, match=rf"checkpoint {last} is corrupt"):
        run(resume=str(result.run_dir), epochs=2)


def test_full_disk_fails_with_its_reason_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, tmp_path / "last.pth")

    class FullDisk:
        """A file on a disk that fills up after the first few bytes, as os.write reports it."""

        def __init__(self, name, mode):
            self.f = open(name, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(atomic, "open", FullDisk, raising=False)
    with pytest.raises(OSError, match=r"No space left on device: '.*last\.pth'") as caught:
        ckpt.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]
    assert ckpt.load_checkpoint(path)["epoch"] == 1


def test_stale_temporary_files_are_found_by_name(tmp_path):
    for name in ("last.pth", ".last.pth.0a1b2c3d.tmp", ".best.pth.ffff.tmp", ".other.0a1b.tmp", "x.tmp"):
        (tmp_path / name).write_bytes(b"")
    removed = atomic.remove_stale_temporaries(tmp_path, ["last.pth", "best.pth"])
    assert [p.name for p in removed] == [".best.pth.ffff.tmp", ".last.pth.0a1b2c3d.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.0a1b.tmp", "last.pth", "x.tmp"]
