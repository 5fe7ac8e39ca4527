"""A whole ResNet in NumPy: stem, stages of residual blocks (with 3D-AFF), pooling, classifier.

Runs the forward pass of a network built by ``torch_impl.create_model`` from its state_dict,
converted once by ``torch_impl.numpy_bridge.to_numpy_params`` (a flat ``{name: ndarray}`` with
PyTorch's names). Nothing here imports torch: a reader can step through a real network, block
by block, with NumPy alone (pass ``trace={}`` to keep every stage's output).

Two families, both with the first stage at stride 1 and every later stage starting at stride 2:

    ImageNet ResNet-18..152 (He et al. 2016a, torchvision layout)
        X_0 = MaxPool_3x3/2(ReLU(BN(Conv_7x7/2(x))))                         stem
        X_s = Block(... Block(X_{s-1}))   s = 1..4, basic or bottleneck        layer1..layer4
        z   = W_fc GAP(X_4) + b_fc                                            avgpool, fc

    CIFAR pre-activation ResNet-(9n+2) (He et al. 2016b), e.g. ResNet-164 (n = 18)
        X_0 = Conv_3x3(x)                                                     conv1
        X_s = PreActBlock(... PreActBlock(X_{s-1}))   s = 1..3                layer1..layer3
        z   = W_fc GAP(ReLU(BN(X_3))) + b_fc                                  bn, relu, avgpool, fc

Inside each block, U = F_tr(X_l) (eq. 3) is gated by the 3D-AFF attention and added to the
shortcut, X_{l+1} = U * X_3D + X_l (eq. 7): see ``blocks.py`` and ``aff3d.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from . import checks
from .aff3d import Params, conv_bn, sub_params
from .blocks import basic_block, bottleneck, preact_bottleneck
from .designs import AFF3DDesign, as_design
from .primitives import batch_norm, global_avg_pool, linear, max_pool2d, relu

BLOCKS = {"basic": basic_block, "bottleneck": bottleneck, "preact": preact_bottleneck}
STEMS = ("imagenet", "cifar")


@dataclass(frozen=True)
class NetworkSpec:
    """The architecture, which a state_dict's names alone do not fully say.

    stem: ``"imagenet"`` (7x7/2 conv, BN, ReLU, 3x3/2 max pool) or ``"cifar"`` (3x3 conv).
    block: ``"basic"``, ``"bottleneck"`` or ``"preact"`` (pre-activation bottleneck).
    layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18, (18, 18, 18) for ResNet-164.
    design: the 3D-AFF design of every block's attention, or None for a plain ResNet.
    """

    stem: str
    block: str
    layers: tuple[int, ...]
    design: AFF3DDesign | None = None

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"NetworkSpec stem: expected one of {list(STEMS)}, got {self.stem!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"NetworkSpec block: expected one of {list(BLOCKS)}, got {self.block!r}")
        if not self.layers or any(int(n) < 1 for n in self.layers):
            raise ValueError(f"NetworkSpec layers: expected positive block counts, got {self.layers!r}")

    def stride(self, stage: int) -> int:
        """Stride of the first block of stage ``stage`` (0-based): 1 for the first stage, else 2."""
        return 1 if stage == 0 else 2


_ATTENTION_KEY = re.compile(r"^layer\d+\.\d+\.attn\.(.+)$")


def _design_from_weights(params: Params, design: AFF3DDesign | str | None) -> AFF3DDesign | None:
    """The design, with k and d read from the weights (they are facts of the checkpoint).

    The weights cannot tell summation U + X_l from residual-only input (same shapes), so the
    caller names the design; a merge that contradicts the spatial conv's input width is an error.
    """
    attn = {m.group(1) for k in params if (m := _ATTENTION_KEY.match(k))}
    if not attn:
        if design is not None:
            raise ValueError(
                f"design {design!r} given, but the parameters hold no attention (no 'layer*.*.attn.*' keys)"
            )
        return None
    if not any(k.startswith("fex.") for k in attn):
        raise ValueError(
            f"the NumPy reference implements the 3D-AFF attention only; these attention weights are not "
            f"3D-AFF's (expected 'attn.fex.*', got e.g. {sorted(attn)[:3]})"
        )
    if design is None:
        raise ValueError("the parameters hold 3D-AFF attention weights: pass its design (e.g. 'aff3d' or 'aff3d_sum')")
    design = as_design("infer_spec", design)
    checks.keys("infer_spec", params, ["layer1.0.attn.fex.conv1.weight"])
    w1 = params["layer1.0.attn.fex.conv1.weight"]  # (C/d, C, 1, 1)
    checks.shape("infer_spec", "params['layer1.0.attn.fex.conv1.weight']", w1, (None, None, 1, 1), "(C/d, C, 1, 1)")
    updates = {"reduction": w1.shape[1] // w1.shape[0]}
    spatial = params.get("layer1.0.attn.spatial.conv.weight")  # (1, C_in, k, k)
    if (spatial is None) == design.has_spatial:
        raise ValueError(
            f"design spatial_input={design.spatial_input!r} {'has' if design.has_spatial else 'lacks'} a spatial branch, "
            f"the weights {'lack' if spatial is None else 'have'} one (attn.spatial.conv.weight)"
        )
    if spatial is not None:
        updates["kernel_size"] = spatial.shape[-1]
        concat_width = spatial.shape[1] == 2 * w1.shape[1]
        if concat_width != (design.spatial_in_channels(w1.shape[1]) == 2 * w1.shape[1]):
            raise ValueError(
                f"design merge={design.merge!r}, spatial_input={design.spatial_input!r} does not fit the spatial conv's "
                f"{spatial.shape[1]} input channels for C={w1.shape[1]}"
            )
    return replace(design, **updates)


def infer_spec(params: Params, design: AFF3DDesign | str | None = None) -> NetworkSpec:
    """Read the architecture off the parameter names and shapes.

    ``bn.weight`` (a final BN) marks the CIFAR pre-activation net; ``conv3`` in the first block a
    bottleneck; the ``layer{s}.{i}`` names count the blocks. ``design`` must name the 3D-AFF
    design when the parameters contain attention (its k and d are then read from the weights).
    """
    checks.mapping("infer_spec", params)
    counts: dict[int, int] = {}
    for key in params:
        m = re.match(r"^layer(\d+)\.(\d+)\.", key)
        if m:
            s, i = int(m.group(1)), int(m.group(2))
            counts[s] = max(counts.get(s, 0), i + 1)
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):
        raise ValueError(f"expected stages layer1..layerN in the parameter names, found stages {sorted(counts)}")
    stem = "cifar" if "bn.weight" in params else "imagenet"
    if stem == "cifar":
        block = "preact"
    else:
        block = "bottleneck" if "layer1.0.conv3.weight" in params else "basic"
    layers = tuple(counts[s] for s in sorted(counts))
    return NetworkSpec(stem, block, layers, _design_from_weights(params, design))


def stem(x: np.ndarray, params: Params, spec: NetworkSpec) -> np.ndarray:
    """ImageNet: X_0 = MaxPool_3x3/2(ReLU(BN(Conv_7x7/2(x)))), (N, 3, H, W) -> (N, 64, H/4, W/4).

    CIFAR: X_0 = Conv_3x3(x), (N, 3, H, W) -> (N, 16, H, W); its BN-ReLU opens the first block.
    """
    checks.nchw("stem", "x", x)
    if spec.stem == "cifar":
        return conv_bn(x, params, "conv1", None, padding=1)  # no BN here: conv_bn(..., None) is the conv alone
    x = relu(conv_bn(x, params, "conv1", "bn1", stride=2, padding=3))
    return max_pool2d(x, kernel_size=3, stride=2, padding=1)


def stage(x: np.ndarray, params: Params, spec: NetworkSpec, s: int) -> np.ndarray:
    """Stage ``s`` (0-based, ``layer{s+1}``): its blocks in order, the first with the stage's stride."""
    checks.integer("stage", "s", s, 0, len(spec.layers) - 1, f"{len(spec.layers)} stages")
    block = BLOCKS[spec.block]
    for i in range(spec.layers[s]):
        stride = spec.stride(s) if i == 0 else 1
        x = block(x, sub_params(params, f"layer{s + 1}.{i}"), stride=stride, design=spec.design)
    return x


def head(x: np.ndarray, params: Params, spec: NetworkSpec) -> np.ndarray:
    """z = W_fc GAP(X) + b_fc, (N, C, h, w) -> (N, classes); CIFAR first applies the final ReLU(BN(X))."""
    checks.nchw("head", "x", x)
    checks.keys("head", params, ["fc.weight", "fc.bias", *(checks.bn_keys("bn") if spec.stem == "cifar" else [])])
    if spec.stem == "cifar":
        x = relu(batch_norm(x, *(params[k] for k in checks.bn_keys("bn"))))
    pooled = global_avg_pool(x).reshape(x.shape[0], -1)
    return linear(pooled, params["fc.weight"], params["fc.bias"])


def resnet_forward(
    x: np.ndarray,
    params: Params,
    spec: NetworkSpec | None = None,
    design: AFF3DDesign | str | None = None,
    trace: dict | None = None,
) -> np.ndarray:
    """Logits of the whole network for images ``x`` (N, 3, H, W), in inference mode.

    Args:
        params: ``to_numpy_params(model)`` of a ``torch_impl`` ResNet (any of ``create_model``'s
            plain or 3D-AFF networks).
        spec: the architecture; default ``infer_spec(params, design)``.
        design: the 3D-AFF design when ``spec`` is not given (e.g. ``"aff3d"``).
        trace: a dict that receives the outputs ``stem``, ``layer1``, ``layer2``, ... and ``logits``.
    """
    checks.floating("resnet_forward", "x", x)
    checks.require("resnet_forward", "x", x.ndim == 4, "images (N, C, H, W)", f"shape {x.shape}")
    checks.mapping("resnet_forward", params)
    if spec is None:
        spec = infer_spec(params, design)
    elif design is not None:
        raise ValueError("resnet_forward: pass the design inside spec, or design without spec, not both")
    checks.require("resnet_forward", "spec", isinstance(spec, NetworkSpec), "a NetworkSpec", type(spec).__name__)
    trace = {} if trace is None else trace
    x = stem(x, params, spec)
    trace["stem"] = x
    for s in range(len(spec.layers)):
        x = stage(x, params, spec, s)
        trace[f"layer{s + 1}"] = x
    logits = head(x, params, spec)
    trace["logits"] = logits
    return logits
