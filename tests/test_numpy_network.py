"""A whole network in NumPy (reference_numpy.network) equals the PyTorch one in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_numpy import NetworkSpec, infer_spec, resnet_forward
from reference_numpy.designs import resolve_design
from torch_impl import create_model
from torch_impl.numpy_bridge import to_numpy_params



CASES = [
    # name, kwargs, design for NumPy, image size
    ("aff3d_resnet18", {}, "aff3d", 32),
    ("aff3d_resnet164_cifar", {}, "aff3d", 8),
    ("resnet50", {}, None, 32),
    ("aff3d_resnet20_cifar", {"design": "aff3d_sum", "kernel_size": 5}, "aff3d_sum", 8),
    ("aff3d_resnet18", {"design": "mc_rs+ms_rs", "kernel_size": 1}, "mc_rs+ms_rs", 16),
]


@pytest.mark.parametrize("name, kwargs, design, size", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_numpy_network_matches_torch_float64(name, kwargs, design, size, trained_like):
    torch.manual_seed(0)
    model = trained_like(create_model(name, num_classes=10, **kwargs).double(), size)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x).numpy()
    trace: dict = {}
    got = resnet_forward(x.numpy(), to_numpy_params(model), design=design, trace=trace)
    assert got.shape == (2, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)
    # every stage is exposed for a reader stepping through, with the torch model's shapes
    with torch.no_grad():
        feats = model.forward_features(x).numpy()
    last = trace[f"layer{4 if 'cifar' not in name else 3}"]
    if "cifar" in name:
        assert last.shape == feats.shape  # forward_features adds the final BN-ReLU (in head here)
    else:
        np.testing.assert_allclose(last, feats, rtol=0, atol=1e-8)
    assert list(trace) == ["stem", *(f"layer{i}" for i in range(1, 5 if "cifar" not in name else 4)), "logits"]


def test_infer_spec_reads_the_architecture_off_the_keys():
    with torch.device("meta"):
        names = {
            n: create_model(n, **kw)
            for n, kw in [("resnet50", {}), ("resnet34", {}), ("aff3d_resnet164_cifar", {"kernel_size": 5})]
        }
    shapes = {
        n: {k: np.empty(tuple(v.shape), dtype=np.float32) for k, v in m.state_dict().items()} for n, m in names.items()
    }
    assert infer_spec(shapes["resnet50"]) == NetworkSpec("imagenet", "bottleneck", (3, 4, 6, 3))
    assert infer_spec(shapes["resnet34"]) == NetworkSpec("imagenet", "basic", (3, 4, 6, 3))
    spec = infer_spec(shapes["aff3d_resnet164_cifar"], "aff3d")
    assert (spec.stem, spec.block, spec.layers) == ("cifar", "preact", (18, 18, 18))
    assert spec.design == resolve_design("aff3d", kernel_size=5, reduction=4)  # k and d read from the weights


def test_infer_spec_errors():
    def params(name, **kw):
        with torch.device("meta"):
            m = create_model(name, **kw)
        return {k: np.empty(tuple(v.shape)) for k, v in m.state_dict().items()}

    aff = params("aff3d_resnet18")
    with pytest.raises(ValueError, match="pass its design"):
        infer_spec(aff)
    with pytest.raises(ValueError, match="does not fit the spatial conv's 128 input channels for C=64"):
        infer_spec(aff, "aff3d_sum")
    with pytest.raises(ValueError, match="lacks a spatial branch"):
        infer_spec(aff, "mc_r")
    with pytest.raises(ValueError, match="hold no attention"):
        infer_spec(params("resnet18"), "aff3d")
    with pytest.raises(ValueError, match="3D-AFF attention only"):
        infer_spec(params("se_resnet18"), "aff3d")
    with pytest.raises(ValueError, match="expected stages layer1..layerN"):
        infer_spec({"conv1.weight": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ValueError, match="NetworkSpec block"):
        NetworkSpec("imagenet", "wide", (2, 2))
    with pytest.raises(ValueError, match="expected images"):
        resnet_forward(np.zeros((3, 8, 8)), aff, design="aff3d")
