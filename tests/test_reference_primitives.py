"""The NumPy primitives against PyTorch's own layers, and the no-torch rule of reference_numpy/."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_numpy import primitives as P

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c_in=st.integers(1, 5),
    c_out=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    seed=st.integers(0, 10_000),
)
def test_conv2d_matches_torch(n, c_in, c_out, h, w, k, stride, seed):
    padding = k // 2
    x, wt, b = rand(n, c_in, h, w, seed=seed), rand(c_out, c_in, k, k, seed=seed + 1), rand(c_out, seed=seed + 2)
    ours = P.conv2d(x, wt, b, stride=stride, padding=padding)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b), stride=stride, padding=padding)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=1e-12)


def test_conv2d_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="expects 3 input channels, input has 2"):
        P.conv2d(rand(1, 2, 4, 4), rand(1, 3, 3, 3))


def test_batch_norm_matches_torch_eval():
    x, g, b, m, v = rand(2, 3, 4, 5), rand(3, seed=1), rand(3, seed=2), rand(3, seed=3), rand(3, seed=4) ** 2 + 0.1
    ref = F.batch_norm(*(torch.from_numpy(a) for a in (x, m, v, g, b)), training=False, eps=1e-5)
    np.testing.assert_allclose(P.batch_norm(x, g, b, m, v), ref.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("h,w", [(7, 7), (8, 5), (1, 1)])
def test_max_pool_matches_torch(h, w):
    x = rand(2, 3, h, w)
    ref = F.max_pool2d(torch.from_numpy(x), 3, 2, 1)
    np.testing.assert_array_equal(P.max_pool2d(x, 3, 2, 1), ref.numpy())


def test_pool_linear_relu_sigmoid_match_torch():
    x = rand(2, 6, 3, 4)
    np.testing.assert_allclose(P.global_avg_pool(x), F.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy(), atol=1e-15)
    np.testing.assert_array_equal(P.relu(x), torch.relu(torch.from_numpy(x)).numpy())
    wt, b, v = rand(5, 6, seed=1), rand(5, seed=2), rand(2, 6, seed=3)
    np.testing.assert_allclose(P.linear(v, wt, b), F.linear(*map(torch.from_numpy, (v, wt, b))).numpy(), atol=1e-14)
    big = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    with np.errstate(over="raise", invalid="raise"):  # no overflow, even at +-1000
        s = P.sigmoid(big)
    np.testing.assert_allclose(s, torch.sigmoid(torch.from_numpy(big)).numpy(), rtol=1e-15, atol=0)


def test_four_d_is_required():
    with pytest.raises(ValueError, match=r"expected a 4-D array \(N, C, H, W\), got shape \(3, 4\)"):
        P.global_avg_pool(np.zeros((3, 4)))


def test_reference_numpy_never_imports_torch():
    """Statically (every import statement) and dynamically (a fresh interpreter)."""
    offenders = []
    for path in sorted((ROOT / "reference_numpy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert offenders == []
    code = "import sys, reference_numpy, reference_numpy.blocks; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
