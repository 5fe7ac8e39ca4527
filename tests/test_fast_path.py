"""The fast 3D-AFF equals the straightforward one and the NumPy reference.

First each algebraic step of ``torch_impl.attention.aff3d_fast.algebra`` on its own, then the whole module
for every design of the paper, forward and backward, train and eval, float64 to 1e-10; the memory
claim (what backward keeps); on a GPU, the routes CUDA takes. BN layers get random statistics throughout.
The routes reached through the module here are the ones the dispatch takes on these (tiny) maps with the
size rule off (``conftest.fast_forms_on_tiny_maps``); each route forced by name: ``test_fast_path_dispatch.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import reference_numpy as R
from reference_numpy.designs import DESIGNS, resolve_design
from torch_impl.attention import AFF3D
from torch_impl.attention import aff3d_fast as fast
from torch_impl.numpy_bridge import to_numpy_params

TOL = 1e-10
F64 = torch.float64
DESIGN_NAMES = sorted(DESIGNS)
# Designs whose fast path is the F_ex algebra (the others are SE or parallel gates: the autograd route).
FEX_DESIGNS = [n for n in DESIGN_NAMES if resolve_design(n).has_spatial and resolve_design(n).fusion == "fex"]


def _pair(seed: int, n=2, c=8, h=5, w=6, dtype=F64, device="cpu", channels_last=False):
    g = torch.Generator().manual_seed(seed)
    U, X = (torch.randn(n, c, h, w, generator=g, dtype=dtype).to(device) for _ in range(2))
    if channels_last:
        U, X = U.to(memory_format=torch.channels_last), X.to(memory_format=torch.channels_last)
    return U, X


def _twins(channels, design, randomize_bn, seed=0, dtype=F64, device="cpu", **switches):
    """The same weights in a fast and a straightforward module."""
    torch.manual_seed(seed)
    fast_m = randomize_bn(AFF3D(channels, design, **switches), seed).to(device, dtype)
    ref_m = AFF3D(channels, design, impl="straightforward", **switches).to(device, dtype)
    ref_m.load_state_dict(fast_m.state_dict())
    return fast_m, ref_m


def _max_diff(a, b) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b)
               if x is not None or y is not None)


# --------------------------------------------------------------------------------------------
# Step by step (the docstring of aff3d_fast numbers the steps)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r+ms_r"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_step1_split_conv_equals_conv_of_the_merged_input(design, k):
    spec = resolve_design(design, kernel_size=k)
    U, X = _pair(1, c=6)
    weight = torch.randn(1, spec.spatial_in_channels(6), k, k, dtype=F64)
    merged = {"concat": torch.cat([U, X], 1), "sum": U + X}[spec.merge] if spec.spatial_input != "residual" else U
    expected = F.conv2d(merged, weight, padding=k // 2)
    W_U, W_X = fast.split_spatial_weight(weight, spec, 6)
    split = F.conv2d(U, W_U, padding=k // 2)
    if W_X is not None:
        split = split + F.conv2d(X, W_X, padding=k // 2)
    assert _max_diff([split], [expected]) < TOL
    assert _max_diff([fast.spatial_conv_split(U, X, weight, spec)], [expected]) < TOL


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("hw", [(1, 1), (2, 7), (6, 5)])
def test_step2_kxk_conv_is_tap_projections_then_shifts(k, hw):
    x = torch.randn(3, 5, *hw, dtype=F64)
    weight = torch.randn(1, 5, k, k, dtype=F64)
    T = fast.spatial_taps(x, fast.tap_weights(weight))
    assert T.shape == (3, k * k, *hw)
    assert _max_diff([fast.shift_sum(T, k)], [F.conv2d(x, weight, padding=k // 2)]) < TOL
    assert _max_diff([fast.shift_sum_strided(T, k)], [F.conv2d(x, weight, padding=k // 2)]) < TOL
    # tap t = dy * k + dx is the 1x1 filter weight[0, :, dy, dx]
    dy, dx = k // 2, k - 1
    assert torch.equal(fast.tap_weights(weight)[dy * k + dx], weight[0, :, dy, dx])


def test_step2_projection_in_channels_last_layout_is_the_same_product():
    x = torch.randn(2, 6, 4, 5, dtype=F64)
    taps = torch.randn(9, 6, dtype=F64)
    projected = fast.spatial_taps(x.to(memory_format=torch.channels_last), taps)  # a 1x1 convolution
    assert _max_diff([projected], [torch.einsum("tc,nchw->nthw", taps, x)]) < TOL


def test_eq4_channel_squeeze_of_a_sum_is_the_sum_of_squeezes():
    U, X = _pair(2)
    spec = resolve_design("mc_rs+ms_rs")
    assert _max_diff([fast.channel_squeeze_split(U, X, spec)], [(U + X).mean((2, 3))]) < TOL


@pytest.mark.parametrize("bias", [False, True])
def test_step3_first_fex_conv_is_rank_one_over_M3D(bias):
    """W_1 M_3D = W_1 M_c + (W_1 1) M_s: F_ex's first conv never sees a C x H x W map."""
    N, C, Cd, H, W = 3, 8, 4, 5, 4
    M_c, M_s = torch.randn(N, C, dtype=F64), torch.randn(N, 1, H, W, dtype=F64)
    W1 = torch.randn(Cd, C, 1, 1, dtype=F64)
    b1 = torch.randn(Cd, dtype=F64) if bias else None
    expected = F.conv2d(M_c[:, :, None, None] + M_s, W1, b1)  # the straightforward eqs. 1 and 6
    v, r = fast.rank1_fex_input(M_c, W1.flatten(1), b1)
    assert v.shape == (N, Cd) and r.shape == (Cd,)
    hidden = v[:, :, None, None] + r[None, :, None, None] * M_s  # v_j + r_j M_s[h, w]
    assert _max_diff([hidden], [expected]) < TOL


def test_step3_attention_depends_on_a_pixel_only_through_M_s():
    """X_3D[:, h, w] = sigma(b_2 + W_2 relu(v + r M_s[h, w])): pixels with equal M_s get equal gates."""
    m = AFF3D(8, reduction=2).double().eval()
    U, X = _pair(3)
    trace: dict = {}
    R.aff3d_gate(U.numpy(), X.numpy(), to_numpy_params(m), m.design, trace=trace)
    M_s, X_3D = trace["M_s"][0, 0], trace["X_3D"][0]  # sample 0
    f = fast.inference.fold_module(m, F64)
    v = torch.from_numpy(trace["M_c"][0, :, 0, 0]) @ f.W1t + f.b1
    for m_s, expected in zip(M_s.ravel(), X_3D.reshape(8, -1).T):
        gate = torch.sigmoid(f.b2 + f.W2 @ torch.relu(v + f.r * float(m_s)))
        assert _max_diff([gate], [torch.from_numpy(expected)]) < TOL


def test_step4_batch_norm_folds_into_an_affine_map(randomize_bn):
    bn = randomize_bn(nn.BatchNorm2d(5)).double().eval()
    x = torch.randn(2, 5, 3, 3, dtype=F64)
    scale, shift = fast.fold_bn(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)
    assert _max_diff([x * scale[:, None, None] + shift[:, None, None]], [bn(x)]) < TOL


# --------------------------------------------------------------------------------------------
# The whole module: every design, train and eval, forward, backward and running statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("design", DESIGN_NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_fast_equals_straightforward_and_numpy(design, train, channels_last, randomize_bn, monkeypatch):
    # the table route is left out: the product form in both layouts (the table: test_table_gate.py)
    monkeypatch.setattr(fast.table_gate_cpu_pass, "enabled", lambda t: False)
    fast_m, ref_m = _twins(8, design, randomize_bn, reduction=2)
    fast_m.train(train), ref_m.train(train)
    U, X = _pair(5, channels_last=channels_last)
    U.requires_grad_(), X.requires_grad_()
    y_fast, y_ref = fast_m(U, X), ref_m(U, X)
    assert _max_diff([y_fast], [y_ref]) < TOL
    dout = torch.randn_like(y_ref)
    inputs_f, inputs_r = [U, X, *fast_m.parameters()], [U, X, *ref_m.parameters()]
    g_fast = torch.autograd.grad(y_fast, inputs_f, dout, allow_unused=True)
    g_ref = torch.autograd.grad(y_ref, inputs_r, dout, allow_unused=True)
    assert _max_diff(g_fast, g_ref) < TOL
    with torch.no_grad():
        assert _max_diff([fast_m(U, X)], [ref_m(U, X)]) < TOL
    # both paths moved the running statistics the same way (two forwards each in train mode)
    assert _max_diff(fast_m.state_dict().values(), ref_m.state_dict().values()) < TOL
    if not train:
        params = to_numpy_params(fast_m)
        assert _max_diff([y_fast], [torch.from_numpy(R.aff3d_gate(U.detach().numpy(), X.detach().numpy(), params,
                                                                    fast_m.design))]) < TOL


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    design=st.sampled_from(FEX_DESIGNS),
    k=st.sampled_from([1, 3, 5]),
    d=st.sampled_from([1, 2, 4]),
    n=st.integers(1, 3),
    c=st.sampled_from([4, 8, 12]),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    fex_norm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fast_inference_matches_numpy_for_any_shape(design, k, d, n, c, h, w, fex_norm, seed, randomize_bn):
    fast_m, _ = _twins(c, design, randomize_bn, seed, kernel_size=k, reduction=d, fex_norm=fex_norm)
    fast_m.eval()
    U, X = _pair(seed, n, c, h, w)
    with torch.no_grad():
        y = fast_m(U, X)
    ref = R.aff3d_gate(U.numpy(), X.numpy(), to_numpy_params(fast_m), fast_m.design)
    assert _max_diff([y], [torch.from_numpy(ref)]) < TOL


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r+ms_r", "mc_rs+ms_rs", "parallel_concat", "mc_r"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
def test_gate_add_relu_with_the_block_norm_equals_the_block_tail(design, train, relu, randomize_bn, bn_twins):
    """gate_add_relu(R, X, relu, norm) == relu(attn(norm(R), X) + X), gradients and BN statistics too."""
    fast_m, ref_m = _twins(8, design, randomize_bn, reduction=2)
    bn_f, bn_r = bn_twins(8)
    for mod in (fast_m, ref_m, bn_f, bn_r):
        mod.train(train)
    Rr, X = _pair(8, n=3)
    Rr.requires_grad_(), X.requires_grad_()
    y_fast = fast_m.gate_add_relu(Rr, X, relu=relu, norm=bn_f)
    y_ref = ref_m(bn_r(Rr), X) + X
    y_ref = y_ref.relu() if relu else y_ref
    assert _max_diff([y_fast], [y_ref]) < TOL
    dout = torch.randn_like(y_ref)
    g_fast = torch.autograd.grad(y_fast, [Rr, X, *fast_m.parameters(), *bn_f.parameters()], dout, allow_unused=True)
    g_ref = torch.autograd.grad(y_ref, [Rr, X, *ref_m.parameters(), *bn_r.parameters()], dout, allow_unused=True)
    assert _max_diff(g_fast, g_ref) < TOL
    assert _max_diff([*fast_m.state_dict().values(), *bn_f.state_dict().values()],
                     [*ref_m.state_dict().values(), *bn_r.state_dict().values()]) < TOL


def _gradcheck(module, inputs, call=None):
    """torch.autograd.gradcheck over the inputs and every parameter of ``module`` (float64)."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]

    def f(*args):
        return functional_call(module, dict(zip(names, args[len(inputs):])), args[: len(inputs)])

    # fast_mode checks v^T J u for random u, v (one backward, two forwards): as strict, far cheaper
    return torch.autograd.gradcheck(f, (*inputs, *params), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("design", DESIGN_NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gradcheck_fast_path(design, train, randomize_bn):
    m, _ = _twins(4, design, randomize_bn, reduction=2)
    m.train(train)
    U, X = _pair(9, n=2, c=4, h=3, w=3)
    assert _gradcheck(m, [U.requires_grad_(), X.requires_grad_()], None)


class _BlockTail(nn.Module):
    """relu(attn(bn(R)) + X) through gate_add_relu: the proposed block tail, as one module."""

    def __init__(self, attn: AFF3D, bn: nn.BatchNorm2d):
        super().__init__()
        self.attn, self.bn = attn, bn

    def forward(self, Rr, X):
        return self.attn.gate_add_relu(Rr, X, relu=True, norm=self.bn)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gradcheck_block_tail_with_block_norm(train, randomize_bn):
    m, _ = _twins(4, "aff3d", randomize_bn, reduction=2)
    tail = _BlockTail(m, randomize_bn(nn.BatchNorm2d(4), 3).double()).train(train)
    Rr, X = _pair(10, n=2, c=4, h=3, w=3)
    assert _gradcheck(tail, [Rr.requires_grad_(), X.requires_grad_()], None)


# --------------------------------------------------------------------------------------------
# Inference folding, determinism, autocast (the dispatch and its cache: test_fast_path_dispatch.py)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r+ms_r", "mc_rs+ms_rs"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
def test_folded_inference_with_the_block_norm_equals_the_block_tail(design, relu, randomize_bn):
    """The no-autograd path (BNs folded, the bias of F_ex's second convolution inside its product,
    the block's norm by PyTorch's batch-norm kernel) against relu(attn(norm(R), X) + X)."""
    fast_m, ref_m = _twins(8, design, randomize_bn, reduction=2)
    bn = randomize_bn(nn.BatchNorm2d(8), 7).double()
    for mod in (fast_m, ref_m, bn):
        mod.eval()
    Rr, X = _pair(9, n=2)
    with torch.no_grad():
        for _ in range(2):  # the second call takes the cached folding
            y_fast = fast_m.gate_add_relu(Rr, X, relu=relu, norm=bn)
            y_ref = ref_m(bn(Rr), X) + X
            assert _max_diff([y_fast], [y_ref.relu() if relu else y_ref]) < TOL


def test_cpu_training_step_repeats_bit_for_bit(randomize_bn):
    outs = []
    for _ in range(2):
        m, _ = _twins(8, "aff3d", randomize_bn, dtype=torch.float32, reduction=2)
        bn = nn.BatchNorm2d(8)
        Rr, X = _pair(15, dtype=torch.float32)
        Rr.requires_grad_()
        y = m.gate_add_relu(Rr, X, norm=bn)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append([y, Rr.grad, *(p.grad for p in m.parameters()), *m.state_dict().values()])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_cpu_autocast_bfloat16_stays_close(randomize_bn):
    fast_m, ref_m = _twins(16, "aff3d", randomize_bn, dtype=torch.float32, reduction=4)
    U, X = _pair(16, c=16, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_fast = fast_m.gate_add_relu(U, X)
        y_ref = torch.relu(ref_m(U, X) + X)
    assert y_fast.dtype == torch.float32 and torch.isfinite(y_fast).all()
    assert (y_fast - y_ref.float()).abs().max() < 5e-2 * y_ref.abs().max()


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("design", DESIGN_NAMES)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("route", [None, "autograd"], ids=["dispatch", "autograd"])
def test_cuda_fast_equals_straightforward_float64(design, train, route, randomize_bn):
    """On CUDA the dispatch folds at inference and trains straightforward; under torch.compile it takes
    ``autograd``, forced here by name."""
    fast_m, ref_m = _twins(8, design, randomize_bn, reduction=2, device="cuda")
    fast_m.train(train), ref_m.train(train)
    bn_f, bn_r = nn.BatchNorm2d(8).cuda().double().train(train), nn.BatchNorm2d(8).cuda().double().train(train)
    Rr, X = _pair(17, device="cuda")
    Rr.requires_grad_(), X.requires_grad_()
    if route is None:
        y_fast = fast_m.gate_add_relu(Rr, X, norm=bn_f)
    else:
        y_fast = fast.run_route(route, fast_m, Rr, X, bn_f, add=True, relu=True)
    y_ref = torch.relu(ref_m(bn_r(Rr), X) + X)
    assert _max_diff([y_fast], [y_ref]) < TOL
    dout = torch.randn_like(y_ref)
    g_f = torch.autograd.grad(y_fast, [Rr, X, *fast_m.parameters()], dout, allow_unused=True)
    g_r = torch.autograd.grad(y_ref, [Rr, X, *ref_m.parameters()], dout, allow_unused=True)
    assert _max_diff(g_f, g_r) < TOL
    with torch.no_grad():
        bn_f.eval(), bn_r.eval(), fast_m.eval(), ref_m.eval()
        assert fast.choose_route(fast_m, Rr, X, bn_f).name in ("folded", "autograd")  # autograd: SE, parallel
        assert _max_diff([fast_m.gate_add_relu(Rr, X, norm=bn_f)], [torch.relu(ref_m(bn_r(Rr), X) + X)]) < TOL


@pytest.mark.cuda
@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_rs+ms_rs"])
def test_cuda_float32_and_bf16_autocast_channels_last(design, randomize_bn, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the reference's convs in true float32
    fast_m, ref_m = _twins(64, design, randomize_bn, dtype=torch.float32, device="cuda")
    bn_f, bn_r = nn.BatchNorm2d(64).cuda(), nn.BatchNorm2d(64).cuda()
    Rr, X = _pair(18, n=4, c=64, h=14, w=14, dtype=torch.float32, device="cuda", channels_last=True)
    Rr.requires_grad_(), X.requires_grad_()
    y_fast = fast_m.gate_add_relu(Rr, X, norm=bn_f)
    y_ref = torch.relu(ref_m(bn_r(Rr), X) + X)
    assert y_fast.is_contiguous(memory_format=torch.channels_last)
    assert _max_diff([y_fast], [y_ref]) < 1e-4
    dout = torch.randn_like(y_ref)
    g_f = torch.autograd.grad(y_fast, [Rr, X, *fast_m.parameters()], dout)
    g_r = torch.autograd.grad(y_ref, [Rr, X, *ref_m.parameters()], dout)
    for a, b in zip(g_f, g_r):
        assert float((a - b).abs().max()) <= 1e-3 * max(1.0, float(b.abs().max()))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y16 = fast_m.gate_add_relu(Rr.bfloat16(), X.bfloat16(), norm=bn_f)
        y16r = torch.relu(ref_m(bn_r(Rr.bfloat16()), X.bfloat16()) + X.bfloat16())
    assert y16.dtype == torch.bfloat16
    assert float((y16.float() - y16r.float()).abs().max()) <= 5e-2 * float(y16r.float().abs().max())
    torch.autograd.grad(y16.float().sum(), [Rr, *fast_m.parameters()])
