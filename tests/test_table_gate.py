"""The table gate equals F_ex's product form, the straightforward module and the NumPy reference.

First each step of ``torch_impl.attention.aff3d_fast.table_gate`` on its own (tables, lookup at ties and
repeated breakpoints, r_j = 0, the backward's formulas, batch statistics), then the whole module
for every F_ex design, k and d, train and eval, forward, backward (gradcheck) and running
statistics, float64 to 1e-10. BN layers get random statistics throughout.
"""

from __future__ import annotations

import pytest
import torch

import reference_numpy as R
from reference_numpy.designs import DESIGNS, resolve_design
from torch_impl.attention import AFF3D
from torch_impl.attention.aff3d_fast import table_gate as tg
from torch_impl.numpy_bridge import to_numpy_params

TOL = 1e-10
F64 = torch.float64
FEX_DESIGNS = [n for n in sorted(DESIGNS) if resolve_design(n).has_spatial and resolve_design(n).fusion == "fex"]


def _max_diff(a, b) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b)
               if x is not None or y is not None)


def _product_form(m, v, r, W2, b2):
    """z = W_2 relu(v + r m) + b_2 per pixel, as F_ex computes it: (N, C, H, W)."""
    h = torch.relu(v[:, :, None, None] + r[None, :, None, None] * m)
    return torch.einsum("ck,nkhw->nchw", W2, h) + b2[None, :, None, None]


def _table_form(m, v, r, W2, b2):
    edges, order, neg_before = tg.breakpoints(v, r)
    alpha, beta = tg.interval_tables(v, r, W2, b2, order)
    return tg.TableLogits.apply(m, tg.interval_index(m.detach(), edges, neg_before), alpha, beta)


def _tie_case():
    """Exact dyadic values: repeated breakpoints with both signs of r, r_j = 0 units with v_j > 0,
    = 0 and < 0, and pixels on breakpoints, so that v_j + r_j m = 0 holds exactly in floating point."""
    r = torch.tensor([1.0, -2.0, 0.5, 2.0, -1.0, 0.0, 0.0, 0.0, 4.0, -0.25], dtype=F64)
    t = torch.tensor([0.5, 0.5, 0.5, -1.0, 0.25, 0.0, 0.0, 0.0, -1.0, 2.0], dtype=F64)
    v = (-r * t).repeat(2, 1)
    v[:, 5:8] = torch.tensor([0.75, 0.0, -0.5], dtype=F64)
    v[1, :5] = -r[:5] * torch.tensor([0.25, -1.0, 0.5, 0.25, 2.0], dtype=F64)  # other ties in sample 1
    values = torch.tensor([0.5, -1.0, 0.25, 2.0, 0.0, -3.0, 0.375, 5.0, 0.5, 0.25, 1.0, -1.0], dtype=F64)
    m = torch.stack([values, values.flip(0)]).view(2, 1, 3, 4)
    g = torch.Generator().manual_seed(3)
    W2 = torch.randint(-4, 5, (6, 10), generator=g).to(F64) / 4
    b2 = torch.randint(-4, 5, (6,), generator=g).to(F64) / 8
    return m, v, r, W2, b2


# --------------------------------------------------------------------------------------------
# Step by step (the module docstring of table_gate numbers the steps)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 2, 5, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_tables_give_the_product_form(K, seed):
    g = torch.Generator().manual_seed(seed)
    N, C = 3, 7
    v, r = torch.randn(N, K, generator=g, dtype=F64), torch.randn(K, generator=g, dtype=F64)
    if K > 2:
        r[1] = 0.0  # a constant unit
        v[:, 2] = -r[2] * (-v[:, 3] / r[3])  # units 2 and 3 share their breakpoint
    m = torch.randn(N, 1, 4, 5, generator=g, dtype=F64) * 2
    W2, b2 = torch.randn(C, K, generator=g, dtype=F64), torch.randn(C, generator=g, dtype=F64)
    assert _max_diff([_table_form(m, v, r, W2, b2)], [_product_form(m, v, r, W2, b2)]) < TOL


def test_ties_repeated_breakpoints_and_constant_units_forward_and_backward():
    """On a breakpoint both sides give one value, and the gradient is autograd's (relu'(0) = 0)."""
    m, v, r, W2, b2 = _tie_case()
    ins_t = [t.clone().requires_grad_() for t in (m, v, r, W2, b2)]
    ins_p = [t.clone().requires_grad_() for t in (m, v, r, W2, b2)]
    z_t, z_p = _table_form(*ins_t), _product_form(*ins_p)
    assert _max_diff([z_t], [z_p]) < TOL
    dz = torch.randn_like(z_p)
    assert _max_diff(torch.autograd.grad(z_t, ins_t, dz), torch.autograd.grad(z_p, ins_p, dz)) < TOL
    edges, _, _ = tg.breakpoints(v, r)
    assert torch.isinf(edges[:, -3:]).all()  # the three r_j = 0 units are never crossed
    assert (edges[0, :-3].diff() == 0).sum() >= 3  # ties present


def test_a_pixel_on_a_tie_is_sent_between_its_decreasing_and_increasing_units():
    r = torch.tensor([1.0, -1.0, 2.0, -2.0], dtype=F64)
    v = (-r * 0.5)[None]  # every breakpoint at 0.5
    edges, order, neg_before = tg.breakpoints(v, r)
    assert (r[order[0, :2]] < 0).all() and (r[order[0, 2:]] > 0).all()
    idx = tg.interval_index(torch.tensor([[[[0.5, 0.0, 1.0]]]], dtype=F64), edges, neg_before)
    assert idx.tolist() == [[2, 0, 4]]  # between the two groups: all four units inactive


def test_backward_is_the_issues_formula():
    """dW_2, dv, dr from G0, G1 through the active sets A_i equal autograd through the cumulative sums."""
    g = torch.Generator().manual_seed(4)
    N, K, C = 2, 6, 5
    v, r = torch.randn(N, K, generator=g, dtype=F64), torch.randn(K, generator=g, dtype=F64)
    r[0] = 0.0
    W2, b2 = torch.randn(C, K, generator=g, dtype=F64), torch.randn(C, generator=g, dtype=F64)
    m = torch.randn(N, 1, 3, 4, generator=g, dtype=F64)
    ins = [t.clone().requires_grad_() for t in (v, r, W2, b2)]
    edges, order, neg_before = tg.breakpoints(v, r)
    alpha, beta = tg.interval_tables(*ins, order)
    idx = tg.interval_index(m, edges, neg_before)
    z = tg.lookup(m, idx, alpha, beta)
    dz = torch.randn_like(z)
    dv, dr, dW2, db2 = torch.autograd.grad(z, ins, dz)
    _, G0, G1 = tg.lookup_backward(dz, m, idx, beta.detach())
    # A[n, i, j]: unit j active on interval i, from a point inside each interval
    inner = torch.cat([edges[:, :1] - 1, (edges[:, :-1] + edges[:, 1:]) / 2, edges[:, -1:] + 1], 1)
    inner = torch.where(torch.isfinite(inner), inner, edges.nan_to_num(posinf=0).amax(1, keepdim=True) + 1)
    A = ((v[:, None, :] + r[None, None, :] * inner[:, :, None]) > 0).to(F64)  # (N, K + 1, K)
    assert _max_diff([dW2], [torch.einsum("nij,nj,nic->cj", A, v, G0) + torch.einsum("nij,j,nic->cj", A, r, G1)]) < TOL
    assert _max_diff([dv], [torch.einsum("nij,cj,nic->nj", A, W2, G0)]) < TOL
    assert _max_diff([dr], [torch.einsum("nij,cj,nic->j", A, W2, G1)]) < TOL
    assert _max_diff([db2], [G0.sum((0, 1))]) < TOL


def test_gradcheck_table_logits():
    g = torch.Generator().manual_seed(5)
    m = torch.randn(2, 1, 3, 3, generator=g, dtype=F64)
    v, r = torch.randn(2, 4, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    W2, b2 = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    ins = [t.requires_grad_() for t in (m, v, r, W2, b2)]
    assert torch.autograd.gradcheck(_table_form, ins, eps=1e-6, atol=1e-7)


def test_batch_statistics_from_sums_of_m():
    g = torch.Generator().manual_seed(6)
    N, K, C = 3, 5, 4
    m = torch.randn(N, 1, 4, 3, generator=g, dtype=F64) + 3  # off-centre, as BN inputs are
    v, r = torch.randn(N, K, generator=g, dtype=F64), torch.randn(K, generator=g, dtype=F64)
    var, mean = torch.var_mean(v[:, :, None, None] + r[None, :, None, None] * m, (0, 2, 3), correction=0)
    assert _max_diff(tg.hidden_batch_stats(v, r, m), [mean, var]) < TOL
    W2, b2 = torch.randn(C, K, generator=g, dtype=F64), torch.randn(C, generator=g, dtype=F64)
    edges, order, neg_before = tg.breakpoints(v, r)
    alpha, beta = tg.interval_tables(v, r, W2, b2, order)
    idx = tg.interval_index(m, edges, neg_before)
    var, mean = torch.var_mean(_product_form(m, v, r, W2, b2), (0, 2, 3), correction=0)
    assert _max_diff(tg.table_batch_stats(alpha, beta, m, idx), [mean, var]) < TOL


# --------------------------------------------------------------------------------------------
# The whole module
# --------------------------------------------------------------------------------------------


def _twins(channels, design, randomize_bn, seed=0, **switches):
    torch.manual_seed(seed)
    table_m = randomize_bn(AFF3D(channels, design, **switches), seed).double()
    ref_m = AFF3D(channels, design, impl="straightforward", **switches).double()
    ref_m.load_state_dict(table_m.state_dict())
    return table_m, ref_m


def _pair(seed, n=2, c=8, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, h, w, generator=g, dtype=F64) for _ in range(2))


@pytest.mark.parametrize("design", FEX_DESIGNS)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("fex_norm", [True, False], ids=["bn", "bias"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_table_path_equals_straightforward_and_numpy(design, k, d, fex_norm, train, randomize_bn):
    table_m, ref_m = _twins(8, design, randomize_bn, kernel_size=k, reduction=d, fex_norm=fex_norm)
    table_m.train(train), ref_m.train(train)
    U, X = _pair(k * 10 + d)
    U.requires_grad_(), X.requires_grad_()
    y_t, y_r = tg.table_forward(table_m, U, X), ref_m(U, X)
    assert _max_diff([y_t], [y_r]) < TOL
    dout = torch.randn_like(y_r)
    g_t = torch.autograd.grad(y_t, [U, X, *table_m.parameters()], dout, allow_unused=True)
    g_r = torch.autograd.grad(y_r, [U, X, *ref_m.parameters()], dout, allow_unused=True)
    assert _max_diff(g_t, g_r) < TOL
    with torch.no_grad():
        assert _max_diff([tg.table_forward(table_m, U, X)], [ref_m(U, X)]) < TOL
    assert _max_diff(table_m.state_dict().values(), ref_m.state_dict().values()) < TOL  # running stats
    if not train:
        ref = R.aff3d_gate(U.detach().numpy(), X.detach().numpy(), to_numpy_params(table_m), table_m.design)
        assert _max_diff([y_t], [torch.from_numpy(ref)]) < TOL


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "norelu"])
def test_block_tail_with_norm_equals_straightforward(train, relu, randomize_bn, bn_twins):
    table_m, ref_m = _twins(8, "aff3d", randomize_bn, reduction=2)
    bn_t, bn_r = bn_twins(8)
    for mod in (table_m, ref_m, bn_t, bn_r):
        mod.train(train)
    Rr, X = _pair(8, n=3)
    Rr.requires_grad_(), X.requires_grad_()
    y_t = tg.table_forward(table_m, Rr, X, norm=bn_t, add=True, relu=relu)
    y_r = ref_m(bn_r(Rr), X) + X
    y_r = y_r.relu() if relu else y_r
    assert _max_diff([y_t], [y_r]) < TOL
    dout = torch.randn_like(y_r)
    g_t = torch.autograd.grad(y_t, [Rr, X, *table_m.parameters(), *bn_t.parameters()], dout)
    g_r = torch.autograd.grad(y_r, [Rr, X, *ref_m.parameters(), *bn_r.parameters()], dout)
    assert _max_diff(g_t, g_r) < TOL


def test_constant_hidden_units_in_the_module(randomize_bn):
    """r_j = W_1 1 = 0 exactly for half the hidden units (rows of W_1 that sum to zero)."""
    table_m, ref_m = _twins(8, "aff3d", randomize_bn, reduction=2)
    with torch.no_grad():
        w = table_m.fex.conv1.weight
        w[:2, 4:] = -w[:2, :4]
        ref_m.load_state_dict(table_m.state_dict())
    assert (table_m.fex.conv1.weight.flatten(1).sum(1)[:2] == 0).all()
    for train in (False, True):
        table_m.train(train), ref_m.train(train)
        U, X = _pair(11)
        assert _max_diff([tg.table_forward(table_m, U, X)], [ref_m(U, X)]) < TOL


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("design", ["aff3d", "mc_rs+ms_rs"])
def test_gradcheck_table_path(design, train, randomize_bn):
    m, _ = _twins(4, design, randomize_bn, reduction=2)
    m.train(train)
    U, X = _pair(9, c=4, h=3, w=3)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def f(U, X, *ps):
        with torch.nn.utils.stateless._reparametrize_module(m, dict(zip(names, ps))):
            return tg.table_forward(m, U, X, add=True, relu=True)

    assert torch.autograd.gradcheck(f, (U.requires_grad_(), X.requires_grad_(), *params), eps=1e-6,
                                    atol=1e-7, rtol=1e-5, fast_mode=True)


def test_logit_curve_is_the_product_form_with_kinks_at_the_breakpoints(randomize_bn):
    m, _ = _twins(16, "aff3d", randomize_bn, reduction=4)
    m.eval()
    U, X = _pair(2, c=16)
    grid, z, t = tg.logit_curve(m, U, X, sample=1, channel=3, points=2001)
    f = m.fex
    with torch.no_grad():  # the same logit from F_ex itself on M_3D = M_c (+) m, m over the grid
        M_c = U[1].mean((1, 2))
        M_3D = M_c[None, :, None, None] + grid.view(1, 1, 1, -1)
        expected = f.bn2(f.conv2(f.act(f.bn1(f.conv1(M_3D)))))[0, 3, 0]
    assert _max_diff([z], [expected]) < TOL
    assert len(t) == 4 and (t.diff() >= 0).all()
    slope = z.diff() / grid.diff()
    kinks = (slope.diff().abs() > 1e-8).nonzero().flatten()
    assert all((t - grid[i + 1]).abs().min() <= (grid[1] - grid[0]) for i in kinks)


def test_designs_without_fex_over_M3D_are_refused(randomize_bn):
    for design in ("mc_r", "parallel_sum"):
        m = AFF3D(8, design, reduction=2)
        assert not tg.supports(m)
        with pytest.raises(ValueError, match="table gate"):
            tg.table_forward(m, *_pair(0))


@pytest.mark.parametrize("design", FEX_DESIGNS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_table_path_in_channels_last_equals_straightforward(design, train, randomize_bn):
    """channels_last maps take the 1x1-convolution taps and the compiled pass (``aff3d_fast.table_gate_cpu_pass``)."""
    table_m, ref_m = _twins(8, design, randomize_bn, reduction=2)
    table_m.train(train), ref_m.train(train)
    U, X = (t.to(memory_format=torch.channels_last).requires_grad_() for t in _pair(3))
    y_t, y_r = tg.table_forward(table_m, U, X, add=True, relu=True), (ref_m(U, X) + X).relu()
    assert _max_diff([y_t], [y_r]) < TOL
    dout = torch.randn_like(y_r)
    g_t = torch.autograd.grad(y_t, [U, X, *table_m.parameters()], dout, allow_unused=True)
    g_r = torch.autograd.grad(y_r, [U, X, *ref_m.parameters()], dout, allow_unused=True)
    assert _max_diff(g_t, g_r) < TOL
