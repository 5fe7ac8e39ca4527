"""3D-AFF: the Inner-Imaging 3D attentional feature fusion module (Liu et al. 2022), in PyTorch.

Same math, same switches and same parameter names as ``reference_numpy.aff3d``, which defines it;
tests hold the two equal to 1e-10 in float64. The module follows the project's attention interface:

    attn(residual=U, shortcut=X_l) -> U * X_3D        (the block adds X_l: eq. 7)

    M_c  = F_sq(U)                         (N, C, 1, 1)   eq. 4
    M_s  = BN(conv_kxk(U (+) X_l))         (N, 1, H, W)   eq. 5
    M_3D = M_c + M_s                       (N, C, H, W)   eq. 1
    X_3D = sigma(W_2 delta(W_1 M_3D))      (N, C, H, W)   eqs. 2, 6

Two implementations of the same function, chosen by ``impl``:

    "fast" (default)   ``aff3d_fast``: exact algebra that skips the concatenation and, at inference,
                       the first F_ex convolution over the C x H x W map, with BN folded; in CPU
                       training the equations with eq. 5's convolution split, or the table gate
                       (channels_last). Its table of routes says which route a call takes
                       (``aff3d_fast.ROUTES``, ``aff3d_fast.choose_route``).
    "straightforward"  ``forward_straightforward`` below: the equations written as they read.

Both match ``reference_numpy`` (the NumPy reference) to 1e-10 in float64 (tests/test_fast_path.py),
take the same inputs and raise the same errors (``validation.check_inputs``).

Under ``torch.fx`` symbolic tracing the module is traced through the straightforward path: the fast
path's dispatch reads devices, shapes and caches, which a symbolic trace does not have. The residual
blocks never trace it that way: they call ``gate_add_relu`` through a function that tracing records
as one call (``models.blocks.attention_tail``), so a traced network computes exactly what eager does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reference_numpy.designs import AFF3DDesign, resolve_design

from . import aff3d_fast
from .aff3d_fast.norms import norm_channels, uses_batch_stats
from .validation import check_batch_for_training, check_inputs, symbolic_tracing

IMPLS = ("fast", "straightforward")


class SpatialConv(nn.Module):
    """F_conv of eq. 5: a k x k convolution to one channel, then batch norm (weights W')."""

    def __init__(self, in_channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class FeatureFusion(nn.Module):
    """F_ex of eq. 6: 1x1 conv C -> C/d (W_1), ReLU (delta), 1x1 conv C/d -> C (W_2).

    With ``norm`` each conv is a conv-BN "convolution block" (the paper's parameter counts);
    without, the convs carry biases, as SE's fully connected layers do.
    """

    def __init__(self, channels: int, hidden: int, norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(hidden) if norm else nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(hidden, channels, 1, bias=not norm)
        self.bn2 = nn.BatchNorm2d(channels) if norm else nn.Identity()

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(m)))))


class AFF3D(nn.Module):
    """3D-AFF attention for a residual block with ``channels`` output channels.

    Args:
        channels: C, the channels of U and X_l.
        design: a name from ``reference_numpy.designs.DESIGNS`` (default ``"aff3d"``, the paper's
            final design) or an ``AFF3DDesign``.
        impl: ``"fast"`` (default) or ``"straightforward"``, see the module docstring; an attribute,
            so ``module.impl = "straightforward"`` switches an existing module (checked when set).
        **switches: any design switch by keyword: ``reduction`` (d), ``kernel_size`` (k),
            ``channel_input``, ``spatial_input``, ``merge``, ``fusion``, ``parallel_gate``,
            ``fex_norm``.
    """

    def __init__(self, channels: int, design: str | AFF3DDesign = "aff3d", impl: str = "fast", **switches):
        super().__init__()
        self.impl = impl
        self._folded = None  # the inference folding, built on first use (aff3d_fast/inference.py)
        self.design = resolve_design(design, **switches)
        self.channels = channels
        spec = self.design
        self.spatial = SpatialConv(spec.spatial_in_channels(channels), spec.kernel_size) if spec.has_spatial else None
        self.fex = FeatureFusion(channels, spec.hidden_channels(channels), norm=spec.fex_norm)

    def extra_repr(self) -> str:
        design = self.design
        return (
            f"channels={self.channels}, d={design.reduction}, k={design.kernel_size}, channel={design.channel_input}, "
            f"spatial={design.spatial_input}, merge={design.merge}, fusion={design.fusion}, impl={self.impl}"
        )

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLS:
            raise ValueError(f"AFF3D impl: expected one of {list(IMPLS)}, got {value!r}")
        self._impl = value

    # The inference folding's cache is dropped by everything that changes what it folds.
    def clear_folded(self) -> None:
        """Drop the cached inference folding; needed only after editing weights in place in eval mode."""
        aff3d_fast.clear_folded(self)

    def train(self, mode: bool = True):
        self.clear_folded()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.clear_folded()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_folded()
        super()._load_from_state_dict(*args, **kwargs)

    def spatial_input(self, U: torch.Tensor, X_l: torch.Tensor) -> torch.Tensor:
        """U (+) X_l of eq. 5: [U, X_l] (N, 2C, H, W), U + X_l, or U alone."""
        design = self.design
        if design.spatial_input == "residual":
            return U
        return torch.cat([U, X_l], dim=1) if design.merge == "concat" else U + X_l

    @property
    def fuses_tail(self) -> bool:
        """What a residual block asks before handing its whole tail to ``gate_add_relu``: the fast
        path takes the block's norm, the sum and the ReLU into its own call (folded at inference)."""
        return self.impl == "fast"

    def _check(self, residual: torch.Tensor, shortcut: torch.Tensor, norm: nn.Module | None = None) -> None:
        """The input checks both implementations share (same inputs accepted, same ValueError)."""
        if symbolic_tracing():
            return  # no shapes to check on Proxies
        check_inputs("AFF3D", residual, shortcut, self.channels, self.fex.conv2.weight.dtype)
        if not (self.training or (norm is not None and norm.training)):
            return  # batch norm counts below: training only
        N, _, H, W = residual.shape
        per_pixel = [("the block's norm", norm)]
        if self.spatial is not None:
            per_pixel.append(("F_conv's BN (over M_s)", self.spatial.bn))
        fex_norms = [("F_ex's BN", self.fex.bn1), ("F_ex's BN", self.fex.bn2)]
        per_map = not self.design.has_spatial or self.design.fusion == "parallel"  # F_ex over M_c (N, C, 1, 1)
        counts = [(N * H * W, where, bn) for where, bn in per_pixel + ([] if per_map else fex_norms)]
        counts += [(N, where, bn) for where, bn in fex_norms if per_map]
        for count, where, bn in counts:
            if isinstance(bn, _BatchNorm) and uses_batch_stats(bn):
                check_batch_for_training("AFF3D", residual.shape, count, where)

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The gated residual U * X_3D (the block adds X_l: eq. 7)."""
        self._check(residual, shortcut)
        if self.impl == "fast" and not symbolic_tracing():  # the same function by exact algebra, one dispatch
            return aff3d_fast.fast_forward(self, residual, shortcut)
        return self.forward_straightforward(residual, shortcut)

    def gate_add_relu(
        self, residual: torch.Tensor, shortcut: torch.Tensor, relu: bool = True, norm: nn.Module | None = None
    ) -> torch.Tensor:
        """The block's tail in one call: relu(U * X_3D + X_l) (or without relu), U = norm(residual).

        Equal to ``relu(self(norm(residual), shortcut) + shortcut)``. Passing the block's last
        batch norm as ``norm`` (and its input as ``residual``) lets the fast path fold it into its
        gate at inference and into the table gate's one pass in channels_last training.
        """
        if norm is not None and norm_channels(norm) != self.channels:
            raise ValueError(f"AFF3D.gate_add_relu: norm has {norm_channels(norm)} channels, expected {self.channels}")
        self._check(residual, shortcut, norm)
        if self.impl == "fast" and not symbolic_tracing():
            return aff3d_fast.fast_forward(self, residual, shortcut, norm=norm, add=True, relu=relu)
        U = residual if norm is None else norm(residual)
        out = self.forward_straightforward(U, shortcut) + shortcut
        return torch.relu(out) if relu else out

    def forward_straightforward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """The straightforward path: eqs. 4, 5, 1, 6, 2 as written, then U * X_3D."""
        U, X_l = residual, shortcut
        design = self.design
        M_c = (U if design.channel_input == "residual" else U + X_l).mean(dim=(2, 3), keepdim=True)  # eq. 4
        if self.spatial is None:  # SE: the channel vector alone goes through F_ex
            return U * torch.sigmoid(self.fex(M_c))
        M_s = self.spatial(self.spatial_input(U, X_l))  # eq. 5
        if design.fusion == "parallel":  # Fig. 2(c)/(d): two gates, no F_ex over M_3D
            a_c = torch.sigmoid(self.fex(M_c))
            a_s = torch.sigmoid(M_s)
            return U * a_c + U * a_s if design.parallel_gate == "sum" else U * a_c * a_s
        M_3D = M_c + M_s  # eq. 1
        X_3D = torch.sigmoid(self.fex(M_3D))  # eqs. 2, 6
        return U * X_3D
