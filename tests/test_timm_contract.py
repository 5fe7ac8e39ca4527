"""timm's model contract on our networks: head, features, intermediates, FX tracing, training options.

Each test names the test of timm's ``tests/test_models.py`` it mirrors (timm runs that file on its
own models; ours are filtered out of several of its lists by module name). Tiny inputs: CIFAR nets
at 16-32 px, ImageNet nets at 32-64 px. The parts that need timm or torchvision's FX feature
extraction skip without them; the networks' own interface is tested without either.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from torch_impl import create_model
from torch_impl.attention import SE
from torch_impl.models import BasicBlock, Bottleneck, PreActBottleneck
from torch_impl.timm_models import timm_installed

needs_timm = pytest.mark.skipif(not timm_installed(), reason="timm is not installed (pip install -e .[dev])")
ROOT = Path(__file__).resolve().parents[1]

# (name, input side): one per block type and attention, small enough for one thread.
NAMES = [
    ("aff3d_resnet18", 64),
    ("aff3d_resnet50", 32),
    ("aff3d_resnet20_cifar", 16),
    ("se_resnet18", 32),
    ("cbam_resnet20_cifar", 16),
    ("eca_resnet18", 32),
    ("resnet20_cifar", 16),
]
NAME_IDS = [n for n, _ in NAMES]


def _x(side: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **kwargs).eval()


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [b for n in model.stage_names for b in getattr(model, n)]


# -- head: timm test_model_default_cfgs -------------------------------------------------------------


@pytest.mark.parametrize("name, side", NAMES, ids=NAME_IDS)
def test_head_and_feature_sizes(name, side):
    """Mirrors test_model_default_cfgs: num_features, head_hidden_size, forward_head(pre_logits),
    reset_classifier(0) -> pooled, reset_classifier(0, '') -> map, num_classes=0 + global_pool=''."""
    model, x = _model(name), _x(side, batch=1)
    stride = model.feature_info[-1]["reduction"]
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model(x)
        assert feats.shape == (1, model.num_features, side // stride, side // stride)
        assert pre.shape == (1, model.head_hidden_size) and logits.shape == (1, model.num_classes)
        # the head computes what torchvision's did (pool, flatten, fc): same bits
        assert torch.equal(logits, model.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(feats, (1, 1)), 1)))
        assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(x), pre)
        model.reset_classifier(0, "")
        assert torch.equal(model(x), feats)
        bare = _model(name, num_classes=0, global_pool="")
        assert bare(x).shape == feats.shape and "fc.weight" not in bare.state_dict()


@pytest.mark.parametrize("pool, mult", [("avg", 1), ("max", 1), ("avgmax", 1), ("catavgmax", 2)])
def test_global_pool_types(pool, mult):
    """timm's global_pool choices (timm's SelectAdaptivePool2d), through create_model and reset_classifier."""
    model, x = _model("se_resnet20_cifar", global_pool=pool, num_classes=5), _x(16)
    assert model.head_hidden_size == 256 * mult and model.fc.in_features == 256 * mult
    with torch.no_grad():
        feats = model.forward_features(x)
        avg, mx = feats.mean((2, 3)), feats.amax((2, 3))
        want = {"avg": avg, "max": mx, "avgmax": 0.5 * (avg + mx), "catavgmax": torch.cat([avg, mx], 1)}[pool]
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), want)
        model.reset_classifier(3, "avg")
        assert model.head_hidden_size == 256 and model(x).shape == (2, 3)


def test_reset_classifier_keeps_device_dtype_and_mode():
    model = create_model("resnet20_cifar").double().train()
    model.reset_classifier(7)
    assert model.fc.weight.dtype == torch.float64 and model.fc.training and model.global_pool.training
    assert model(_x(16).double()).shape == (2, 7)


@needs_timm
@pytest.mark.parametrize("name", ["aff3d_resnet50", "cbam_resnet164_cifar"])
def test_pretrained_cfg_is_complete(name):
    """Mirrors test_model_default_cfgs' checks on the cfg: classifier and first conv name real weights."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    for key in (
        "url",
        "num_classes",
        "input_size",
        "pool_size",
        "crop_pct",
        "interpolation",
        "mean",
        "std",
        "first_conv",
        "classifier",
        "license",
        "paper_ids",
        "paper_name",
        "architecture",
    ):
        assert key in cfg, key
    keys = model.state_dict().keys()
    assert cfg["classifier"] + ".weight" in keys and cfg["first_conv"] + ".weight" in keys
    assert cfg["pool_size"][0] == cfg["input_size"][1] // model.feature_info[-1]["reduction"]
    assert model.head_hidden_size == model.num_features > 0


# -- features: timm test_model_forward_features / _intermediates / _intermediates_features ------------


@needs_timm
@pytest.mark.parametrize("name, side", [("aff3d_resnet18", 64), ("aff3d_resnet20_cifar", 16)])
@pytest.mark.parametrize("feature_cls", ["list", "getter", "hook", "fx"])
def test_features_only(name, side, feature_cls):
    """Mirrors test_model_forward_features (FeatureListNet) and test_model_forward_intermediates_features
    (feature_cls='getter'): one map per feature_info entry, of its channels and reduction."""
    import timm

    model = timm.create_model(name, features_only=True, feature_cls=feature_cls).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    with torch.no_grad():
        outs = model(_x(side, batch=1))
    assert len(outs) == len(channels)
    for c, r, o in zip(channels, reductions, outs):
        assert o.shape == (1, c, side // r, side // r)


@needs_timm
def test_features_only_out_indices_match_forward_intermediates():
    import timm

    torch.manual_seed(0)
    feat = timm.create_model("aff3d_resnet18", features_only=True, out_indices=(1, -1)).eval()
    torch.manual_seed(0)
    full = timm.create_model("aff3d_resnet18").eval()
    x = _x(64)
    with torch.no_grad():
        outs = feat(x)
        inter = full.forward_intermediates(x, indices=(1, -1), intermediates_only=True)
    assert feat.feature_info.channels() == [64, 512] and [o.shape[1] for o in outs] == [64, 512]
    assert all(torch.equal(a, b) for a, b in zip(outs, inter))


@pytest.mark.parametrize("name, side", NAMES, ids=NAME_IDS)
def test_forward_intermediates(name, side):
    """Mirrors test_model_forward_intermediates: one map per feature_info entry, the final output equal
    to forward_features, and the same again with grad checkpointing."""
    model, x = _model(name), _x(side, batch=1)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(model.feature_info) >= 3
        for info, o in zip(model.feature_info, inter):
            assert o.shape == (1, info["num_chs"], side // info["reduction"], side // info["reduction"])
        assert torch.equal(final, model.forward_features(x))
        model.set_grad_checkpointing()
        final2, _ = model.forward_intermediates(x)
        torch.testing.assert_close(final, final2, rtol=1e-4, atol=1e-5)


def test_forward_intermediates_options():
    model, x = _model("aff3d_resnet20_cifar"), _x(16)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [t.shape[1] for t in last2] == [128, 256] and torch.equal(last2[1], inter[3])
        early, some = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert torch.equal(early, inter[1]) and len(some) == 2  # stopped after layer1, no final norm
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)[0]
        assert torch.equal(normed, final)  # the final BN-ReLU on the last stage's map
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize(
    "name, side, keep, gone",
    [
        ("aff3d_resnet18", 32, [1, 2], ["layer3", "layer4"]),
        ("se_resnet20_cifar", 16, 2, []),
    ],
)
def test_prune_intermediate_layers(name, side, keep, gone):
    """What timm's FeatureGetterNet does before calling forward_intermediates."""
    model, x = _model(name), _x(side)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=keep, intermediates_only=True)
        take = model.prune_intermediate_layers(keep)
        got = model.forward_intermediates(x, indices=take, intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert all(len(getattr(model, n)) == 0 for n in gone) and model.num_classes == 0
    assert not any(k.startswith(tuple(g + "." for g in gone)) for k in model.state_dict())


# -- FX: timm test_model_forward_fx / test_model_backward_fx ------------------------------------------


def _fx_models(model):
    """The traced networks timm's and torchvision's helpers build, and plain torch.fx."""
    fe = pytest.importorskip("torchvision.models.feature_extraction")
    train_nodes, eval_nodes = fe.get_graph_node_names(model)
    yield fe.create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]])
    yield torch.fx.symbolic_trace(model)


def _outputs(out):
    return torch.cat(tuple(out.values())) if isinstance(out, dict) else out


@pytest.mark.parametrize("name, side", NAMES, ids=NAME_IDS)
def test_forward_fx_matches_eager_bit_for_bit(name, side):
    """Mirrors test_model_forward_fx: the traced graph (input checks skipped while tracing, 3D-AFF's
    fused tail recorded as one call) returns exactly the eager output."""
    model, x = _model(name), _x(side, batch=1)
    with torch.inference_mode():
        eager = model(x)
        for traced in _fx_models(model):
            assert torch.equal(_outputs(traced(x)), eager)


def test_forward_fx_straightforward_aff3d_and_stage_nodes():
    """3D-AFF's straightforward path is traced through (no fused call); torchvision's stage nodes."""
    fe = pytest.importorskip("torchvision.models.feature_extraction")
    model, x = _model("aff3d_resnet18", impl="straightforward"), _x(32)
    extractor = fe.create_feature_extractor(model, return_nodes={"layer2": "c3", "layer4": "c5"})
    with torch.no_grad():
        out, (_, inter) = extractor(x), model.forward_intermediates(x)
    assert torch.equal(out["c3"], inter[2]) and torch.equal(out["c5"], inter[4])
    assert any("attn" in n for n in fe.get_graph_node_names(model)[1])  # traced into the module


@pytest.mark.parametrize(
    "name, side", [("aff3d_resnet18", 32), ("aff3d_resnet20_cifar", 16), ("cbam_resnet20_cifar", 16)]
)
def test_backward_fx(name, side):
    """Mirrors test_model_backward_fx: the graph traced in training mode, every parameter gets a gradient."""
    model = _model(name, num_classes=42).train()
    for traced in _fx_models(model):
        model.zero_grad(set_to_none=True)
        out = _outputs(traced(_x(side)))
        out.mean().backward()
        assert out.shape == (2, 42)
        assert all(p.grad is not None for p in model.parameters())


def test_attention_checks_skip_while_tracing_and_run_eagerly():
    se = SE(8, reduction=2)
    traced = torch.fx.symbolic_trace(se)
    r, s = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    assert torch.equal(traced(r, s), se(r, s))
    with pytest.raises(ValueError, match="built for C=8"):
        se(torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4))
    # 3D-AFF traced on its own: the straightforward equations (the fast dispatch needs real tensors)
    aff = create_model("aff3d_resnet20_cifar").layer1[0].attn.eval()
    r, s = torch.randn(2, 64, 4, 4), torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(aff)(r, s), aff(r, s))


# -- training options: timm test_model_forward (grad checkpointing), train.py's flags -----------------


def test_grad_checkpointing_checkpoints_each_block(monkeypatch):
    """Mirrors test_model_forward's grad-checkpointing check, in training: same output and gradients,
    and each block really runs under torch.utils.checkpoint."""
    from torch_impl.models import contract

    calls = []
    real = contract.checkpoint
    monkeypatch.setattr(contract, "checkpoint", lambda fn, *a, **k: calls.append(fn) or real(fn, *a, **k))
    x = _x(16)
    grads = []
    for enable in (False, True):
        model = _model("aff3d_resnet20_cifar").train()
        model.set_grad_checkpointing(enable)
        out = model(x)
        out.square().mean().backward()
        grads.append((out.detach(), [p.grad for p in model.parameters()]))
    assert len(calls) == len(_blocks(model))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_drop_path_rate():
    """timm's stochastic depth: a rate growing linearly over the blocks; nothing at all at 0; the
    identity in eval; whole samples of a branch dropped in training."""
    plain, x = _model("aff3d_resnet20_cifar"), _x(16, batch=8)
    assert all(b.drop_path is None for b in _blocks(plain))
    dropped = _model("aff3d_resnet20_cifar", drop_path_rate=0.5)
    rates = [0.0 if b.drop_path is None else b.drop_path.p for b in _blocks(dropped)]
    assert rates == pytest.approx([0.5 * i / 5 for i in range(6)])
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(plain(x), dropped(x))  # eval: same weights, same output (fused tail too)
        assert all(b.fused_tail for b in _blocks(dropped))
        dropped.train()
        assert not dropped.layer3[-1].fused_tail and dropped.layer1[0].fused_tail
        torch.manual_seed(1)
        branch = dropped.layer3[-1].drop_path(torch.ones(64, 1, 1, 1))
        assert set(branch.unique().tolist()) == {0.0, 2.0}  # whole samples dropped, kept ones scaled


def test_drop_rate_is_dropout_before_fc():
    model, x = _model("se_resnet20_cifar", drop_rate=0.5), _x(16)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(model(x), model.fc(model.forward_head(feats, pre_logits=True)))  # eval: none
        model.train()
        torch.manual_seed(0)
        pre = model.forward_head(feats, pre_logits=True)
    assert (pre == 0).sum() > (model.global_pool(feats) == 0).sum() + 100  # about half of 512 dropped


def test_bn_momentum_and_eps_reach_every_batch_norm():
    model = create_model("aff3d_resnet20_cifar", bn_momentum=0.01, bn_eps=1e-4)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(".attn." in n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.momentum == 0.01 and m.eps == 1e-4 for m in bns)


class _AdditiveAttention(nn.Module):
    """A stand-in attention with the optional capabilities a block asks for (no AFF3D involved)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.ones(channels, 1, 1))
        self.fused_calls = 0

    fuses_tail = True

    def forward(self, residual, shortcut):
        return residual + self.bias

    def gate_add_relu(self, residual, shortcut, relu=True, norm=None):
        self.fused_calls += 1
        out = self(residual if norm is None else norm(residual), shortcut) + shortcut
        return torch.relu(out) if relu else out

    def zero_init_last(self):
        nn.init.zeros_(self.bias)


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck, PreActBottleneck])
def test_blocks_ask_their_attention(block):
    """timm's per-block zero_init_last() (the block starts as the identity), and the fused tail, asked
    of the attention itself rather than decided by the block from its type."""
    torch.manual_seed(0)
    inplanes = 16 * block.expansion
    b = block(inplanes, 16, attn_layer=_AdditiveAttention).eval()
    x = torch.rand(2, inplanes, 6, 6)  # non-negative: the post-activation ReLU keeps x
    with torch.no_grad():
        b(x)
        assert b.attn.fused_calls == 1 and b.fused_tail
        b.zero_init_last()
        assert torch.equal(b(x), x)
    assert torch.count_nonzero(b.attn.bias) == 0


@pytest.mark.parametrize("name", ["aff3d_resnet18", "resnet20_cifar"])
def test_group_matcher_groups_every_parameter(name):
    """timm's layer-wise lr decay groups parameters with group_matcher: stem first, head last."""
    pytest.importorskip("timm")
    from timm.models import group_parameters

    model = create_model(name)
    for coarse in (False, True):
        groups = group_parameters(model, model.group_matcher(coarse=coarse))
        names = [n for g in groups.values() for n in g]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters())
        assert groups[0][0] == "conv1.weight" and groups[max(groups)] == ["fc.weight", "fc.bias"]


def test_state_dict_keys_stay_torchvisions():
    """torchvision's keys (pretrained loading and the detectron2 converter rely on them)."""
    tv = pytest.importorskip("torchvision.models")
    with torch.device("meta"):
        ours, theirs = create_model("resnet50"), tv.resnet50()
    assert list(ours.state_dict()) == list(theirs.state_dict())


@needs_timm
@pytest.mark.parametrize("name", ["se_resnet20_cifar"])
def test_timm_train_py_options(name):
    """What timm's train.py passes (--drop, --drop-path, --gp, --bn-momentum, --bn-eps, --num-classes 0)
    and calls (--grad-checkpointing, --head-init-scale / --head-init-bias through get_classifier)."""
    import timm

    model = timm.create_model(
        name,
        num_classes=10,
        drop_rate=0.1,
        drop_path_rate=0.1,
        global_pool="avgmax",
        bn_momentum=0.05,
        bn_eps=1e-4,
        drop_block_rate=None,
    )
    model.set_grad_checkpointing(enable=True)
    with torch.no_grad():
        model.get_classifier().weight.mul_(0.5)
        nn.init.constant_(model.get_classifier().bias, 0.1)
    out = model.train()(_x(16))
    out.mean().backward()
    assert out.shape == (2, 10) and model.grad_checkpointing
    assert timm.create_model(name, num_classes=0)(_x(16)).shape == (2, 256)


def test_the_contract_works_without_timm():
    code = (
        "import sys; sys.modules['timm'] = None\n"
        "import torch, torch_impl\n"
        "m = torch_impl.create_model('aff3d_resnet20_cifar', num_classes=0, drop_path_rate=0.1).eval()\n"
        "x = torch.randn(1, 3, 16, 16)\n"
        "final, inter = m.forward_intermediates(x)\n"
        "m.set_grad_checkpointing(); m.reset_classifier(5, 'max')\n"
        "traced = isinstance(torch.fx.symbolic_trace(m), torch.fx.GraphModule)\n"
        "print(len(inter), tuple(final.shape), tuple(m(x).shape), traced)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "(1,", "256,", "4,", "4)", "(1,", "5)", "True"]
