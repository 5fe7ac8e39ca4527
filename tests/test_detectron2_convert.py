"""torch_impl / torchvision ResNet checkpoint -> detectron2 checkpoint.

The key mapping is tested always; the numerical test (converted backbone's res2-res5 equal
torch_impl's layer1-layer4, with the paper configs' input conventions) needs detectron2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from detectron2_ext import convert_checkpoint as cc
from torch_impl import create_model
from torch_impl.training import checkpoint as ckpt

NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")
ATTN_KEYS = [  # torch_impl.attention.AFF3D's state_dict, kept verbatim under ``attn``
    "spatial.conv.weight",
    *(f"spatial.bn.{p}" for p in NORM_PARAMS),
    "fex.conv1.weight",
    *(f"fex.bn1.{p}" for p in NORM_PARAMS),
    "fex.conv2.weight",
    *(f"fex.bn2.{p}" for p in NORM_PARAMS),
]


def detectron2_resnet50_keys(attn_keys=()) -> set[str]:
    """detectron2's ResNet-50 state_dict names (FrozenBN), written out from its layout."""
    keys = {"stem.conv1.weight", *(f"stem.conv1.norm.{p}" for p in NORM_PARAMS)}
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for i in range(blocks):
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if i == 0 else [])
            for conv in convs:
                keys.add(f"res{stage}.{i}.{conv}.weight")
                keys.update(f"res{stage}.{i}.{conv}.norm.{p}" for p in NORM_PARAMS)
            keys.update(f"res{stage}.{i}.attn.{k}" for k in attn_keys)
    return keys


@pytest.fixture(scope="module")
def aff3d_r50_state():
    torch.manual_seed(0)
    return create_model("aff3d_resnet50").state_dict()


@pytest.mark.parametrize(
    "key, expected",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_mean", "stem.conv1.norm.running_mean"),
        ("layer1.0.conv2.weight", "res2.0.conv2.weight"),
        ("layer2.3.bn3.bias", "res3.3.conv3.norm.bias"),
        ("layer3.0.downsample.0.weight", "res4.0.shortcut.weight"),
        ("layer4.0.downsample.1.running_var", "res5.0.shortcut.norm.running_var"),
        ("layer4.2.attn.fex.bn1.weight", "res5.2.attn.fex.bn1.weight"),
        ("layer1.0.attn.fc1.bias", "res2.0.attn.fc1.bias"),
        ("fc.weight", None),
        ("layer1.0.bn1.num_batches_tracked", None),
        ("bn1.num_batches_tracked", None),
    ],
)
def test_convert_key(key, expected):
    assert cc.convert_key(key) == expected


@pytest.mark.parametrize(
    "key", ["bn.weight", "layer5.0.conv1.weight", "layer1.0.conv4.weight", "head.weight", "layer1.0.bn1.foo"]
)
def test_unknown_key_is_a_value_error(key):
    with pytest.raises(ValueError, match="cannot convert key"):
        cc.convert_key(key)


def test_aff3d_resnet50_maps_onto_detectron2_names(aff3d_r50_state):
    out = cc.convert_state_dict(aff3d_r50_state)
    assert set(out) == detectron2_resnet50_keys(ATTN_KEYS)
    # every tensor is carried over unchanged: the renaming is a bijection on the kept keys
    kept = {k: v for k, v in aff3d_r50_state.items() if not k.startswith("fc.") and "num_batches" not in k}
    assert len(kept) == len(out)
    for key, value in kept.items():
        assert out[cc.convert_key(key)] is value


def test_torchvision_resnet50_converts():
    state = torchvision.models.resnet50().state_dict()
    assert set(cc.convert_state_dict(state)) == detectron2_resnet50_keys()


def test_ddp_prefix_is_removed():
    state = {f"module.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()}
    out = cc.convert_state_dict(state)
    assert "stem.conv1.weight" in out and "res5.1.conv2.norm.running_var" in out


def test_cifar_network_is_refused():
    with pytest.raises(ValueError, match="CIFAR"):
        cc.convert_state_dict(create_model("resnet20_cifar").state_dict())


def test_convert_checkpoint_writes_a_detectron2_file(tmp_path, aff3d_r50_state):
    src = tmp_path / "aff3d_resnet50.pth"
    torch.save({"model": aff3d_r50_state, "epoch": 3}, src)  # a training checkpoint
    dst = tmp_path / "out" / "aff3d_resnet50.d2.pth"
    assert cc.main([str(src), str(dst)]) == 0
    loaded = torch.load(dst, map_location="cpu", weights_only=True)
    assert loaded["matching_heuristics"] is True
    assert loaded["required_config"]["INPUT.FORMAT"] == "RGB"
    assert set(loaded["model"]) == detectron2_resnet50_keys(ATTN_KEYS)
    torch.testing.assert_close(
        loaded["model"]["res4.2.attn.spatial.conv.weight"], aff3d_r50_state["layer3.2.attn.spatial.conv.weight"]
    )
    assert sorted(p.name for p in dst.parent.iterdir()) == ["aff3d_resnet50.d2.pth"]  # no temporary left


def test_pixel_statistics_are_torchvision_normalize_in_0_255():
    assert cc.PIXEL_MEAN == (123.675, 116.28, 103.53)
    assert cc.PIXEL_STD == (58.395, 57.12, 57.375)
    x = torch.rand(3, 4, 4) * 255
    mean, std = torch.tensor(cc.PIXEL_MEAN)[:, None, None], torch.tensor(cc.PIXEL_STD)[:, None, None]
    expected = torchvision.transforms.Normalize(cc.IMAGENET_MEAN, cc.IMAGENET_STD)(x / 255)
    torch.testing.assert_close((x - mean) / std, expected)


# ----------------------------------------------------------------------------- with detectron2


@pytest.fixture(scope="module")
def d2():
    return pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")


def write_imagenet_checkpoint(name: str, net: torch.nn.Module, folder) -> Path:
    """The file a user would convert: torchvision's own ResNet-50 as a bare state_dict (``torch.save``),
    a torch_impl network as a ``torch_impl.train`` checkpoint (format and checksum)."""
    if name == "resnet50":
        path = folder / "resnet50-torchvision.pth"
        torch.save(net.state_dict(), path)
        return path
    return ckpt.save_checkpoint({"model_name": name, "model": net.state_dict()}, folder / f"{name}.pth")


@pytest.mark.detectron2
@pytest.mark.parametrize(
    "name, config_name",
    [
        ("resnet50", "R_50"),
        ("se_resnet50", "SE_R_50"),
        ("cbam_resnet50", "CBAM_R_50"),
        ("eca_resnet50", "ECA_R_50"),
        ("aff3d_resnet50", "AFF3D_R_50"),
    ],
)
def test_converted_backbone_equals_the_classification_network(d2, tmp_path, trained_like, name, config_name):
    """res2..res5 of the Mask R-CNN built from the COCO config == layer1..layer4 of the ImageNet network.

    The plain baseline starts from torchvision's ResNet-50 itself, the attention networks from a
    torch_impl training checkpoint file; each goes through the converter's command line into its
    config's MODEL.WEIGHTS. The image goes in as detectron2 takes it (0-255, RGB, the config's
    PIXEL_MEAN/STD) and as the classifier takes it (ToTensor + Normalize): the converter and the
    configs must agree on pixel statistics, channel order and stride placement. In float64, so that
    a tolerance far below any mapping error holds although the two paths round differently.
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from detectron2_ext import backbone  # noqa: F401
    from detectron2_ext.config import add_aff3d_config

    torch.manual_seed(0)
    net = torchvision.models.resnet50() if name == "resnet50" else create_model(name)
    net = trained_like(net, size=64)  # random BN statistics at a trained scale
    weights = tmp_path / f"{name}.d2.pth"
    assert cc.main([str(write_imagenet_checkpoint(name, net, tmp_path)), str(weights)]) == 0
    net.double()

    configs = Path(__file__).parents[1] / "detectron2_ext/configs/COCO-InstanceSegmentation"
    config = configs / f"mask_rcnn_{config_name}_FPN_1x.yaml"
    cfg = get_cfg()
    add_aff3d_config(cfg)
    cfg.merge_from_file(str(config))
    for key, value in cc.REQUIRED_CONFIG.items():  # what the converter says the config must set, it does
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert (list(node) if isinstance(value, list) else node) == value, key
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(weights)])
    model = build_model(cfg).eval()
    checkpointer, seen = DetectionCheckpointer(model), []
    load_model = checkpointer._load_model  # returns the keys that did not match; load() only logs them
    checkpointer._load_model = lambda checkpoint: seen.append(load_model(checkpoint)) or seen[-1]
    checkpointer.load(cfg.MODEL.WEIGHTS)
    (loaded,) = seen
    missing_backbone = [k for k in loaded.missing_keys if k.startswith("backbone.bottom_up.")]
    assert not missing_backbone and not loaded.unexpected_keys and not loaded.incorrect_shapes, (
        missing_backbone[:5], loaded.unexpected_keys[:5], loaded.incorrect_shapes[:5]
    )
    # every attention tensor of the ImageNet network lands in the backbone's attention, value for value
    converted = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    ours = {k: v for k, v in model.backbone.bottom_up.state_dict().items() if ".attn." in k}
    theirs = {k: v for k, v in converted.items() if ".attn." in k}
    assert set(ours) == set(theirs)
    assert bool(theirs) is (name != "resnet50")
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    model.double()
    # the config's statistics in float64 (the float32 buffers carry rounding of order 1e-7)
    model.pixel_mean.copy_(torch.tensor(cfg.MODEL.PIXEL_MEAN, dtype=torch.float64).view(-1, 1, 1))
    model.pixel_std.copy_(torch.tensor(cfg.MODEL.PIXEL_STD, dtype=torch.float64).view(-1, 1, 1))

    image = torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8)  # H, W, RGB; multiple of 32: no padding
    with torch.no_grad():
        images = model.preprocess_image([{"image": image.permute(2, 0, 1)}])  # as DatasetMapper gives it
        features = model.backbone.bottom_up(images.tensor)
        x = torchvision.transforms.functional.normalize(
            image.permute(2, 0, 1)[None].double() / 255, cc.IMAGENET_MEAN, cc.IMAGENET_STD
        )
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for stage, layer in zip(("res2", "res3", "res4", "res5"), (net.layer1, net.layer2, net.layer3, net.layer4)):
            x = layer(x)
            # float64: agreement to ~1e-13 of the stage's scale was measured; 1e-10 leaves room
            torch.testing.assert_close(features[stage], x, rtol=0, atol=1e-10 * x.abs().max().item())
