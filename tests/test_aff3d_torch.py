"""The PyTorch attention layers on CPU and CUDA, in float32/float64 and under bf16/fp16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_numpy as R
from reference_numpy.designs import DESIGNS
from torch_impl.attention import create_attention
from torch_impl.models import Bottleneck
from torch_impl.attention import get_attention
from torch_impl.numpy_bridge import to_numpy_params

ATTENTIONS = ["aff3d", "se", "cbam", "eca"]


def _layer(name, c=32):
    return create_attention(name, c, reduction=4) if name in ("aff3d", "se", "cbam") else create_attention(name, c)


@pytest.mark.parametrize("name", ATTENTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept_and_gradients_flow(name, dtype):
    torch.manual_seed(0)
    m = _layer(name).to(dtype).train()
    U = torch.randn(2, 32, 6, 5, dtype=dtype, requires_grad=True)
    X_l = torch.randn(2, 32, 6, 5, dtype=dtype, requires_grad=True)
    out = m(U, X_l)
    assert out.dtype == dtype and out.shape == U.shape
    out.square().mean().backward()
    assert U.grad is not None and torch.isfinite(U.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    if name == "aff3d":  # the spatial branch sees the shortcut: X_l gets a gradient through eq. 5
        assert X_l.grad.abs().sum() > 0


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_float32_module_matches_reference_to_float32_precision(design, randomize_bn):
    torch.manual_seed(1)
    m = randomize_bn(create_attention("aff3d", 16, design=design, reduction=4).eval())
    U, X_l = torch.randn(2, 16, 7, 7), torch.randn(2, 16, 7, 7)
    ref = R.aff3d_gate(U.double().numpy(), X_l.double().numpy(), to_numpy_params(m), m.design)
    np.testing.assert_allclose(m(U, X_l).detach().numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ATTENTIONS)
def test_cpu_bf16_autocast_stays_close(name):
    torch.manual_seed(2)
    m = _layer(name).eval()
    U, X_l = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    ref = m(U, X_l)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(U, X_l)
    assert out.dtype in (torch.bfloat16, torch.float32)
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_block_trains_under_cpu_autocast():
    torch.manual_seed(3)
    b = Bottleneck(32, 8, attn_layer=get_attention("aff3d", reduction=4))
    x = torch.randn(2, 32, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = b(x).float().square().mean()
    loss.backward()
    assert torch.isfinite(b.attn.spatial.conv.weight.grad).all()


@pytest.mark.cuda
@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_cuda_float64_matches_reference(design, randomize_bn):
    torch.manual_seed(4)
    m = randomize_bn(create_attention("aff3d", 16, design=design, reduction=4, kernel_size=5)).double().eval()
    U, X_l = torch.randn(3, 16, 9, 6, dtype=torch.float64), torch.randn(3, 16, 9, 6, dtype=torch.float64)
    ref = R.aff3d_gate(U.numpy(), X_l.numpy(), to_numpy_params(m), m.design)
    out = m.cuda()(U.cuda(), X_l.cuda()).cpu().detach().numpy()
    assert np.abs(out - ref).max() < 1e-10


@pytest.mark.cuda
@pytest.mark.parametrize("name", ATTENTIONS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_forward_backward(name, dtype):
    torch.manual_seed(5)
    m = _layer(name).cuda().train()
    U = torch.randn(4, 32, 14, 14, device="cuda", requires_grad=True)
    X_l = torch.randn(4, 32, 14, 14, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        out = m(U, X_l)
    assert out.dtype in (dtype, torch.float32)
    out.float().sum().backward()
    assert torch.isfinite(U.grad).all()
    with torch.no_grad():
        m.eval()
        full = m(U, X_l)
        with torch.autocast("cuda", dtype=dtype):
            half = m(U, X_l)
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()
