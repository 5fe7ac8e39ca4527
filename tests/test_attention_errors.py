"""Bad input gets a ValueError naming what was expected and what came; never a silent broadcast."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import reference_numpy as R
from reference_numpy.designs import resolve_design
from torch_impl.attention import AFF3D, CBAM, ECA, SE, create_attention, get_attention
from torch_impl.numpy_bridge import to_numpy_params

LAYERS = {"aff3d": lambda c: AFF3D(c, reduction=4), "se": lambda c: SE(c, 4), "cbam": lambda c: CBAM(c, 4), "eca": ECA}


@pytest.mark.parametrize("name", LAYERS)
def test_residual_and_shortcut_of_different_shapes(name):
    m = LAYERS[name](16)
    with pytest.raises(ValueError, match=r"one shape, got \(2, 16, 8, 8\) and \(2, 16, 4, 4\)"):
        m(torch.randn(2, 16, 8, 8), torch.randn(2, 16, 4, 4))


@pytest.mark.parametrize("name", LAYERS)
def test_channel_count_the_module_was_not_built_for(name):
    m = LAYERS[name](16)
    x = torch.randn(1, 8, 4, 4)
    with pytest.raises(ValueError, match="built for C=16 channels, got input with 8"):
        m(x, x)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("shape", [(16, 4, 4), (1, 16, 4, 4, 1), (2, 16)])
def test_non_4d_input(name, shape):
    m = LAYERS[name](16)
    x = torch.randn(*shape)
    with pytest.raises(ValueError, match=re.escape(f"expected a 4-D residual (N, C, H, W), got shape {shape}")):
        m(x, x)


def test_reduction_larger_than_channels():
    with pytest.raises(ValueError, match="reduction d=32 is larger than the channel count C=16"):
        AFF3D(16, reduction=32)
    with pytest.raises(ValueError, match="SE reduction: expected 1 <= r <= C=16, got 32"):
        SE(16, reduction=32)


def test_unknown_design_name():
    with pytest.raises(ValueError, match=r"unknown 3D-AFF design 'aff4d': expected one of \['aff3d', "):
        AFF3D(16, design="aff4d")
    with pytest.raises(ValueError, match="unknown 3D-AFF design"):
        resolve_design("Mc^r")


@pytest.mark.parametrize(
    "switch,value,message",
    [
        ("merge", "product", r"merge: expected one of \['concat', 'sum'\], got 'product'"),
        ("spatial_input", "skip", r"spatial_input: expected one of"),
        ("channel_input", "both", r"channel_input: expected one of"),
        ("fusion", "serial", r"fusion: expected one of"),
        ("kernel_size", 4, r"kernel_size: expected a positive odd integer \(1, 3, 5, ...\), got 4"),
        ("kernel_size", 0, r"kernel_size: expected a positive odd integer"),
        ("reduction", 0, r"reduction: expected a positive integer d, got 0"),
    ],
)
def test_bad_switch_values(switch, value, message):
    with pytest.raises(ValueError, match=message):
        AFF3D(16, **{switch: value})


def test_unknown_switch_and_parallel_without_spatial():
    with pytest.raises(ValueError, match=r"unknown 3D-AFF switch\(es\) \['kernel'\]"):
        AFF3D(16, kernel=3)
    with pytest.raises(ValueError, match="fusion='parallel' needs a spatial branch"):
        AFF3D(16, fusion="parallel", spatial_input="none")


def test_unknown_attention_name():
    with pytest.raises(ValueError, match=r"unknown attention 'sk': expected one of \['none', 'se', 'cbam', 'eca', 'aff3d'\]"):
        get_attention("sk")
    with pytest.raises(ValueError, match="attention 'none' takes no options"):
        create_attention("none", 16, reduction=4)


def test_numpy_reference_rejects_mismatched_shapes_too():
    m = AFF3D(8, reduction=2).double().eval()
    with pytest.raises(ValueError, match=r"U and shortcut X_l must have one shape, got \(1, 8, 4, 4\) and \(1, 8, 2, 2\)"):
        R.aff3d_gate(np.zeros((1, 8, 4, 4)), np.zeros((1, 8, 2, 2)), to_numpy_params(m), m.design)
