"""Residual blocks with 3D-AFF in place, in NumPy: where equations 3 and 7 meet a real ResNet.

Parameter names are those of ``torch_impl.models`` blocks (torchvision's for the post-activation
blocks): ``conv1.weight``, ``bn1.running_var``, ``downsample.0.weight``, ``attn.fex.conv1.weight``...

    basic_block          ResNet-18/34 (He et al. 2016a): 3x3, 3x3
    bottleneck           ResNet-50/101/152, torchvision "v1.5": 1x1, 3x3 (stride here), 1x1
    preact_bottleneck    CIFAR ResNet-164 (He et al. 2016b): BN-ReLU before each conv

A stride-2 (or widening) block has a projection shortcut, so X_l in eqs. 5 and 7 is the
projected input, of U's shape. ``design=None`` gives the plain block.
Each block checks its arguments first (``checks.py``): wrong input raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .aff3d import Params, aff3d_gate, conv_bn, eq3_transform, sub_params
from .designs import AFF3DDesign
from .primitives import batch_norm, relu


def _check(where: str, x: np.ndarray, params: Params, stride: int, convs: list[str], bns: list[str]) -> None:
    """The block's input, stride and the entries of its residual branch (all missing ones at once)."""
    checks.nchw(where, "x", x)
    checks.integer(where, "stride", stride, 1)
    checks.keys(where, params, [f"{c}.weight" for c in convs] + [k for bn in bns for k in checks.bn_keys(bn)])


def _bn(x: np.ndarray, params: Params, name: str) -> np.ndarray:
    with checks.naming(f"params '{name}.*'"):
        return batch_norm(x, *(params[k] for k in checks.bn_keys(name)))


def _gate(U: np.ndarray, X_l: np.ndarray, params: Params, design: AFF3DDesign | str | None, where: str) -> np.ndarray:
    """U * X_3D when the block has attention, else U."""
    hint = " (a block that changes the shape needs a projection shortcut, 'downsample.*')"
    checks.same_shape(where, "residual U", U, "shortcut X_l", X_l, hint)
    if design is None:  # attention weights would be silently left out
        checks.absent(where, params, "attn.", "design is None, a plain block")
        return U
    with checks.naming(f"{where} params 'attn.*'"):
        return aff3d_gate(U, X_l, sub_params(params, "attn"), design)


def _projection(x: np.ndarray, params: Params, stride: int) -> np.ndarray:
    """torchvision's shortcut: identity, or 1x1 conv (stride) + BN when ``downsample.0`` exists."""
    if "downsample.0.weight" not in params:
        return x
    return conv_bn(x, params, "downsample.0", "downsample.1", stride=stride)


def basic_block(x: np.ndarray, params: Params, stride: int = 1, design: AFF3DDesign | str | None = None) -> np.ndarray:
    """X_{l+1} = ReLU(U * X_3D + X_l), U = BN(conv3x3(ReLU(BN(conv3x3_stride(x)))))."""
    _check("basic_block", x, params, stride, ["conv1", "conv2"], ["bn1", "bn2"])
    X_l = _projection(x, params, stride)

    def F_tr(t: np.ndarray) -> np.ndarray:
        t = relu(conv_bn(t, params, "conv1", "bn1", stride=stride, padding=1))
        return conv_bn(t, params, "conv2", "bn2", padding=1)

    U = eq3_transform(x, F_tr)
    return relu(_gate(U, X_l, params, design, "basic_block") + X_l)  # eq. 7, then the block's ReLU


def bottleneck(x: np.ndarray, params: Params, stride: int = 1, design: AFF3DDesign | str | None = None) -> np.ndarray:
    """X_{l+1} = ReLU(U * X_3D + X_l), U = BN(conv1x1(ReLU(BN(conv3x3_stride(ReLU(BN(conv1x1(x)))))))."""
    _check("bottleneck", x, params, stride, ["conv1", "conv2", "conv3"], ["bn1", "bn2", "bn3"])
    X_l = _projection(x, params, stride)

    def F_tr(t: np.ndarray) -> np.ndarray:
        t = relu(conv_bn(t, params, "conv1", "bn1"))
        t = relu(conv_bn(t, params, "conv2", "bn2", stride=stride, padding=1))
        return conv_bn(t, params, "conv3", "bn3")

    U = eq3_transform(x, F_tr)
    return relu(_gate(U, X_l, params, design, "bottleneck") + X_l)  # eq. 7, then the block's ReLU


def preact_bottleneck(
    x: np.ndarray, params: Params, stride: int = 1, design: AFF3DDesign | str | None = None
) -> np.ndarray:
    """Pre-activation bottleneck (He et al. 2016b, "Identity mappings"): no ReLU after the sum.

    a = ReLU(BN(x)); X_l = x, or conv1x1_stride(a) when the block projects (the shortcut then
    takes the pre-activated input, as in the authors' code for projection blocks);
    U = conv1x1(ReLU(BN(conv3x3_stride(ReLU(BN(conv1x1(a))))))); X_{l+1} = U * X_3D + X_l.
    """
    _check("preact_bottleneck", x, params, stride, ["conv1", "conv2", "conv3"], ["bn1", "bn2", "bn3"])
    a = relu(_bn(x, params, "bn1"))
    X_l = conv_bn(a, params, "downsample", None, stride=stride) if "downsample.weight" in params else x

    def F_tr(t: np.ndarray) -> np.ndarray:  # conv_bn(..., None): the conv alone, BN comes before it here
        t = conv_bn(t, params, "conv1", None)
        t = conv_bn(relu(_bn(t, params, "bn2")), params, "conv2", None, stride=stride, padding=1)
        return conv_bn(relu(_bn(t, params, "bn3")), params, "conv3", None)

    U = eq3_transform(a, F_tr)
    return _gate(U, X_l, params, design, "preact_bottleneck") + X_l  # eq. 7
