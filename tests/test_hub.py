"""torch.hub: ``torch.hub.load(<repo dir>, name, source="local")`` builds every network (no network needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from torch_impl import create_model, list_models

ROOT = Path(__file__).resolve().parents[1]


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_lists_exactly_the_zoo():
    """What torch.hub.list returns: the public callables of hubconf.py."""
    hub = _hubconf()
    entrypoints = sorted(f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_"))
    assert entrypoints == list_models()
    for dep in hub.dependencies:
        assert importlib.util.find_spec(dep) is not None, dep


@pytest.mark.parametrize("name", list_models())
def test_torch_hub_load_builds_every_network(name):
    with torch.device("meta"):
        model = torch.hub.load(str(ROOT), name, source="local", num_classes=7, verbose=False)
        direct = create_model(name, num_classes=7)
    assert model.model_name == name and type(model) is type(direct)
    assert model.fc.out_features == 7
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in direct.state_dict().items()}


def test_hub_options_and_weights(tmp_path):
    torch.manual_seed(0)
    src = create_model("aff3d_resnet20_cifar", num_classes=5, reduction=8)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    weights = str(tmp_path / "w.pth")
    model = torch.hub.load(
        str(ROOT), "aff3d_resnet20_cifar", source="local", pretrained=weights, num_classes=5, reduction=8
    )
    assert model.layer1[0].attn.design.reduction == 8
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no published weights"):
        torch.hub.load(str(ROOT), "aff3d_resnet50", source="local", pretrained=True)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['kernel'\]"):
        torch.hub.load(str(ROOT), "aff3d_resnet50", source="local", kernel=3)
