"""timm: ``import torch_impl`` registers every network, timm's own APIs train and evaluate it.

timm's train.py / validate.py are not in the timm wheel; ``torch_impl.timm_run`` runs them with our
networks registered. Here: one batch through the pieces those scripts call (create_model,
resolve_data_config, create_dataset, create_loader, create_optimizer_v2, a timm loss,
timm.utils.accuracy), and the launcher with a stand-in script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_impl import create_model, list_models
from torch_impl.data.transforms import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from torch_impl.timm_models import LEFT_TO_TIMM, REGISTERED, register_timm_models, timm_installed

needs_timm = pytest.mark.skipif(not timm_installed(), reason="timm is not installed (pip install -e .[dev])")
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@needs_timm
def test_every_network_is_a_timm_model_and_timms_own_are_untouched():
    import timm

    assert sorted(REGISTERED + LEFT_TO_TIMM) == list_models()
    assert sorted(LEFT_TO_TIMM) == sorted(f"resnet{depth}" for depth in (18, 34, 50, 101, 152))
    assert all(timm.is_model(name) for name in list_models())
    assert sorted(timm.list_models(module="timm_models")) == sorted(REGISTERED)
    assert "aff3d_resnet50" in REGISTERED and "resnet164_cifar" in REGISTERED
    # timm's resnet50 keeps its own entrypoint and weights
    assert timm.models.get_pretrained_cfg("resnet50").hf_hub_id.startswith("timm/")
    assert register_timm_models() == []  # idempotent


@needs_timm
@pytest.mark.parametrize(
    "name, size, pool, mean, std, classes, crop",
    [
        ("aff3d_resnet50", 224, 7, IMAGENET_MEAN, IMAGENET_STD, 1000, 0.875),
        ("se_resnet164_cifar", 32, 8, CIFAR100_MEAN, CIFAR100_STD, 100, 1.0),
    ],
)
def test_timm_create_model_fills_pretrained_cfg(name, size, pool, mean, std, classes, crop):
    import timm
    from timm.data import resolve_data_config

    with torch.device("meta"):
        model = timm.create_model(name)
        small = timm.create_model(name, num_classes=7)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, size, size) and cfg["pool_size"] == (pool, pool)
    assert cfg["mean"] == tuple(mean) and cfg["std"] == tuple(std)
    assert cfg["num_classes"] == classes and model.fc.out_features == classes == model.num_classes
    assert cfg["classifier"] == "fc" and cfg["first_conv"] == "conv1" and cfg["architecture"] == name
    assert isinstance(model.get_submodule(cfg["first_conv"]), torch.nn.Conv2d)
    assert small.fc.out_features == 7 and small.num_classes == 7
    data = resolve_data_config({}, model=model)
    assert data["input_size"] == (3, size, size) and data["crop_pct"] == crop
    assert model.model_name == name  # built by torch_impl.create_model


@needs_timm
def test_options_reach_the_attention_and_timms_generic_ones_are_checked(tmp_path):
    import timm

    with torch.device("meta"):
        m = timm.create_model("aff3d_resnet18", kernel_size=5, reduction=8, drop_rate=0.0, global_pool="avg")
        g = timm.create_model(
            "aff3d_resnet18", drop_rate=0.2, global_pool="max", drop_path_rate=0.1, bn_momentum=0.05, bn_eps=1e-3
        )
    assert m.layer1[0].attn.design.kernel_size == 5 and m.layer1[0].attn.design.reduction == 8
    # timm's generic options (tests/test_timm_contract.py checks what they do)
    assert g.drop_rate == 0.2 and g.global_pool.pool_type == "max" and g.layer4[-1].drop_path.p == 0.1
    assert g.bn1.momentum == 0.05 and g.layer1[0].attn.fex.bn1.eps == 1e-3
    for kwargs, match in [
        ({"drop_rate": 1.5}, "drop_rate: expected 0 <= rate < 1"),
        ({"global_pool": "min"}, "global_pool: expected one of"),
        ({"drop_block_rate": 0.1}, "no DropBlock"),
        ({"pretrained": True}, "no published weights"),
        ({"attn_drop_rate": 0.1}, r"unknown option\(s\) \['attn_drop_rate'\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            timm.create_model("aff3d_resnet18", **kwargs)
    # pretrained=True with a file: timm's loader puts our own state_dict back. Like timm's own models,
    # a head whose size differs from pretrained_cfg's num_classes (100 for CIFAR) starts afresh.
    torch.manual_seed(0)
    src = create_model("se_resnet20_cifar", num_classes=10)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    for overlay, fresh in (({"num_classes": 10}, set()), ({}, {"fc.weight", "fc.bias"})):
        overlay = {"file": str(tmp_path / "w.pth"), **overlay}
        loaded = timm.create_model("se_resnet20_cifar", pretrained=True, num_classes=10, pretrained_cfg_overlay=overlay)
        differ = {k for k, v in loaded.state_dict().items() if not torch.equal(src.state_dict()[k], v)}
        assert differ == fresh, overlay


def _image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 32) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@needs_timm
def test_one_batch_through_timms_training_and_validation_pieces(tmp_path):
    """What timm's train.py / validate.py do with a model, one batch each, on a 3-class image folder."""
    import timm
    from timm.data import create_dataset, create_loader, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import AverageMeter, accuracy

    _image_folder(tmp_path)
    torch.manual_seed(0)
    model = timm.create_model("aff3d_resnet20_cifar", num_classes=3, reduction=4)
    data_config = resolve_data_config({}, model=model)
    loaders = {}
    for split, training in (("train", True), ("validation", False)):
        dataset = create_dataset("", root=str(tmp_path), split=split, is_training=training)
        assert len(dataset) == 12
        loaders[split] = create_loader(
            dataset, **data_config, batch_size=4, is_training=training, use_prefetcher=False, num_workers=0
        )
    optimizer = create_optimizer_v2(model, opt="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = LabelSmoothingCrossEntropy(smoothing=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    model.train()
    x, y = next(iter(loaders["train"]))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    attn = "layer1.0.attn.fex.conv1.weight"
    assert not torch.equal(before[attn], model.state_dict()[attn])  # the attention trains

    model.eval()
    top1 = AverageMeter()
    with torch.no_grad():
        for x, y in loaders["validation"]:
            acc1, _ = accuracy(model(x), y, topk=(1, 2))
            top1.update(acc1.item(), x.size(0))
    assert top1.count == 12 and 0.0 <= top1.avg <= 100.0


def test_without_timm_nothing_is_registered_and_nothing_breaks():
    code = (
        "import sys; sys.modules['timm'] = None\n"  # an interpreter where timm cannot be imported
        "import torch_impl\n"
        "from torch_impl.timm_models import REGISTERED, register_timm_models, timm_installed\n"
        "assert not timm_installed() and REGISTERED == [] and register_timm_models() == []\n"
        "print(type(torch_impl.create_model('aff3d_resnet20_cifar')).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PreActResNetCIFAR"


STAND_IN = (
    "import sys, timm\n"
    "model = timm.create_model(sys.argv[1], num_classes=int(sys.argv[2]))\n"
    "print(__name__, sys.argv[0].endswith('train.py'), type(model).__name__, model.fc.out_features)\n"
)


@needs_timm
@pytest.mark.slow
def test_python_m_timm_run_launches_a_script_with_our_networks_registered(tmp_path):
    """A stand-in for timm's train.py: it only calls timm.create_model(argv[1]), as the real one does."""
    (tmp_path / "train.py").write_text(STAND_IN)
    cmd = [sys.executable, "-m", "torch_impl.timm_run", str(tmp_path / "train.py"), "eca_resnet20_cifar", "5"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["__main__", "True", "PreActResNetCIFAR", "5"]


@needs_timm
def test_timm_run_in_process_and_its_errors(tmp_path, monkeypatch, capsys):
    from torch_impl import timm_run

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "train.py").write_text(STAND_IN)
    timm_run.main([str(tmp_path / "train.py"), "aff3d_resnet20_cifar", "3"])
    assert capsys.readouterr().out.split() == ["__main__", "True", "PreActResNetCIFAR", "3"]
    assert sys.path[0] == str(tmp_path)  # as `python train.py` would have it
    for args, stream in (([], "out"), ([str(tmp_path / "missing.py")], "err"), ([str(tmp_path)], "err")):
        with pytest.raises(SystemExit) as e:
            timm_run.main(args)
        assert e.value.code == 2, args
        text = getattr(capsys.readouterr(), stream)
        assert ("usage:" if stream == "out" else "error:") in text, args
