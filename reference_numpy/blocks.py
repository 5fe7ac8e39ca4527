"""Residual blocks with 3D-AFF in place, in NumPy: where equations 3 and 7 meet a real ResNet.

Parameter names are those of ``torch_impl.models`` blocks (torchvision's for the post-activation
blocks): ``conv1.weight``, ``bn1.running_var``, ``downsample.0.weight``, ``attn.fex.conv1.weight``...

    basic_block          ResNet-18/34 (He et al. 2016a): 3x3, 3x3
    bottleneck           ResNet-50/101/152, torchvision "v1.5": 1x1, 3x3 (stride here), 1x1
    preact_bottleneck    CIFAR ResNet-164 (He et al. 2016b): BN-ReLU before each conv

A stride-2 (or widening) block has a projection shortcut, so X_l in eqs. 5 and 7 is the
projected input, of U's shape. ``design=None`` gives the plain block.
"""

from __future__ import annotations

import numpy as np

from .aff3d import Params, aff3d_gate, conv_bn, eq3_transform, sub_params
from .designs import AFF3DDesign
from .primitives import batch_norm, conv2d, relu


def _bn(x: np.ndarray, params: Params, name: str) -> np.ndarray:
    return batch_norm(x, *(params[f"{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")))


def _gate(U: np.ndarray, X_l: np.ndarray, params: Params, design: AFF3DDesign | str | None) -> np.ndarray:
    """U * X_3D when the block has attention, else U."""
    return U if design is None else aff3d_gate(U, X_l, sub_params(params, "attn"), design)


def _projection(x: np.ndarray, params: Params, stride: int) -> np.ndarray:
    """torchvision's shortcut: identity, or 1x1 conv (stride) + BN when ``downsample.0`` exists."""
    if "downsample.0.weight" not in params:
        return x
    return conv_bn(x, params, "downsample.0", "downsample.1", stride=stride)


def basic_block(x: np.ndarray, params: Params, stride: int = 1, design: AFF3DDesign | str | None = None) -> np.ndarray:
    """X_{l+1} = ReLU(U * X_3D + X_l), U = BN(conv3x3(ReLU(BN(conv3x3_stride(x)))))."""
    X_l = _projection(x, params, stride)

    def F_tr(t: np.ndarray) -> np.ndarray:
        t = relu(conv_bn(t, params, "conv1", "bn1", stride=stride, padding=1))
        return conv_bn(t, params, "conv2", "bn2", padding=1)

    U = eq3_transform(x, F_tr)
    return relu(_gate(U, X_l, params, design) + X_l)  # eq. 7, then the block's ReLU


def bottleneck(x: np.ndarray, params: Params, stride: int = 1, design: AFF3DDesign | str | None = None) -> np.ndarray:
    """X_{l+1} = ReLU(U * X_3D + X_l), U = BN(conv1x1(ReLU(BN(conv3x3_stride(ReLU(BN(conv1x1(x)))))))."""
    X_l = _projection(x, params, stride)

    def F_tr(t: np.ndarray) -> np.ndarray:
        t = relu(conv_bn(t, params, "conv1", "bn1"))
        t = relu(conv_bn(t, params, "conv2", "bn2", stride=stride, padding=1))
        return conv_bn(t, params, "conv3", "bn3")

    U = eq3_transform(x, F_tr)
    return relu(_gate(U, X_l, params, design) + X_l)  # eq. 7, then the block's ReLU


def preact_bottleneck(
    x: np.ndarray, params: Params, stride: int = 1, design: AFF3DDesign | str | None = None
) -> np.ndarray:
    """Pre-activation bottleneck (He et al. 2016b, "Identity mappings"): no ReLU after the sum.

    a = ReLU(BN(x)); X_l = x, or conv1x1_stride(a) when the block projects (the shortcut then
    takes the pre-activated input, as in the authors' code for projection blocks);
    U = conv1x1(ReLU(BN(conv3x3_stride(ReLU(BN(conv1x1(a))))))); X_{l+1} = U * X_3D + X_l.
    """
    a = relu(_bn(x, params, "bn1"))
    X_l = conv2d(a, params["downsample.weight"], stride=stride) if "downsample.weight" in params else x

    def F_tr(t: np.ndarray) -> np.ndarray:
        t = conv2d(t, params["conv1.weight"])
        t = conv2d(relu(_bn(t, params, "bn2")), params["conv2.weight"], stride=stride, padding=1)
        return conv2d(relu(_bn(t, params, "bn3")), params["conv3.weight"])

    U = eq3_transform(a, F_tr)
    return _gate(U, X_l, params, design) + X_l  # eq. 7
