"""What AFF3D accepts, and the same answer from both implementations: integer and mixed-dtype
input, empty batches (eval, whole networks too), and a batch too small for batch norm in training."""

from __future__ import annotations

import re

import pytest
import torch

from torch_impl.attention import AFF3D, CBAM, ECA, SE
from torch_impl.models.registry import create_model

IMPLS = ["fast", "straightforward"]


def _module(impl, train=False, **kw):
    torch.manual_seed(0)
    return AFF3D(8, reduction=2, impl=impl, **kw).train(train)


def _raises_same(calls, match):
    """Every call raises ValueError with one and the same message, matching ``match``."""
    messages = []
    for call in calls:
        with pytest.raises(ValueError, match=match) as exc:
            call()
        messages.append(str(exc.value))
    assert len(set(messages)) == 1, messages


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_integer_input_is_refused_by_both_implementations(train):
    U = torch.randint(-3, 4, (2, 8, 5, 5))
    calls = [lambda impl=impl: _module(impl, train)(U, U) for impl in IMPLS]
    calls += [lambda impl=impl: _module(impl, train).gate_add_relu(U, U) for impl in IMPLS]
    with torch.no_grad():
        _raises_same(calls, re.escape("AFF3D: expected a floating-point residual, got torch.int64"))


@pytest.mark.parametrize("layer", [lambda: SE(8, 2), lambda: CBAM(8, 2), lambda: ECA(8)], ids=["se", "cbam", "eca"])
def test_integer_input_is_refused_by_the_other_attentions_too(layer):
    U = torch.randint(-3, 4, (2, 8, 5, 5))
    with pytest.raises(ValueError, match="expected a floating-point residual, got torch.int64"):
        layer()(U, U)


@pytest.mark.parametrize(
    "U_dtype, X_dtype, match",
    [
        (torch.float32, torch.float64, "one dtype, got torch.float32 and torch.float64"),
        (torch.float64, torch.float32, "one dtype, got torch.float64 and torch.float32"),
        (torch.float64, torch.float64, "input is torch.float64 but the module's weights are torch.float32"),
        (torch.bfloat16, torch.bfloat16, "input is torch.bfloat16 but the module's weights are torch.float32"),
    ],
)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_mixed_dtypes_get_the_same_error_from_both_implementations(U_dtype, X_dtype, match, train):
    U, X = torch.randn(2, 8, 5, 5, dtype=U_dtype), torch.randn(2, 8, 5, 5, dtype=X_dtype)
    _raises_same([lambda impl=impl: _module(impl, train)(U, X) for impl in IMPLS], re.escape(match))


def test_mixed_dtypes_under_autocast_run_on_both_implementations():
    """Autocast mixes precisions by design (a bf16 conv output beside a float32 shortcut)."""
    U, X = torch.randn(2, 8, 5, 5).bfloat16(), torch.randn(2, 8, 5, 5)
    outs = []
    for impl in IMPLS:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(_module(impl)(U, X).float())
    assert (outs[0] - outs[1]).abs().max() < 0.05 * outs[1].abs().max()


# --------------------------------------------------------------------------------------------
# Empty batches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r", "parallel_concat"])
def test_empty_batch_in_eval_gives_an_empty_output(design):
    U = torch.randn(0, 8, 5, 5)
    for impl in IMPLS:
        m = _module(impl, design=design)
        with torch.no_grad():
            assert m(U, U).shape == (0, 8, 5, 5)
            assert m.gate_add_relu(U, U, norm=torch.nn.BatchNorm2d(8).eval()).shape == (0, 8, 5, 5)


@pytest.mark.parametrize("name, size", [("aff3d_resnet20_cifar", 32), ("aff3d_resnet50", 64)])
def test_empty_batch_through_a_whole_network_as_for_the_plain_one(name, size):
    x = torch.randn(0, 3, size, size)
    with torch.no_grad():
        plain = create_model(name.replace("aff3d_", ""), num_classes=8).eval()(x)
        ours = create_model(name, num_classes=8).eval()(x)
    assert ours.shape == plain.shape == (0, 8)


# --------------------------------------------------------------------------------------------
# One value per channel in training
# --------------------------------------------------------------------------------------------


def test_a_batch_of_one_1x1_map_in_training_gets_a_clear_error():
    U = torch.randn(1, 8, 1, 1)
    msg = ("AFF3D: Expected more than 1 value per channel when training, got input size (1, 8, 1, 1): the "
           "block's norm normalises over 1 value per channel. Train with a batch of 2 or more")
    norm = torch.nn.BatchNorm2d(8)
    _raises_same([lambda impl=impl: _module(impl, True).gate_add_relu(U, U, norm=norm) for impl in IMPLS],
                 re.escape(msg))
    _raises_same([lambda impl=impl: _module(impl, True)(U, U) for impl in IMPLS],
                 re.escape("F_conv's BN (over M_s) normalises over 1 value per channel"))


def test_se_design_needs_two_samples_in_training_whatever_the_map_size():
    """F_ex over M_c (N, C, 1, 1): its BN sees one value per channel and sample."""
    U = torch.randn(1, 8, 6, 6)
    _raises_same([lambda impl=impl: _module(impl, True, design="mc_r")(U, U) for impl in IMPLS],
                 re.escape("F_ex's BN normalises over 1 value per channel"))
    _module("fast", True, design="mc_r", fex_norm=False)(U, U)  # no BN at all: nothing to refuse
    _module("fast", True)(U, U)  # 36 values per channel: fine


def test_eval_mode_takes_a_single_1x1_map():
    U = torch.randn(1, 8, 1, 1)
    outs = [_module(impl)(U, U) for impl in IMPLS]
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
