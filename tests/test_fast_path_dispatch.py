"""The fast path's dispatch: which route a call takes, the inference cache and when it is dropped,
the ``impl`` switch, and norms other than nn.BatchNorm2d (frozen BN folds, others are said)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from torch_impl.attention import AFF3D, get_attention
from torch_impl.attention import aff3d_fast as fast
from torch_impl.models import Bottleneck

TOL = 1e-10
F64 = torch.float64


def _twins(randomize_bn, design="aff3d", seed=0):
    torch.manual_seed(seed)
    fast_m = randomize_bn(AFF3D(8, design, reduction=2), seed).double()
    ref_m = AFF3D(8, design, impl="straightforward", reduction=2).double()
    ref_m.load_state_dict(fast_m.state_dict())
    return fast_m, ref_m


def _pair(seed=0, n=2, c=8, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g, dtype=F64), torch.randn(n, c, h, w, generator=g, dtype=F64)


def _diff(a, b) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _route(m, U, X, norm=None) -> str:
    return fast.choose_route(m, U, X, norm).name


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------


def test_each_route_is_taken_where_the_table_says(randomize_bn):
    m, _ = _twins(randomize_bn)
    U, X = _pair()
    m.eval()
    with torch.no_grad():
        assert _route(m, U, X) == "folded"
    assert _route(m, U, X) == "autograd"  # grad mode: the parameters require gradients
    m.requires_grad_(False)
    assert _route(m, U, X) == "folded"  # a frozen module in grad mode ...
    assert _route(m, U.requires_grad_(), X) == "autograd"  # ... until the input requires one
    U = U.detach()
    m.requires_grad_(True)
    m.train()
    with torch.no_grad():
        assert _route(m, U, X) == "autograd"  # batch statistics, no gradient
    assert _route(m, U, X) == "autograd"  # the parameters require gradients
    assert _route(m, U[:0], X[:0]) == "straightforward"
    assert _route(AFF3D(8, "mc_r", reduction=2), U.float(), X.float()) == "autograd"
    assert _route(AFF3D(8, "parallel_concat", reduction=2), U.float(), X.float()) == "autograd"
    assert fast.ROUTE_NAMES == ("folded", "straightforward", "table", "autograd")
    with pytest.raises(ValueError, match="expected one of"):
        fast.run_route("fats", m, U, X)


def _walk(**facts) -> str:
    """The route ``ROUTES`` gives a call with these facts (the rest: CPU training on a large NCHW map)."""
    base = {"cpu": True, "fex_over_M3D": True, "inference": False, "grad": True, "traced": False,
            "channels_last": False, "table": False, "pixels": 4096, "rows": 17}
    call = fast.Call(**{**base, **facts})
    return next(r for r in fast.ROUTES if r.applies(call)).name


@pytest.mark.size_rule
def test_the_route_table_read_as_data():
    """The conditions alone, also for calls this machine cannot make (CUDA)."""
    assert _walk() == "autograd"
    assert _walk(cpu=False) == "straightforward"  # CUDA training: measured faster than the fast forms
    assert _walk(cpu=False, grad=False, inference=True) == "folded"
    assert _walk(cpu=False, traced=True) == "autograd"  # what dynamo traces
    assert _walk(traced=True, grad=False, inference=True) == "folded"
    assert _walk(channels_last=True, table=True) == "table"
    assert _walk(channels_last=True, table=True, pixels=16 * 17 - 1) == "autograd"
    assert _walk(channels_last=True) == "autograd"  # no compiled pass: the product form lost in channels_last
    assert _walk(pixels=15) == "straightforward"
    assert _walk(fex_over_M3D=False) == "autograd"
    assert _walk(fex_over_M3D=False, grad=False, inference=True) == "autograd"
    assert _walk(grad=False) == "autograd"  # batch statistics without a gradient


@pytest.mark.size_rule
@pytest.mark.parametrize("layout, fast_route", [("nchw", "autograd"), ("channels_last", "table")])
def test_small_cpu_maps_train_on_the_autograd_route(layout, fast_route, randomize_bn):
    """Training on a CPU map too small for the table gate (``aff3d_fast.SIZE_RULE``) takes the autograd
    route, below 16 pixels the straightforward one, chosen without a warning and exact; at the limit the
    table gate in channels_last (NCHW stays on the autograd route); inference folds at any size."""
    m, ref = _twins(randomize_bn)  # C = 8, d = 2: K + 1 = 5 table rows
    limit = fast.SIZE_RULE["table"] * 5  # H W pixels
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    tiny = (fast.SIZE_RULE["straightforward"] - 1) // 2
    for w, route in [(tiny, "straightforward"), (limit // 2 - 1, "autograd"), (limit // 2, fast_route)]:
        U, X = (t.to(memory_format=fmt) for t in _pair(3, h=2, w=w))
        U.requires_grad_()
        assert _route(m, U, X) == route
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            y = m(U, X)
        assert not [warning for warning in said if "AFF3D" in str(warning.message)]
        y_ref = ref(U, X)
        assert _diff(y, y_ref) < TOL
        g, g_ref = torch.autograd.grad(y.sum(), U), torch.autograd.grad(y_ref.sum(), U)
        assert _diff(g[0], g_ref[0]) < TOL
        assert _diff(m.spatial.bn.running_mean, ref.spatial.bn.running_mean) < TOL
        m.eval()
        with torch.no_grad():
            assert _route(m, U, X) == "folded"
        m.train()


def _assert_block_tail_agrees(y, y_ref, R, X, mods, mods_ref):
    """Output, every gradient (inputs, then the modules' parameters) and every BN's running statistics of a
    block tail equal the straightforward one's (float64, 1e-10)."""
    assert _diff(y, y_ref) < TOL
    dout = torch.randn_like(y_ref)
    g = torch.autograd.grad(y, [R, X, *(p for mod in mods for p in mod.parameters())], dout)
    g_ref = torch.autograd.grad(y_ref, [R, X, *(p for mod in mods_ref for p in mod.parameters())], dout)
    assert max(_diff(a, b) for a, b in zip(g, g_ref)) < TOL
    stats = [b for mod in mods for b in mod.buffers()]
    stats_ref = [b for mod in mods_ref for b in mod.buffers()]
    assert max(_diff(a.double(), b.double()) for a, b in zip(stats, stats_ref)) < TOL


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r+ms_r", "mc_rs+ms_rs", "kernel_size=5", "mc_r",
                                    "parallel_concat", "parallel_sum"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("route", ["autograd", "table", "straightforward"])
def test_every_training_route_by_name_is_exact_with_the_block_norm(route, design, layout, randomize_bn, bn_twins):
    """Each route forced by name (``run_route``) with the block's norm, train mode: output, every gradient
    and the running statistics of every BN equal the straightforward path's (float64, 1e-10)."""
    kw = {"kernel_size": 5} if design == "kernel_size=5" else {}
    design = "aff3d" if kw else design
    torch.manual_seed(0)
    m = randomize_bn(AFF3D(8, design, reduction=2, **kw), 1).double().train()
    if route == "table" and not (m.design.has_spatial and m.design.fusion == "fex"):
        pytest.skip(f"{route} serves designs with F_ex over M_3D only")
    ref = AFF3D(8, design, impl="straightforward", reduction=2, **kw).double().train()
    ref.load_state_dict(m.state_dict())
    bn, bn_ref = bn_twins(8)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    R, X = (t.to(memory_format=fmt).requires_grad_() for t in _pair(4))
    y = fast.run_route(route, m, R, X, bn, add=True, relu=True)
    y_ref = (ref(bn_ref(R), X) + X).relu()
    _assert_block_tail_agrees(y, y_ref, R, X, (m, bn), (ref, bn_ref))


@pytest.mark.parametrize("design", ["aff3d", "aff3d_sum", "mc_r+ms_r", "mc_rs+ms_rs"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_the_folded_route_by_name_is_exact_with_the_block_norm(design, layout, randomize_bn, bn_twins):
    m, ref = _twins(randomize_bn, design)
    bn, bn_ref = bn_twins(8)
    for mod in (m, ref, bn, bn_ref):
        mod.eval()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    R, X = (t.to(memory_format=fmt) for t in _pair(5))
    with torch.no_grad():
        y = fast.run_route("folded", m, R, X, bn, add=True, relu=True)
        assert _diff(y, (ref(bn_ref(R), X) + X).relu()) < TOL


def test_routes_under_torch_compile_tracing(monkeypatch, randomize_bn):
    """Tracing: no cache is stored, and no custom autograd Function (plain autograd)."""
    m, ref = _twins(randomize_bn)
    monkeypatch.setattr(fast, "tracing", lambda: True)
    U, X = _pair(1)
    m.train(), ref.train()
    assert _route(m, U, X) == "autograd"
    assert _diff(m(U, X), ref(U, X)) < TOL
    m.eval(), ref.eval()
    with torch.no_grad():
        assert _diff(m(U, X), ref(U, X)) < TOL
    assert m._folded is None


def test_the_autograd_route_differentiates_the_block_norms_batch_statistics(monkeypatch, randomize_bn, bn_twins):
    """The route torch.compile traces, in training with the block's norm: outputs, every gradient
    (through the batch statistics) and the running statistics as the straightforward path has them."""
    m, ref = _twins(randomize_bn)
    bn, bn_ref = bn_twins(8)
    for mod in (m, ref, bn, bn_ref):
        mod.train()
    monkeypatch.setattr(fast, "tracing", lambda: True)
    R, X = _pair(3)
    R.requires_grad_(), X.requires_grad_()
    assert fast.choose_route(m, R, X, bn).name == "autograd"
    y = m.gate_add_relu(R, X, relu=True, norm=bn)
    y_ref = torch.relu(ref(bn_ref(R), X) + X)
    _assert_block_tail_agrees(y, y_ref, R, X, (m, bn), (ref, bn_ref))


def test_a_bottleneck_trains_under_torch_compile(randomize_bn):
    """torch.compile (dynamo and AOT autograd, without inductor's code generation) of a 3D-AFF
    bottleneck in training: the same loss and gradients as eager (the fused tail with its norm)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = get_attention("aff3d", reduction=4)
    block = randomize_bn(Bottleneck(32, 8, 1, layer), 2).double().train()
    twin = randomize_bn(Bottleneck(32, 8, 1, layer), 2).double().train()
    twin.load_state_dict(block.state_dict())
    x = torch.randn(2, 32, 6, 6, dtype=torch.float64)
    loss = torch.compile(block, backend="aot_eager")(x).square().mean()
    loss_ref = twin(x).square().mean()
    assert _diff(loss, loss_ref) < TOL
    g = torch.autograd.grad(loss, list(block.parameters()))
    g_ref = torch.autograd.grad(loss_ref, list(twin.parameters()))
    assert max(_diff(a, b) for a, b in zip(g, g_ref)) < TOL


def test_channel_moments_of_a_16_bit_map_are_float32_and_differentiable():
    from torch_impl.attention.aff3d_fast.norms import channel_moments

    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    x16 = x.to(torch.bfloat16).requires_grad_()
    mean, var = channel_moments(x16)
    assert mean.dtype == var.dtype == torch.float32
    ref_var, ref_mean = torch.var_mean(x16.detach().double(), dim=(0, 2, 3), correction=0)
    assert _diff(mean.double(), ref_mean) < 1e-6 and _diff(var.double(), ref_var) < 1e-5
    (g,) = torch.autograd.grad((mean + var).sum(), x16)
    assert g.dtype == torch.bfloat16 and torch.isfinite(g.float()).all()


@pytest.mark.cuda
def test_a_bottleneck_trains_under_torch_compile_on_cuda_in_bf16(randomize_bn):
    """The same under bf16 autocast on the GPU, channels_last, inductor: where batch_norm_stats, which
    has no derivative, must not be used for the batch statistics autograd differentiates."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = get_attention("aff3d", reduction=4)
    block = randomize_bn(Bottleneck(64, 16, 1, layer), 2).cuda().train().to(memory_format=torch.channels_last)
    twin = randomize_bn(Bottleneck(64, 16, 1, layer), 2).cuda().train().to(memory_format=torch.channels_last)
    twin.load_state_dict(block.state_dict())
    x = torch.randn(4, 64, 14, 14, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = torch.compile(block)(x).float().square().mean()
        loss_ref = twin(x).float().square().mean()
    assert abs(float(loss) - float(loss_ref)) < 2e-2 * abs(float(loss_ref))
    g = torch.autograd.grad(loss, list(block.parameters()))
    g_ref = torch.autograd.grad(loss_ref, list(twin.parameters()))
    for a, b in zip(g, g_ref):
        assert float((a - b).abs().max()) < 5e-2 * max(1e-3, float(b.abs().max()))


# --------------------------------------------------------------------------------------------
# The inference cache: built once, dropped explicitly
# --------------------------------------------------------------------------------------------


def test_inference_cache_is_built_once_and_reused(randomize_bn):
    m, ref = _twins(randomize_bn)
    m.eval(), ref.eval()
    U, X = _pair(2)
    with torch.no_grad():
        assert _diff(m(U, X), ref(U, X)) < TOL
        first = m._folded
        assert first is not None and first.dtype == F64
        m(U, X)
        assert m._folded is first


@pytest.mark.parametrize("change", ["train_eval", "load_state_dict", "to_dtype", "autograd_call", "clear_folded"])
def test_inference_cache_is_dropped_by_what_changes_the_weights(change, randomize_bn):
    m, ref = _twins(randomize_bn)
    m.eval(), ref.eval()
    U, X = _pair(3)
    with torch.no_grad():
        m(U, X)
    new = randomize_bn(AFF3D(8, reduction=2), 5).double().state_dict()
    if change == "load_state_dict":
        m.load_state_dict(new)
    else:
        with torch.no_grad():  # an in-place edit, as an optimizer step makes
            for name, t in m.state_dict().items():
                t.copy_(new[name])
        if change == "train_eval":
            m.train().eval()
        elif change == "to_dtype":
            m.float().double()
        elif change == "autograd_call":
            m(U.requires_grad_(), X)  # (an optimizer step would come after a call like this)
            U = U.detach()
        else:
            m.clear_folded()
    ref.load_state_dict(new)
    assert m._folded is None
    with torch.no_grad():
        assert _diff(m(U, X), ref(U, X)) < TOL


def test_a_model_eval_drops_every_cache(randomize_bn):
    torch.manual_seed(0)
    block = randomize_bn(Bottleneck(32, 8, attn_layer=lambda c: AFF3D(c, reduction=4))).double().eval()
    x = torch.randn(2, 32, 5, 5, dtype=F64)
    with torch.no_grad():
        block(x)
    assert block.attn._folded is not None
    block.train()
    assert block.attn._folded is None


# --------------------------------------------------------------------------------------------
# impl
# --------------------------------------------------------------------------------------------


def test_impl_is_checked_whenever_it_is_set():
    with pytest.raises(ValueError, match=r"AFF3D impl: expected one of \['fast', 'straightforward'\], got 'quick'"):
        AFF3D(8, impl="quick")
    m = AFF3D(8, reduction=2)
    assert m.impl == "fast" and "impl=fast" in repr(m)
    with pytest.raises(ValueError, match="got 'fats'"):
        m.impl = "fats"
    with pytest.raises(ValueError, match="got 'reference'"):  # "reference" names the NumPy package
        m.impl = "reference"
    assert m.impl == "fast"
    m.impl = "straightforward"
    assert "impl=straightforward" in repr(m)


def test_block_tail_is_fused_only_on_the_fast_path():
    block = Bottleneck(32, 8, attn_layer=lambda c: AFF3D(c, reduction=4))
    assert block.fused_tail
    block.attn.impl = "straightforward"
    assert not block.fused_tail
    assert not Bottleneck(32, 8).fused_tail


# --------------------------------------------------------------------------------------------
# Norms other than nn.BatchNorm2d
# --------------------------------------------------------------------------------------------


def _with_norms(m: AFF3D, make) -> AFF3D:
    """Replace every BN of ``m`` by ``make(bn)`` (keeping its values)."""
    for parent in [m.spatial, m.fex]:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, make(child))
    return m


def _frozen(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    f = FrozenBatchNorm2d(bn.num_features, eps=bn.eps).to(bn.weight.dtype)
    f.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"})
    return f


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_frozen_batch_norm_folds_like_inference_batch_norm(train, randomize_bn):
    """Frozen BN (detectron2's COCO configs) is an affine map: the fast path, equal to the module's own."""
    m, ref = _twins(randomize_bn)
    _with_norms(m, _frozen), _with_norms(ref, _frozen)
    m.train(train), ref.train(train)
    U, X = _pair(4)
    with torch.no_grad():
        assert _route(m, U, X) == "folded"
        assert _diff(m(U, X), ref(U, X)) < TOL
    U.requires_grad_(), X.requires_grad_()
    assert _route(m, U, X) == "autograd"
    y, y_ref = m(U, X), ref(U, X)
    assert _diff(y, y_ref) < TOL
    dout = torch.randn_like(y)
    g = torch.autograd.grad(y, [U, X, *m.parameters()], dout)
    g_ref = torch.autograd.grad(y_ref, [U, X, *ref.parameters()], dout)
    assert max(_diff(a, b) for a, b in zip(g, g_ref)) < TOL


def test_sync_batch_norm_folds_in_eval_and_is_said_in_training(randomize_bn):
    m, ref = _twins(randomize_bn)
    _with_norms(m, lambda bn: nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(bn))[0])
    U, X = _pair(5)
    m.eval(), ref.eval()
    with torch.no_grad():
        assert _route(m, U, X) == "folded"
        assert _diff(m(U, X), ref(U, X)) < TOL
    m.train()
    route = fast.choose_route(m, U, X)
    assert route.name == "straightforward" and "across processes" in route.reason


def test_group_norm_takes_the_straightforward_path_with_a_warning():
    m = AFF3D(8, reduction=2).double()
    _with_norms(m, lambda bn: nn.GroupNorm(1, bn.num_features).double())
    ref = AFF3D(8, reduction=2, impl="straightforward").double()
    _with_norms(ref, lambda bn: nn.GroupNorm(1, bn.num_features).double())
    ref.load_state_dict(m.state_dict())
    U, X = _pair(6)
    with pytest.warns(UserWarning, match="straightforward path: GroupNorm normalises each sample"):
        y = m(U, X)
    assert _diff(y, ref(U, X)) < TOL
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref(U, X)  # impl="straightforward" asked for it: nothing to say


# --------------------------------------------------------------------------------------------
# The table gate (aff3d_fast/table_gate.py) in the dispatch
# --------------------------------------------------------------------------------------------


def test_training_on_channels_last_cpu_maps_takes_the_table_gate(randomize_bn):
    """The table gate is the default where it measured faster: training, CPU, channels_last."""
    m, ref = _twins(randomize_bn)
    bn = randomize_bn(nn.BatchNorm2d(8), 3).double()
    bn_ref = nn.BatchNorm2d(8).double()
    bn_ref.load_state_dict(bn.state_dict())
    U, X = (t.to(memory_format=torch.channels_last).requires_grad_() for t in _pair(7))
    assert fast.choose_route(m, U, X, bn).name == "table"
    y, y_ref = m.gate_add_relu(U, X, norm=bn), (ref(bn_ref(U), X) + X).relu()
    assert _diff(y, y_ref) < TOL
    dout = torch.randn_like(y)
    g = torch.autograd.grad(y, [U, X, *m.parameters(), *bn.parameters()], dout)
    g_ref = torch.autograd.grad(y_ref, [U, X, *ref.parameters(), *bn_ref.parameters()], dout)
    assert max(_diff(a, b) for a, b in zip(g, g_ref)) < TOL
    # the same maps in NCHW take the autograd route; inference folds
    assert _route(m, U.detach().contiguous(), X.detach().contiguous()) == "autograd"
    m.eval()
    with torch.no_grad():
        assert _route(m, U, X) == "folded"


def test_without_the_compiled_pass_channels_last_training_takes_the_autograd_route(monkeypatch, randomize_bn):
    """Where the table gate cannot compile its pass (``AFF3D_COMPILE=0``): channels_last training takes the
    autograd route, which measured faster than the product form at every channels_last shape."""
    monkeypatch.setenv("AFF3D_COMPILE", "0")
    m, _ = _twins(randomize_bn)
    U, X = (t.to(memory_format=torch.channels_last) for t in _pair(8))
    assert _route(m, U, X) == "autograd"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("design", ["aff3d", "parallel_concat"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_the_output_takes_an_in_place_add_on_every_route(layout, design, train, randomize_bn):
    """``out = attn(U, X_l); out += X_l`` (torchvision's and detectron2's block tail) on every route:
    the output of the fast path is never a view an autograd Function made."""
    m, ref = _twins(randomize_bn, design)
    m.train(train), ref.train(train)
    U, X = _pair(9)
    if layout == "channels_last":
        U, X = U.to(memory_format=torch.channels_last), X.to(memory_format=torch.channels_last)
    U.requires_grad_()
    y, y_ref = m(U, X), ref(U, X)
    y += X
    y_ref = y_ref + X
    assert _diff(y, y_ref) < TOL
    g, g_ref = torch.autograd.grad(y.sum(), U), torch.autograd.grad(y_ref.sum(), U)
    assert _diff(g[0], g_ref[0]) < TOL
