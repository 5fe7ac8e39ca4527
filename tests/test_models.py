"""The model zoo: every name builds the network it says, with the paper's defaults and clear errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from torch_impl import AFF3D, CBAM, ECA, SE, create_model, list_models
from torch_impl.models import PreActBottleneck, parse_model_name
from torch_impl.zoo import count_params

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR = ["resnet20_cifar", "resnet164_cifar"]
PREFIXES = ["", "se_", "cbam_", "eca_", "aff3d_"]
ATTN_TYPE = {"": None, "se_": SE, "cbam_": CBAM, "eca_": ECA, "aff3d_": AFF3D}



def blocks(model: nn.Module) -> list[nn.Module]:
    return [
        b for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, name) for b in getattr(model, name)
    ]


def test_list_models_is_exactly_the_contract():
    expected = {p + a for p, a in itertools.product(PREFIXES, IMAGENET + CIFAR)}
    assert set(list_models()) == expected
    assert len(list_models()) == 35
    assert list_models() == sorted(list_models())
    assert list_models("aff3d_*") == sorted("aff3d_" + a for a in IMAGENET + CIFAR)
    assert list_models("*_cifar") == sorted(p + a for p in PREFIXES for a in CIFAR)


@pytest.mark.parametrize("name", list_models())
def test_every_name_builds_its_network(name):
    """Built on the meta device (shapes only, instantaneous): attention type in every block, heads, depth."""
    with torch.device("meta"):
        model = create_model(name)
    prefix = name[: name.index("resnet")]
    want = ATTN_TYPE[prefix]
    bs = blocks(model)
    for b in bs:
        assert (b.attn is None) if want is None else isinstance(b.attn, want), (name, type(b.attn))
    parsed = parse_model_name(name)
    if parsed.architecture.family == "imagenet":
        for attr in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "global_pool", "fc"):
            assert hasattr(model, attr), attr
        assert model.fc.out_features == 1000
    else:
        for attr in ("conv1", "layer1", "layer2", "layer3", "bn", "relu", "global_pool", "fc"):
            assert hasattr(model, attr), attr
        assert not hasattr(model, "layer4") and not hasattr(model, "maxpool")
        assert model.fc.out_features == 100  # CIFAR-100
        assert all(isinstance(b, PreActBottleneck) for b in bs)
    assert model.model_name == name
    assert model.num_classes == model.fc.out_features  # timm's train.py reads it


def test_resnet164_is_164_layers_deep_with_the_preact_widths():
    """He et al. 2016b: 3 stages x 18 bottlenecks x 3 convs + stem conv + fc = 164; widths 16/32/64 -> x4."""
    with torch.device("meta"):
        model = create_model("resnet164_cifar")
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [18, 18, 18]
    main_path_convs = sum(1 for b in blocks(model) for c in (b.conv1, b.conv2, b.conv3))
    assert main_path_convs + 1 + 1 == 164
    assert [s[0].conv1.out_channels for s in stages] == [16, 32, 64]
    assert [s[-1].conv3.out_channels for s in stages] == [64, 128, 256]
    assert model.conv1.out_channels == 16 and model.conv1.kernel_size == (3, 3)
    assert [s[0].conv2.stride for s in stages] == [(1, 1), (2, 2), (2, 2)]
    assert model.fc.in_features == 256
    with torch.device("meta"):
        assert len(create_model("resnet20_cifar").layer2) == 2  # 20 = 9 * 2 + 2


def test_paper_defaults():
    """k = 3, d = 16 on ImageNet and d = 4 on CIFAR, concatenation, channel attention over U (section 4)."""
    with torch.device("meta"):
        a50 = create_model("aff3d_resnet50")
        a164 = create_model("aff3d_resnet164_cifar")
        se50, se164 = create_model("se_resnet50"), create_model("se_resnet164_cifar")
        cbam164 = create_model("cbam_resnet164_cifar")
    design = a50.layer1[0].attn.design
    assert (design.kernel_size, design.reduction, design.merge, design.spatial_input, design.channel_input) == (
        3,
        16,
        "concat",
        "residual+skip",
        "residual",
    )
    assert a50.layer1[0].attn.spatial.conv.weight.shape == (1, 512, 3, 3)  # [U, X_l]: 2C = 512 inputs
    assert a50.layer4[0].attn.fex.conv1.weight.shape == (2048 // 16, 2048, 1, 1)
    assert a164.layer1[0].attn.design.reduction == 4
    assert a164.layer3[0].attn.fex.conv1.weight.shape == (256 // 4, 256, 1, 1)
    assert se50.layer4[0].attn.fc1.out_channels == 2048 // 16
    assert se164.layer1[0].attn.fc1.out_channels == 64 // 4
    assert cbam164.layer1[0].attn.fc1.out_channels == 64 // 4


def test_kwargs_reach_the_attention():
    with torch.device("meta"):
        m = create_model("aff3d_resnet50", kernel_size=5, reduction=8, merge="sum", num_classes=7)
        par = create_model("aff3d_resnet18", design="parallel_concat")
        se = create_model("se_resnet18", reduction=4)
        cbam = create_model("cbam_resnet18", kernel_size=3)
        eca = create_model("eca_resnet18", gamma=1, b=0)
    attn = m.layer2[1].attn
    assert attn.design.kernel_size == 5 and attn.design.reduction == 8 and attn.design.merge == "sum"
    assert attn.spatial.conv.weight.shape == (1, 512, 5, 5)  # summation: C inputs
    assert m.fc.out_features == 7
    assert par.layer1[0].attn.design.fusion == "parallel"
    assert se.layer1[0].attn.fc1.out_channels == 16
    assert cbam.layer1[0].attn.spatial_conv.kernel_size == (3, 3)
    assert eca.layer1[0].attn.conv.kernel_size == (7,)  # |log2(64)/1 + 0|_odd = 7


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        create_model("aff3d_resnet51")
    msg = str(e.value)
    assert "'aff3d_resnet51'" in msg
    for name in list_models():
        assert f"'{name}'" in msg
    for bad in ("", "resnet", "foo_resnet50", "aff3d_", "se_resnet164"):
        with pytest.raises(ValueError, match="unknown model"):
            create_model(bad)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet50", {"reduction": 8}, r"unknown option\(s\) \['reduction'\]"),
        ("se_resnet50", {"kernel_size": 3}, r"unknown option\(s\) \['kernel_size'\]"),
        ("aff3d_resnet50", {"merge": "average"}, r"merge: expected one of \['concat', 'sum'\], got 'average'"),
        ("aff3d_resnet50", {"design": "nope"}, "unknown 3D-AFF design 'nope'"),
        ("aff3d_resnet50", {"kernel_size": 4}, "positive odd integer"),
        ("aff3d_resnet20_cifar", {"zero_init_residual": True}, r"unknown option\(s\) \['zero_init_residual'\]"),
        ("resnet18", {"num_classes": -1}, "num_classes must be a non-negative integer .* got -1"),
        ("resnet18", {"global_pool": "min"}, r"global_pool: expected one of \['', 'avg', 'max'"),
        ("resnet18", {"global_pool": ""}, "global_pool='' .* needs num_classes=0"),
        ("resnet20_cifar", {"drop_path_rate": 1.0}, "drop_path_rate: expected 0 <= rate < 1"),
        ("aff3d_resnet20_cifar", {"reduction": 128}, "larger than the channel count C=64"),
    ],
)
def test_bad_options_get_clear_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def test_cifar_depth_must_be_9n_plus_2():
    from torch_impl.models import PreActResNetCIFAR

    with pytest.raises(ValueError, match=r"expected 9n \+ 2 .* got 50"):
        PreActResNetCIFAR(50)


@pytest.mark.parametrize("name", [p + "resnet18" for p in PREFIXES] + [p + "resnet20_cifar" for p in PREFIXES])
def test_forward_and_backward_on_small_images(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_seeded_construction_repeats_bit_for_bit():
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        states.append(create_model("aff3d_resnet20_cifar").state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_zero_init_residual_zeroes_the_last_bn():
    m = create_model("aff3d_resnet18", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks(m))
    m = create_model("resnet50", zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks(m))


def test_attention_adds_parameters_only_inside_attn():
    """A variant = the plain net + its blocks' ``attn`` (what load_pretrained relies on)."""
    with torch.device("meta"):
        plain = create_model("resnet50")
        for prefix in ("se_", "cbam_", "eca_", "aff3d_"):
            var = create_model(prefix + "resnet50")
            attn = sum(p.numel() for n, p in var.named_parameters() if ".attn." in n)
            assert count_params(var) - attn == count_params(plain), prefix
