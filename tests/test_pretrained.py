"""torchvision compatibility: same keys, strict loading, same outputs; attention variants load the backbone."""

from __future__ import annotations

import pytest
import torch
import torchvision

from torch_impl import create_model
from torch_impl.pretrained import LoadReport, is_attention_key, load_pretrained

DEPTHS = [18, 34, 50, 101, 152]



def torchvision_resnet(depth: int, **kwargs) -> torch.nn.Module:
    return getattr(torchvision.models, f"resnet{depth}")(weights=None, **kwargs)


@pytest.mark.parametrize("depth", DEPTHS)
def test_plain_resnet_has_torchvisions_state_dict(depth):
    """Same keys in the same order with the same shapes (built on meta: no memory, no time)."""
    with torch.device("meta"):
        ours = create_model(f"resnet{depth}").state_dict()
        theirs = torchvision_resnet(depth).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_weights_load_strict_and_give_the_same_outputs(depth, randomize_bn):
    torch.manual_seed(depth)
    theirs = randomize_bn(torchvision_resnet(depth), seed=depth).eval()
    ours = create_model(f"resnet{depth}").eval()
    result = ours.load_state_dict(theirs.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["se_", "cbam_", "eca_", "aff3d_"])
def test_attention_variant_loads_every_backbone_weight_and_reports_the_new_keys(prefix, randomize_bn):
    torch.manual_seed(0)
    tv = randomize_bn(torchvision_resnet(18)).eval()
    model = create_model(prefix + "resnet18")
    attn_before = {k: v.clone() for k, v in model.state_dict().items() if is_attention_key(k)}
    report = load_pretrained(model, tv.state_dict())
    assert isinstance(report, LoadReport)
    assert set(report.loaded) == set(tv.state_dict())
    assert set(report.new) == set(attn_before) and len(report.new) > 0
    assert all(".attn." in k for k in report.new)
    state = model.state_dict()
    for k, v in tv.state_dict().items():
        assert torch.equal(state[k], v), k
    for k, v in attn_before.items():  # the attention stays as initialised
        assert torch.equal(state[k], v), k
    assert str(report).startswith(f"loaded {len(tv.state_dict())} tensors")


def test_plain_model_through_the_helper_is_a_strict_load():
    tv = torchvision_resnet(18)
    report = load_pretrained(create_model("resnet18"), tv.state_dict())
    assert report.new == () and len(report.loaded) == len(tv.state_dict())


def test_aff3d_resnet50_from_a_file_via_create_model(tmp_path):
    tv = torchvision_resnet(50)
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": tv.state_dict()}, path)  # a wrapped training checkpoint is unwrapped
    model = create_model("aff3d_resnet50", pretrained=path)
    assert torch.equal(model.layer3[5].conv2.weight, tv.layer3[5].conv2.weight)
    assert torch.equal(model.fc.bias, tv.fc.bias)


def test_loading_errors_are_clear():
    sd = torchvision_resnet(18).state_dict()
    model = create_model("aff3d_resnet18")
    with pytest.raises(ValueError, match=r"checkpoint key\(s\) the model lacks, e.g. \['extra.weight'\]"):
        load_pretrained(model, {**sd, "extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in sd.items() if k != "layer2.0.bn1.running_var"}
    with pytest.raises(ValueError, match=r"backbone key\(s\) missing .*layer2.0.bn1.running_var"):
        load_pretrained(model, missing)
    with pytest.raises(
        ValueError, match=r"shape mismatch .*fc.weight: model \(10, 512\), checkpoint \(1000, 512\).*exclude"
    ):
        load_pretrained(create_model("aff3d_resnet18", num_classes=10), sd)
    aff = create_model("aff3d_resnet18").state_dict()
    with pytest.raises(ValueError, match=r"the model lacks, e.g. \['layer1.0.attn"):
        load_pretrained(create_model("resnet18"), aff)  # a plain net does not swallow attention weights
    with pytest.raises(ValueError, match="missing path"):
        load_pretrained(model, "/nonexistent/weights.pth")
    with pytest.raises(ValueError, match="expected tensors only"):
        load_pretrained(model, {**sd, "meta": "v1"})
    with pytest.raises(ValueError, match="expected a state_dict"):
        load_pretrained(model, [1, 2])


def test_exclude_fine_tunes_on_another_number_of_classes():
    sd = torchvision_resnet(18).state_dict()
    model = create_model("aff3d_resnet18", num_classes=10)
    fc_before = model.fc.weight.clone()
    report = load_pretrained(model, sd, exclude=("fc.",))
    assert {"fc.weight", "fc.bias"} <= set(report.new)
    assert not any(k.startswith("fc.") for k in report.loaded)
    assert torch.equal(model.fc.weight, fc_before)
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])
