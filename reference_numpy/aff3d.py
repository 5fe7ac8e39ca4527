"""The 3D-AFF attention of Liu et al. (2022), equation by equation, in NumPy.

This file *defines* the math; ``torch_impl`` is tested against it. Symbols follow the paper:

    X_l      (N, C, H, W)   input of the l-th residual block (after the projection, if any)
    U        (N, C, H, W)   output of the block's convolutions, U = F_tr(X_l)          eq. 3
    M_c      (N, C, 1, 1)   channel attention feature, F_sq = global average pooling    eq. 4
    M_s      (N, 1, H, W)   spatial attention feature, F_conv = k x k conv + BN          eq. 5
    M_3D     (N, C, H, W)   M_c (+) M_s, broadcast along the missing axes               eq. 1
    X_3D     (N, C, H, W)   sigma(F_ex(M_3D)), F_ex = 1x1 conv C->C/d, ReLU, 1x1 C/d->C  eqs. 2, 6
    X_{l+1}  (N, C, H, W)   U * X_3D + X_l                                             eq. 7

Parameters are a flat ``dict`` of arrays with the PyTorch module's state_dict names
(``spatial.conv.weight``, ``fex.bn1.running_mean``, ...); ``torch_impl.numpy_bridge`` converts.
Each function checks its arguments first (``checks.py``): wrong input raises ``ValueError``.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from . import checks
from .designs import AFF3DDesign, as_design
from .primitives import batch_norm, conv2d, global_avg_pool, relu, sigmoid

Params = Mapping[str, np.ndarray]


def sub_params(params: Params, prefix: str) -> dict[str, np.ndarray]:
    """The entries of ``params`` under ``prefix.``, with the prefix removed."""
    checks.mapping("sub_params", params)
    p = prefix + "."
    return {k[len(p) :]: v for k, v in params.items() if k.startswith(p)}


def conv_bn(x: np.ndarray, params: Params, conv: str, bn: str | None, stride: int = 1, padding: int = 0) -> np.ndarray:
    """A "convolution block": conv (bias only if present) then inference batch norm (if named)."""
    checks.keys("conv_bn", params, [f"{conv}.weight", *([] if bn is None else checks.bn_keys(bn))])
    with checks.naming(f"conv_bn params {conv!r}, {bn!r}"):  # which entries the error is about
        out = conv2d(x, params[f"{conv}.weight"], params.get(f"{conv}.bias"), stride=stride, padding=padding)
        if bn is None:
            return out
        return batch_norm(out, *(params[k] for k in checks.bn_keys(bn)))  # gamma, beta, mean, var


def eq3_transform(X_l: np.ndarray, F_tr: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Eq. 3: U = F_tr(X_l).

    F_tr is the residual branch of the block (conv-BN-ReLU ... conv-BN). X_l: (N, C_in, H_in, W_in);
    U: (N, C, H, W), where C, H, W are the block's output sizes.
    """
    checks.nchw("eq3_transform", "X_l", X_l)
    checks.require("eq3_transform", "F_tr", callable(F_tr), "a function of X_l", type(F_tr).__name__)
    U = F_tr(X_l)
    checks.shape("eq3_transform", "U = F_tr(X_l)", U, (X_l.shape[0], None, None, None), "(N, C, H, W)")
    return U


def eq4_channel_squeeze(U: np.ndarray) -> np.ndarray:
    """Eq. 4: M_c^r = F_sq(U) = 1/(H*W) * sum_{i=1}^{H} sum_{j=1}^{W} u^c(i, j).

    U: (N, C, H, W) -> M_c^r: (N, C, 1, 1). For M_c^{r+s} pass U + X_l instead of U.
    """
    checks.nchw("eq4_channel_squeeze", "U", U)
    return global_avg_pool(U)


def eq5_spatial_attention(U: np.ndarray, X_l: np.ndarray, params: Params, design: AFF3DDesign) -> np.ndarray:
    """Eq. 5: M_s^{r+s} = F_conv(U (+) X_l, W'); or M_s^r = F_conv(U, W').

    (+) is the merge of the design: concatenation [U, X_l] (N, 2C, H, W) or summation U + X_l
    (N, C, H, W). F_conv is a k x k convolution to one channel ("same" padding k // 2, no bias),
    then batch norm on that channel; W' are its weights (1, C_in, k, k).
    Returns M_s: (N, 1, H, W).
    """
    where = "eq5_spatial_attention"
    design = as_design(where, design)
    checks.require(where, "design", design.has_spatial, "one with a spatial branch", "spatial_input='none'")
    checks.nchw(where, "U", U)
    checks.nchw(where, "X_l", X_l)
    checks.same_shape(where, "U", U, "X_l", X_l)
    checks.keys(where, params, ["spatial.conv.weight", *checks.bn_keys("spatial.bn")])
    W_prime, k = params["spatial.conv.weight"], design.kernel_size  # W': k x k over U (+) X_l's channels
    c_in = design.spatial_in_channels(U.shape[1])
    checks.shape(where, "params['spatial.conv.weight']", W_prime, (1, c_in, k, k), "(1, C_in, k, k)")
    if design.spatial_input == "residual":
        x = U
    elif design.merge == "concat":
        x = np.concatenate([U, X_l], axis=1)
    else:
        x = U + X_l
    return conv_bn(x, params, "spatial.conv", "spatial.bn", padding=design.kernel_size // 2)


def eq1_fuse(M_c: np.ndarray, M_s: np.ndarray) -> np.ndarray:
    """Eq. 1: M_3D = M_c^r (+) M_s^{r+s}, element-wise sum broadcast along the missing axes.

    M_c: (N, C, 1, 1) is copied over the H x W positions, M_s: (N, 1, H, W) over the C channels:
    M_3D[n, c, h, w] = M_c[n, c] + M_s[n, h, w], shape (N, C, H, W).
    """
    checks.shape("eq1_fuse", "M_c", M_c, (None, None, 1, 1), "(N, C, 1, 1)")
    checks.shape("eq1_fuse", "M_s", M_s, (M_c.shape[0], 1, None, None), "(N, 1, H, W)")
    return M_c + M_s


def eq6_feature_fusion(M_3D: np.ndarray, params: Params) -> np.ndarray:
    """Eq. 6 (inside the sigmoid): F_ex(M_3D, W_1, W_2, d) = W_2 delta(W_1 M_3D).

    W_1: 1x1 conv C -> C/d, W_2: 1x1 conv C/d -> C, delta = ReLU. With ``fex_norm`` each conv is a
    "convolution block" followed by batch norm (bn1, bn2); without, convs carry a bias.
    M_3D: (N, C, H, W) (or (N, C, 1, 1) in the parallel and SE designs) -> same shape.
    """
    where = "eq6_feature_fusion"
    checks.nchw(where, "M_3D", M_3D)
    checks.keys(where, params, ["fex.conv1.weight", "fex.conv2.weight"])
    C, W_1, W_2 = M_3D.shape[1], params["fex.conv1.weight"], params["fex.conv2.weight"]
    checks.shape(where, "params['fex.conv1.weight']", W_1, (None, C, 1, 1), "(C/d, C, 1, 1)")
    checks.shape(where, "params['fex.conv2.weight']", W_2, (C, W_1.shape[0], 1, 1), "(C, C/d, 1, 1)")
    # any fex.bn1.* entry means a BN there (conv_bn then asks for all four), none is silently skipped
    bn1 = "fex.bn1" if any(k.startswith("fex.bn1.") for k in params) else None
    bn2 = "fex.bn2" if any(k.startswith("fex.bn2.") for k in params) else None
    hidden = relu(conv_bn(M_3D, params, "fex.conv1", bn1))
    return conv_bn(hidden, params, "fex.conv2", bn2)


def eq2_soft_attention(M_3D: np.ndarray, params: Params) -> np.ndarray:
    """Eqs. 2 and 6: X_3D = sigma(F_ex(M_3D, W_1, W_2)), the 3D soft attention map in (0, 1).

    M_3D: (N, C, H, W) -> X_3D: (N, C, H, W).
    """
    return sigmoid(eq6_feature_fusion(M_3D, params))


def eq7_output(U: np.ndarray, X_3D: np.ndarray, X_l: np.ndarray) -> np.ndarray:
    """Eq. 7: X_{l+1} = U * X_3D + X_l (element-wise product, then the identity shortcut).

    A post-activation block (ResNet-18..152) applies ReLU after this sum, as ResNet does; the
    pre-activation ResNet-164 does not.
    """
    checks.nchw("eq7_output", "U", U)
    checks.shape("eq7_output", "X_3D", X_3D, U.shape, "(N, C, H, W)")
    checks.shape("eq7_output", "X_l", X_l, U.shape, "(N, C, H, W)")
    return U * X_3D + X_l


def param_names(design: str | AFF3DDesign) -> list[str]:
    """The parameter entries a design's attention needs: W' and its BN (eq. 5), W_1, W_2 (eq. 6)."""
    design = as_design("param_names", design)
    names = ["spatial.conv.weight", *checks.bn_keys("spatial.bn")] if design.has_spatial else []
    names += ["fex.conv1.weight", "fex.conv2.weight"]
    if design.fex_norm:
        return names + checks.bn_keys("fex.bn1") + checks.bn_keys("fex.bn2")
    return names + ["fex.conv1.bias", "fex.conv2.bias"]


def aff3d_gate(
    U: np.ndarray, X_l: np.ndarray, params: Params, design: str | AFF3DDesign = "aff3d", trace: dict | None = None
) -> np.ndarray:
    """The attention module alone: returns the gated residual U * X_3D (eq. 7 without "+ X_l").

    This is the interface every attention module of the project shares: ``(residual, shortcut)
    -> gated residual``. Pass a dict as ``trace`` to receive the intermediate maps by symbol.
    """
    where = "aff3d_gate"
    design = as_design(where, design)
    checks.nchw(where, "U", U)
    checks.nchw(where, "X_l", X_l)
    checks.same_shape(where, "residual U", U, "shortcut X_l", X_l)
    checks.keys(where, params, param_names(design))  # all missing names at once
    if not design.fex_norm:  # BN entries would be applied (eq6_feature_fusion) against the design
        checks.absent(where, params, "fex.bn", "design.fex_norm is False")
    if not design.has_spatial:  # spatial weights would be ignored
        checks.absent(where, params, "spatial.", "design.spatial_input is 'none'")
    checks.require(where, "trace", trace is None or isinstance(trace, dict), "a dict or None", type(trace).__name__)
    trace = {} if trace is None else trace
    M_c = eq4_channel_squeeze(U if design.channel_input == "residual" else U + X_l)
    trace["M_c"] = M_c
    if not design.has_spatial:  # SE: the channel vector alone goes through F_ex
        X_3D = eq2_soft_attention(M_c, params)
        trace["X_3D"] = X_3D
        return U * X_3D
    M_s = eq5_spatial_attention(U, X_l, params, design)
    trace["M_s"] = M_s
    if design.fusion == "parallel":
        a_c = eq2_soft_attention(M_c, params)  # channel gate, (N, C, 1, 1)
        a_s = sigmoid(M_s)  # spatial gate, (N, 1, H, W)
        trace["a_c"], trace["a_s"] = a_c, a_s
        return U * a_c + U * a_s if design.parallel_gate == "sum" else U * a_c * a_s
    M_3D = eq1_fuse(M_c, M_s)
    X_3D = eq2_soft_attention(M_3D, params)
    trace["M_3D"], trace["X_3D"] = M_3D, X_3D
    return U * X_3D
