"""Pure-NumPy reference of the 3D-AFF attention (Liu et al. 2022), equations 1-7 and the blocks.

No PyTorch here, ever: this package *defines* the math the ``torch_impl`` package is tested against.

    eq. 1  M_3D = M_c (+) M_s              aff3d.eq1_fuse
    eq. 2  X_3D = sigma(F_ex(M_3D))        aff3d.eq2_soft_attention
    eq. 3  U = F_tr(X_l)                   aff3d.eq3_transform
    eq. 4  M_c^r = F_sq(U)                 aff3d.eq4_channel_squeeze
    eq. 5  M_s^{r+s} = F_conv(U (+) X_l)   aff3d.eq5_spatial_attention
    eq. 6  F_ex = W_2 delta(W_1 M_3D)      aff3d.eq6_feature_fusion
    eq. 7  X_{l+1} = U * X_3D + X_l        aff3d.eq7_output
"""

from .aff3d import (
    aff3d_gate,
    eq1_fuse,
    eq2_soft_attention,
    eq3_transform,
    eq4_channel_squeeze,
    eq5_spatial_attention,
    eq6_feature_fusion,
    eq7_output,
)
from .blocks import basic_block, bottleneck, preact_bottleneck
from .designs import DESIGNS, AFF3DDesign, resolve_design
from .network import NetworkSpec, infer_spec, resnet_forward

__all__ = [
    "AFF3DDesign",
    "DESIGNS",
    "resolve_design",
    "aff3d_gate",
    "eq1_fuse",
    "eq2_soft_attention",
    "eq3_transform",
    "eq4_channel_squeeze",
    "eq5_spatial_attention",
    "eq6_feature_fusion",
    "eq7_output",
    "basic_block",
    "bottleneck",
    "preact_bottleneck",
    "NetworkSpec",
    "infer_spec",
    "resnet_forward",
]
