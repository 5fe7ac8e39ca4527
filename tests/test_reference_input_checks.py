"""reference_numpy refuses wrong input with a ValueError naming the argument, never a quiet wrong answer.

Each case below used to return something that looked like a result (an integer sigmoid of zeros, an
empty convolution, a silent broadcast) or to fail far from the cause (ZeroDivisionError, a NumPy
broadcast error, KeyError). Pure NumPy, like the package itself.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import reference_numpy as R
from reference_numpy import primitives as P
from reference_numpy.designs import resolve_design


def rand(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def bn(prefix, n, dtype=np.float64):
    rng = np.random.default_rng(n)
    return {
        f"{prefix}.weight": rng.uniform(0.5, 1.5, n).astype(dtype),
        f"{prefix}.bias": rng.normal(0, 0.1, n).astype(dtype),
        f"{prefix}.running_mean": rng.normal(0, 0.1, n).astype(dtype),
        f"{prefix}.running_var": rng.uniform(0.5, 1.5, n).astype(dtype),
    }


def attention_params(design, C, dtype=np.float64):
    """Weights of the right shapes for a design, as notebook 1 builds them."""
    hidden, k = design.hidden_channels(C), design.kernel_size
    p = {"fex.conv1.weight": rand(hidden, C, 1, 1, seed=1, dtype=dtype)}
    p["fex.conv2.weight"] = rand(C, hidden, 1, 1, seed=2, dtype=dtype)
    if design.has_spatial:
        p["spatial.conv.weight"] = rand(1, design.spatial_in_channels(C), k, k, seed=3, dtype=dtype) / 10
        p |= bn("spatial.bn", 1, dtype)
    if design.fex_norm:
        return p | bn("fex.bn1", hidden, dtype) | bn("fex.bn2", C, dtype)
    return p | {"fex.conv1.bias": rand(hidden, seed=4, dtype=dtype), "fex.conv2.bias": rand(C, seed=5, dtype=dtype)}


DESIGN = resolve_design("aff3d", reduction=2)
X = rand(2, 4, 5, 5)
FLOAT = "expected a floating-point array, got"


# ---- integer and bool arrays are refused, not cast (sigmoid of int64 [0, 1, -1] was [0, 0, 0]) ----
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: P.sigmoid(np.array([0, 1, -1])), f"sigmoid: x: {FLOAT} int64"),
        (lambda: P.sigmoid(np.array([True, False])), f"sigmoid: x: {FLOAT} bool"),
        (lambda: P.relu(np.array([1, -2])), f"relu: x: {FLOAT} int64"),
        (lambda: P.conv2d(X.astype(np.int64), rand(2, 4, 3, 3)), f"conv2d: x: {FLOAT} int64"),
        (lambda: P.conv2d(X, np.ones((2, 4, 1, 1), int)), f"conv2d: weight: {FLOAT} int64"),
        (lambda: P.global_avg_pool(X.astype(np.int32)), f"global_avg_pool: x: {FLOAT} int32"),
        (lambda: P.max_pool2d(X.astype(np.int64), 3, 2, 1), f"max_pool2d: x: {FLOAT} int64"),
        (lambda: P.linear(rand(2, 3), np.ones((4, 3), int)), f"linear: weight: {FLOAT} int64"),
        (lambda: R.eq4_channel_squeeze(np.ones((1, 2, 3, 3), int)), f"eq4_channel_squeeze: U: {FLOAT} int64"),
        (lambda: R.aff3d_gate(X.astype(int), X, attention_params(DESIGN, 4), DESIGN), f"aff3d_gate: U: {FLOAT} int64"),
    ],
    ids=["sigmoid", "sigmoid-bool", "relu", "conv2d-x", "conv2d-w", "gap", "max_pool2d", "linear", "eq4", "aff3d_gate"],
)
def test_integer_and_bool_arrays_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- a kernel larger than the (padded) map used to give an empty array ----
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: P.conv2d(rand(1, 1, 2, 2), rand(1, 1, 3, 3)), r"conv2d: weight: .*the padded map 2x2 .* got 3x3"),
        (lambda: P.conv2d(rand(1, 1, 2, 2), rand(1, 1, 5, 5), padding=1),
         r"conv2d: weight: expected a kernel .* padded map 4x4 \(H=2, W=2, padding=1\), got 5x5"),
        (lambda: P.max_pool2d(rand(1, 1, 2, 2), 3, 1), r"max_pool2d: kernel_size: .*padded map 2x2 .* got 3x3"),
        (lambda: P.max_pool2d(rand(1, 1, 2, 4), 3, 2), r"max_pool2d: kernel_size: .*padded map 2x4 .* got 3x3"),
    ],
    ids=["conv2d", "conv2d-padded", "max_pool2d", "max_pool2d-one-side"],
)
def test_kernel_larger_than_padded_map(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- stride 0 (ZeroDivisionError) and negative padding ----
@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: P.conv2d(X, rand(2, 4, 3, 3), stride=0), r"conv2d: stride: expected an integer >= 1, got 0"),
        (lambda: P.max_pool2d(X, 3, stride=0), r"max_pool2d: stride: expected an integer >= 1, got 0"),
        (lambda: P.conv2d(X, rand(2, 4, 3, 3), padding=-1), r"conv2d: padding: expected an integer >= 0, got -1"),
        (lambda: P.max_pool2d(X, 3, 2, padding=-1), r"max_pool2d: padding: expected an integer >= 0, got -1"),
    ],
    ids=["conv2d-stride", "max_pool2d-stride", "conv2d-padding", "max_pool2d-padding"],
)
def test_stride_and_padding(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- eq. 1 takes M_c (N, C, 1, 1) and M_s (N, 1, H, W), nothing that merely broadcasts ----
@pytest.mark.parametrize(
    "M_c,M_s,message",
    [
        (rand(2, 3), rand(2, 3), r"eq1_fuse: M_c: expected shape \(N, C, 1, 1\), got \(2, 3\)"),
        (rand(2, 3, 1, 1), rand(4, 4), r"eq1_fuse: M_s: expected shape \(N, 1, H, W\) = \(2, 1, H, W\), got \(4, 4\)"),
        (rand(2, 3, 4, 4), rand(2, 1, 4, 4), r"eq1_fuse: M_c: expected shape \(N, C, 1, 1\), got \(2, 3, 4, 4\)"),
        (rand(2, 3, 1, 1), rand(2, 3, 4, 4), r"eq1_fuse: M_s: expected shape .* = \(2, 1, H, W\), got \(2, 3, 4"),
        (rand(2, 3, 1, 1), rand(1, 1, 4, 4), r"eq1_fuse: M_s: expected shape .* = \(2, 1, H, W\), got \(1, 1, 4"),
    ],
    ids=["2-D", "M_s-2-D", "M_c-full-map", "M_s-all-channels", "M_s-other-batch"],
)
def test_eq1_fuse_shapes(M_c, M_s, message):
    with pytest.raises(ValueError, match=message):
        R.eq1_fuse(M_c, M_s)


# ---- bias and batch-norm parameter lengths against the channel count ----
BN_ARGS = ["weight (gamma)", "bias (beta)", "running_mean", "running_var"]


@pytest.mark.parametrize("length", [3, 1])  # 3: a raw broadcast error before; 1: silently broadcast
@pytest.mark.parametrize("i", range(4), ids=BN_ARGS)
def test_batch_norm_parameter_lengths(i, length):
    args = [np.ones(4) for _ in range(4)]
    args[i] = np.ones(length)
    message = rf"batch_norm: {re.escape(BN_ARGS[i])}: expected a 1-D array of length C=4, got shape \({length},\)"
    with pytest.raises(ValueError, match=message):
        P.batch_norm(X, *args)


@pytest.mark.parametrize("length", [3, 1])
def test_bias_lengths(length):
    got = rf"got shape \({length},\)"
    with pytest.raises(ValueError, match=rf"conv2d: bias: expected a 1-D array of length C_out=2, {got}"):
        P.conv2d(X, rand(2, 4, 3, 3), np.ones(length))
    with pytest.raises(ValueError, match=rf"linear: bias: expected a 1-D array of length out=2, {got}"):
        P.linear(rand(5, 3), rand(2, 3), np.ones(length))


def test_parameter_shapes_name_the_entry():
    """Inside the attention the message also says which entry of params was wrong."""
    p = attention_params(DESIGN, 4)
    message = "batch_norm: running_var: expected a 1-D array of length C=2, got shape (3,) [conv_bn params 'fex.conv1'"
    with pytest.raises(ValueError, match=re.escape(message)):
        R.eq6_feature_fusion(X, p | {"fex.bn1.running_var": np.ones(3)})
    message = "eq6_feature_fusion: params['fex.conv1.weight']: expected shape (C/d, C, 1, 1) = (C/d, 4, 1, 1), got"
    with pytest.raises(ValueError, match=re.escape(message)):
        R.eq6_feature_fusion(X, p | {"fex.conv1.weight": rand(2, 3, 1, 1)})
    message = "eq5_spatial_attention: params['spatial.conv.weight']: expected shape (1, C_in, k, k) = (1, 8, 3, 3), got"
    with pytest.raises(ValueError, match=re.escape(message)):
        R.eq5_spatial_attention(X, X, p | {"spatial.conv.weight": rand(1, 8, 5, 5)}, DESIGN)  # design k = 3
    with pytest.raises(ValueError, match=r"linear: weight: expected shape \(out, in\) = \(out, 3\), got \(2, 4\)"):
        P.linear(rand(5, 3), rand(2, 4))


# ---- missing parameter entries: a ValueError listing them, not a KeyError ----
def without(params, key):
    return {k: v for k, v in params.items() if k != key}


NO_NORM = resolve_design(DESIGN, fex_norm=False)


@pytest.mark.parametrize(
    "call,missing",
    [
        (lambda: R.aff3d_gate(X, X, {}, DESIGN), "aff3d_gate: params: missing keys ['spatial.conv.weight', 'spatial"),
        (lambda: R.aff3d_gate(X, X, without(attention_params(DESIGN, 4), "fex.bn2.running_var"), DESIGN),
         "aff3d_gate: params: missing keys ['fex.bn2.running_var']"),
        # weights with F_ex's BN, a design without it: the BN used to be applied regardless
        (lambda: R.aff3d_gate(X, X, attention_params(DESIGN, 4), NO_NORM),
         "aff3d_gate: params: missing keys ['fex.conv1.bias', 'fex.conv2.bias']"),
        (lambda: R.basic_block(X, {}), "basic_block: params: missing keys ['conv1.weight', 'conv2.weight', 'bn1."),
        (lambda: R.aff3d.conv_bn(X, {"c.weight": rand(1, 4, 1, 1)}, "c", "bn"), "conv_bn: params: missing keys ['bn."),
    ],
    ids=["aff3d_gate-empty", "aff3d_gate-one-missing", "aff3d_gate-design-without-bn", "basic_block", "conv_bn"],
)
def test_missing_parameter_entries(call, missing):
    with pytest.raises(ValueError, match=re.escape(missing)):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r", "parallel_concat"])
def test_valid_float32_and_float64_input_still_works(dtype, design):
    """The checks refuse nothing valid: both float dtypes pass, and float32 stays float32."""
    d = resolve_design(design, reduction=2, fex_norm=design != "mc_r")
    U, X_l = rand(2, 4, 5, 6, seed=7, dtype=dtype), rand(2, 4, 5, 6, seed=8, dtype=dtype)
    trace: dict = {}
    out = R.aff3d_gate(U, X_l, attention_params(d, 4, dtype), d, trace=trace)
    assert out.dtype == dtype and out.shape == U.shape
    exact = R.aff3d_gate(U.astype(np.float64), X_l.astype(np.float64), attention_params(d, 4), d)
    np.testing.assert_allclose(out, exact, rtol=0, atol=1e-5 if dtype == np.float32 else 0)
    if "M_3D" in trace:
        assert R.eq1_fuse(trace["M_c"], trace["M_s"]).dtype == dtype
        assert R.eq7_output(U, trace["X_3D"], X_l).shape == U.shape
    x = rand(1, 4, 7, 7, dtype=dtype)
    assert P.conv2d(x, rand(3, 4, 3, 3, dtype=dtype), rand(3, dtype=dtype), stride=2, padding=1).dtype == dtype
    assert P.max_pool2d(x, 3, 2, 1).shape == (1, 4, 4, 4)
    assert P.batch_norm(x, *bn("bn", 4, dtype).values()).dtype == dtype
    assert P.sigmoid(np.array([0.0, 1.0, -1.0], dtype))[0] == 0.5
    assert P.linear(rand(2, 4, dtype=dtype), rand(3, 4, dtype=dtype), rand(3, dtype=dtype)).dtype == dtype
