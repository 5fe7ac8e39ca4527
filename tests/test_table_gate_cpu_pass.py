"""The table gate's tail: its specification's backward is the gradient of its forward, and the compiled CPU
pass (``aff3d_fast.table_gate_cpu_pass``) equals the specification, serves the module's channels_last calls,
and falls back to the specification where it cannot compile.

The first run compiles a few variants with inductor (tens of seconds on a loaded machine); later
runs load them from inductor's on-disk cache.
"""

from __future__ import annotations

import pytest
import torch

from torch_impl.attention import AFF3D
from torch_impl.attention.aff3d_fast import table_gate as tg
from torch_impl.attention.aff3d_fast import table_gate_cpu_pass as tp

F64 = torch.float64
CL = torch.channels_last


def _case(N, C, H, W, K, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, X, dout = (torch.randn(N, C, H, W, generator=g, dtype=dtype).to(memory_format=CL) for _ in range(3))
    m = torch.randn(N, 1, H, W, generator=g, dtype=dtype)
    v, r = torch.randn(N, K, generator=g, dtype=dtype), torch.randn(K, generator=g, dtype=dtype)
    r[0] = 0.0
    W2, b2 = torch.randn(C, K, generator=g, dtype=dtype), torch.randn(C, generator=g, dtype=dtype)
    edges, order, neg_before = tg.breakpoints(v, r)
    alpha, beta = tg.interval_tables(v, r, W2, b2, order)
    idx = tg.interval_index(m, edges, neg_before)
    return U, X, dout, m, idx, alpha, beta


def _max_diff(a, b) -> float:
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b) if x is not None or y is not None)


@pytest.mark.parametrize("flags", [(True, True), (True, False), (False, False)], ids=["add_relu", "add", "plain"])
def test_the_specifications_backward_is_the_gradient_of_its_forward(flags):
    U, X, dout, m, idx, alpha, beta = _case(2, 12, 5, 3, 3, F64)
    ins = [t.requires_grad_() for t in (U, X, m, alpha, beta)]
    out = tp.forward_spec(U, X, m, idx, alpha, beta, *flags)
    auto = torch.autograd.grad(out, ins, dout, allow_unused=True)
    dU, dy, dm, G0, G1 = tp.backward_spec(dout, out.detach(), *(t.detach() for t in (U, m)), idx,
                                          alpha.detach(), beta.detach(), *flags)
    assert _max_diff([dU, dm, G0, G1], [auto[0], auto[2], auto[3], auto[4]]) < 1e-12
    if flags[0]:  # dX_l = dy, the shortcut's share
        assert _max_diff([dy], [auto[1]]) < 1e-12


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("flags", [(True, True), (False, False)], ids=["add_relu", "plain"])
@pytest.mark.parametrize("shape", [(2, 12, 5, 3, 3), (1, 40, 4, 4, 10)])
def test_fused_pass_equals_its_specification(shape, flags, dtype, tol):
    U, X, dout, m, idx, alpha, beta = _case(*shape, dtype)
    assert tp.enabled(U)
    out = tp.tail_forward(U, X, m, idx, alpha, beta, *flags)
    ref = tp.forward_spec(U, X, m, idx, alpha, beta, *flags)
    assert out.is_contiguous(memory_format=CL)
    assert _max_diff([out], [ref]) < tol
    grads = tp.tail_backward(dout, out, U, m, idx, alpha, beta, *flags)
    dU, dy, dm, G0, G1 = tp.backward_spec(dout, ref, U, m, idx, alpha, beta, *flags)
    assert _max_diff(grads, [dU, dy if flags[0] else None, dm, G0, G1]) < tol * 10


def test_module_in_channels_last_runs_the_fused_pass_and_equals_straightforward(randomize_bn, monkeypatch):
    calls = []
    run = tp._run
    monkeypatch.setattr(tp, "_run", lambda which, *a: calls.append(which) or run(which, *a))
    torch.manual_seed(0)
    m = randomize_bn(AFF3D(12, reduction=3), 1).double()
    ref = AFF3D(12, reduction=3, impl="straightforward").double()
    ref.load_state_dict(m.state_dict())
    g = torch.Generator().manual_seed(2)
    U, X = (torch.randn(2, 12, 5, 3, generator=g, dtype=F64).to(memory_format=CL).requires_grad_() for _ in range(2))
    y, y_ref = tg.table_forward(m, U, X, add=True, relu=True), (ref(U, X) + X).relu()
    assert _max_diff([y], [y_ref]) < 1e-10
    dout = torch.randn_like(y)
    g_t = torch.autograd.grad(y, [U, X, *m.parameters()], dout)
    g_r = torch.autograd.grad(y_ref, [U, X, *ref.parameters()], dout)
    assert _max_diff(g_t, g_r) < 1e-10
    assert calls == ["forward", "backward"]  # the compiled pass, each way


def test_where_compilation_fails_the_pytorch_path_runs_with_a_warning(monkeypatch):
    def broken(which, add, relu):
        def fn(*args):
            raise RuntimeError("no C++ compiler found")
        return fn

    monkeypatch.setattr(tp, "_compiled", broken)
    monkeypatch.setattr(tp, "_failure", [])
    U, X, dout, m, idx, alpha, beta = _case(2, 8, 3, 3, 4, F64)
    ins = [t.requires_grad_() for t in (U, X, m, alpha, beta)]
    with pytest.warns(RuntimeWarning, match="compiled CPU pass is unavailable"):
        out = tg.TableTail.apply(U, X, m, idx, alpha, beta, True, True)
    assert not tp.enabled(U)  # off for the rest of the process, no second warning
    ref = tp.forward_spec(U, X, m, idx, alpha, beta, True, True)
    assert _max_diff([out], [ref]) < 1e-12
    grads = torch.autograd.grad(out, ins, dout)
    ref_grads = torch.autograd.grad(ref, ins, dout)
    assert _max_diff(grads, ref_grads) < 1e-10


def test_the_pass_serves_cpu_channels_last_maps_only(monkeypatch):
    x = torch.zeros(2, 8, 3, 3)
    assert not tp.enabled(x)  # NCHW: the gather would run along the innermost axis
    assert tp.enabled(x.to(memory_format=CL))
    assert not tp.enabled(x.to(memory_format=CL).half())
    monkeypatch.setenv("AFF3D_COMPILE", "0")
    assert not tp.enabled(x.to(memory_format=CL))
