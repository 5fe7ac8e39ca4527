"""The table gate on CUDA: route ``fused_table`` (``FusedTail`` with ``Plan.table``) and its Triton kernels.

On CPU: the route (with the PyTorch specification in place of the kernels) equals the straightforward
module for every F_ex design, k and d, with and without the block's norm, train and eval, forward,
backward, gradcheck and running statistics, float64 to 1e-10; the kernels equal their specification
in Triton's interpreter (float64), at ties and with the norm applied on the fly. On a GPU (``cuda``):
the kernels in float32 and bf16, the route against the straightforward path, and the dispatch.
"""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from reference_numpy.designs import DESIGNS, resolve_design
from torch_impl.attention import AFF3D
from torch_impl.attention import aff3d_fast as fast
from torch_impl.attention import table_gate as tg

TOL = 1e-10
F64 = torch.float64
FEX_DESIGNS = [n for n in sorted(DESIGNS) if resolve_design(n).has_spatial and resolve_design(n).fusion == "fex"]


def _max_diff(a, b) -> float:
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b) if x is not None and y is not None)


def _twins(channels, design, randomize_bn, seed=0, device="cpu", dtype=F64, **switches):
    torch.manual_seed(seed)
    m = randomize_bn(AFF3D(channels, design, **switches), seed).to(device, dtype)
    ref = AFF3D(channels, design, impl="straightforward", **switches).to(device, dtype)
    ref.load_state_dict(m.state_dict())
    return m, ref


def _pair(seed, n=2, c=8, h=5, w=6, device="cpu", dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, h, w, generator=g, dtype=F64).to(device, dtype) for _ in range(2))


def _run(m, Rr, X, norm, add, relu):
    return fast.run_route("fused_table", m, Rr, X, norm, add, relu)


def _straight(ref, Rr, X, norm, add, relu):
    U = Rr if norm is None else norm(Rr)
    y = ref(U, X) + X if add else ref(U, X)
    return y.relu() if relu else y


@pytest.mark.parametrize("design", FEX_DESIGNS)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_fused_table_route_equals_straightforward(design, k, d, train, randomize_bn, bn_twins):
    m, ref = _twins(8, design, randomize_bn, kernel_size=k, reduction=d)
    bn_t, bn_r = bn_twins(8)
    for mod in (m, ref, bn_t, bn_r):
        mod.train(train)
    for norm_t, norm_r, add, relu in ((bn_t, bn_r, True, True), (None, None, False, False)):
        Rr, X = _pair(k * 10 + d, n=3)
        Rr.requires_grad_(), X.requires_grad_()
        y_t, y_r = _run(m, Rr, X, norm_t, add, relu), _straight(ref, Rr, X, norm_r, add, relu)
        assert _max_diff([y_t], [y_r]) < TOL
        dout = torch.randn_like(y_r)
        extra_t = [] if norm_t is None else list(norm_t.parameters())
        extra_r = [] if norm_r is None else list(norm_r.parameters())
        g_t = torch.autograd.grad(y_t, [Rr, X, *m.parameters(), *extra_t], dout, allow_unused=True)
        g_r = torch.autograd.grad(y_r, [Rr, X, *ref.parameters(), *extra_r], dout, allow_unused=True)
        assert _max_diff(g_t, g_r) < TOL
    # running statistics moved as the straightforward modules moved theirs (once per call)
    assert _max_diff([*m.state_dict().values(), *bn_t.state_dict().values()],
                     [*ref.state_dict().values(), *bn_r.state_dict().values()]) < TOL


def test_fused_table_route_with_constant_hidden_units_and_no_fex_norm(randomize_bn):
    """r_j = W_1 1 = 0 for two hidden units (constant in m), and F_ex with biases instead of BNs."""
    for fex_norm in (True, False):
        m, ref = _twins(8, "aff3d", randomize_bn, reduction=2, fex_norm=fex_norm)
        with torch.no_grad():
            w = m.fex.conv1.weight
            w[:2, 4:] = -w[:2, :4]
            ref.load_state_dict(m.state_dict())
        Rr, X = _pair(4)
        Rr.requires_grad_()
        y_t, y_r = _run(m.train(), Rr, X, None, True, True), _straight(ref.train(), Rr, X, None, True, True)
        assert _max_diff([y_t], [y_r]) < TOL
        dout = torch.randn_like(y_r)
        assert _max_diff(torch.autograd.grad(y_t, [Rr, *m.parameters()], dout),
                         torch.autograd.grad(y_r, [Rr, *ref.parameters()], dout)) < TOL


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_gradcheck_fused_table_route_with_block_norm(train, randomize_bn):
    m, _ = _twins(4, "aff3d", randomize_bn, reduction=2)
    bn = randomize_bn(nn.BatchNorm2d(4), 3).double()
    m.train(train), bn.train(train)
    Rr, X = _pair(10, n=2, c=4, h=3, w=3)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(Rr, X, *ps):
        with torch.nn.utils.stateless._reparametrize_module(m, dict(zip(names, ps))):
            return _run(m, Rr, X, bn, True, True)

    assert torch.autograd.gradcheck(f, (Rr.requires_grad_(), X.requires_grad_(), *params), eps=1e-6,
                                    atol=1e-7, rtol=1e-5, fast_mode=True)


def test_cpu_never_takes_the_cuda_table(randomize_bn):
    m, _ = _twins(8, "aff3d", randomize_bn, reduction=2)
    Rr, X = _pair(0, h=16, w=16)
    assert not fast.cuda_table(m.train(), Rr.requires_grad_(), None)
    assert fast.choose_route(m, Rr, X).name != "fused_table"


_KERNEL_CHECK = textwrap.dedent(
    """
    import torch
    from torch_impl.attention import table_gate as tg
    from torch_impl.kernels import table_triton as tt

    torch.manual_seed(0)
    worst = 0.0
    for N, C, H, W, K, cl in [(2, 24, 5, 7, 6, False), (3, 40, 4, 4, 3, True), (1, 16, 9, 3, 17, True)]:
        dt = torch.float64
        R, X = torch.randn(N, C, H, W, dtype=dt), torch.randn(N, C, H, W, dtype=dt)
        if cl:
            R, X = R.to(memory_format=torch.channels_last), X.to(memory_format=torch.channels_last)
        v, r = torch.randn(N, K, dtype=dt), torch.randn(K, dtype=dt)
        r[0] = 0  # a constant unit
        v[:, 2] = v[:, 1] * r[2] / r[1]  # a repeated breakpoint
        W2, b2 = torch.randn(C, K, dtype=dt), torch.randn(C, dtype=dt)
        m = torch.randn(N, 1, H, W, dtype=dt)
        edges, order, nb = tg.breakpoints(v, r)
        m.view(N, -1)[:, 0] = edges[:, 1]  # a pixel on a breakpoint
        idx = tg.interval_index(m, edges, nb)
        alpha, beta = tg.interval_tables(v, r, W2, b2, order)
        sc, sh = torch.rand(C, dtype=dt) + 0.5, torch.randn(C, dtype=dt)
        for norm in (False, True):
            for add, relu in ((True, True), (False, False), (True, False)):
                s, t = (sc, sh) if norm else (None, None)
                U = R * sc[:, None, None] + sh[:, None, None] if norm else R
                spec = tg.tail_forward_torch(U, X, m, idx, alpha, beta, add, relu)
                got = tt.tail_forward(R, X, m, idx, alpha, beta, s, t, add, relu, block_p=16, block_c=16)
                assert got.stride() == R.stride()
                dout = torch.randn_like(spec)
                spec_b = tg.tail_backward_torch(dout, spec, U, m, idx, alpha, beta, add, relu)
                got_b = tt.tail_backward(dout, got, R, m, idx, alpha, beta, s, t, add, relu, block_p=16)
                assert (spec_b[1] is None) == (got_b[1] is None)
                worst = max([worst, float((spec - got).abs().max())]
                            + [float((a - b).abs().max()) for a, b in zip(spec_b, got_b) if a is not None])
    print("WORST", worst)
    """
)


def test_table_kernels_match_their_specification_in_the_interpreter(triton_interpreter):
    """The Triton kernels on CPU through TRITON_INTERPRET=1 (NumPy), float64, NCHW and channels_last,
    with the block's norm on the fly, a constant unit, a repeated breakpoint and a pixel on a breakpoint."""
    assert triton_interpreter(_KERNEL_CHECK) < 1e-12


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("shape", [(4, 256, 56, 56, 16), (2, 48, 7, 5, 12), (8, 512, 28, 28, 32)])
def test_cuda_table_kernels_match_their_specification(shape, dtype):
    pytest.importorskip("triton")
    from torch_impl.kernels import table_triton as tt

    N, C, H, W, K = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    mk = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    R, X = (mk(N, C, H, W).to(dtype).to(memory_format=torch.channels_last) for _ in range(2))
    v, r, W2, b2 = mk(N, K), mk(K), mk(C, K) / K**0.5, mk(C)
    m = mk(N, 1, H, W)
    edges, order, nb = tg.breakpoints(v, r)
    idx = tg.interval_index(m, edges, nb)
    alpha, beta = tg.interval_tables(v, r, W2, b2, order)
    sc, sh = mk(C).abs() + 0.5, mk(C)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for add, relu in ((True, True), (False, False)):
        U = (R.double() * sc.double()[:, None, None] + sh.double()[:, None, None])
        spec = tg.tail_forward_torch(U, X.double(), m.double(), idx, alpha.double(), beta.double(), add, relu)
        got = tt.tail_forward(R, X, m, idx, alpha, beta, sc, sh, add, relu)
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
        assert float((got.double() - spec).abs().max()) < tol * max(1.0, float(spec.abs().max()))
        dout = mk(*got.shape).to(dtype)
        spec_b = tg.tail_backward_torch(dout.double(), spec, U, m.double(), idx, alpha.double(), beta.double(),
                                        add, relu)
        got_b = tt.tail_backward(dout, got, R, m, idx, alpha, beta, sc, sh, add, relu)
        for a, b in zip(spec_b, got_b):
            if a is not None:
                scale = max(1.0, float(a.abs().max()))
                assert float((b.double() - a).abs().max()) < tol * scale


@pytest.mark.cuda
@pytest.mark.parametrize("design", ["aff3d", "mc_rs+ms_rs"])
def test_cuda_fused_table_route_equals_straightforward(design, randomize_bn, bn_twins, monkeypatch):
    """float32 on the GPU against the straightforward path in float64 (the same weights)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("AFF3D_TABLE", "1")
    m, _ = _twins(64, design, randomize_bn, device="cuda", dtype=torch.float32, reduction=4)
    _, ref = _twins(64, design, randomize_bn, device="cuda", reduction=4)
    bn_t, bn_r = bn_twins(64)
    bn_t, bn_r = bn_t.cuda().float().train(), bn_r.cuda().train()
    m.train(), ref.train()
    Rr, X = _pair(5, n=4, c=64, h=12, w=12, device="cuda")
    Rr32, X32 = (t.float().to(memory_format=torch.channels_last).requires_grad_() for t in (Rr, X))
    Rr.requires_grad_(), X.requires_grad_()
    assert fast.choose_route(m, Rr32, X32, bn_t).name == "fused_table"
    y_t = m.gate_add_relu(Rr32, X32, relu=True, norm=bn_t)
    y_r = _straight(ref, Rr, X, bn_r, True, True)
    assert _max_diff([y_t.double()], [y_r]) < 1e-4
    dout = torch.randn_like(y_r)
    g_t = torch.autograd.grad(y_t, [Rr32, X32, *m.parameters()], dout.float())
    g_r = torch.autograd.grad(y_r, [Rr, X, *ref.parameters()], dout)
    for a, b in zip(g_t, g_r):
        assert float((a.double() - b).abs().max()) < 1e-3 * max(1.0, float(b.abs().max()))


@pytest.mark.cuda
def test_cuda_dispatch_takes_the_table_on_request_and_on_large_maps_only(randomize_bn, monkeypatch):
    pytest.importorskip("triton")
    m, _ = _twins(64, "aff3d", randomize_bn, device="cuda", dtype=torch.float32, reduction=16)  # K + 1 = 5
    m.train()
    monkeypatch.delenv("AFF3D_TABLE", raising=False)
    Rr, X = _pair(0, c=64, h=8, w=8, device="cuda", dtype=torch.float32)
    assert fast.choose_route(m, Rr.requires_grad_(), X).name == "fused_tail"  # the default: the product form
    monkeypatch.setenv("AFF3D_TABLE", "1")
    side = {True: 8, False: 4}  # 64 >= 4 * 5 pixels per table row; 16 < 20
    for large, s in side.items():
        Rr, X = _pair(0, c=64, h=s, w=s, device="cuda", dtype=torch.float32)
        route = fast.choose_route(m, Rr.requires_grad_(), X).name
        assert route == ("fused_table" if large else "fused_tail")
