"""Every 3D-AFF design the paper evaluates, as named switch settings.

This file is the single place where design names are defined; ``torch_impl`` imports it, so the
NumPy reference and the PyTorch module can never disagree about what a name means.

The switches (section 3 and the ablations of section 4.2):

``channel_input``
    ``"residual"``: M_c^r = F_sq(U) (eq. 4, the final design).
    ``"residual+skip"``: M_c^{r+s} = F_sq(U + X_l) (Tables 1 and 2, last row). Summation, not
    concatenation, because the paper lists the same parameter count as M_c^r.
``spatial_input``
    ``"residual+skip"``: M_s^{r+s} = F_conv(U (+) X_l, W') (eq. 5, the final design).
    ``"residual"``: M_s^r = F_conv(U, W') (Table 1, third row).
    ``"none"``: no spatial branch; with ``fex_norm=False`` the module is exactly SE (Hu et al.).
``merge``
    How U and X_l meet before F_conv when ``spatial_input="residual+skip"``.
    ``"concat"``: [U, X_l] along channels, a 2C-channel input (section 4.2, "Concatenation or
    summation": the paper's final choice; it reproduces Tables 1 and 3 parameter counts).
    ``"sum"``: U + X_l, a C-channel input (eq. 5 as printed, Fig. 2(b)).
``fusion``
    ``"fex"``: M_3D = M_c (+) M_s, then X_3D = sigma(F_ex(M_3D)) (eqs. 1, 2, 6; Fig. 2(a)/(b)).
    ``"parallel"``: Fig. 2(c)/(d), missing from the text. Our reading of "two parallel fusion
    architectures, which performed the multiplication operation to the residual branch
    respective[ly]": no fusion of M_c and M_s; the channel gate sigma(F_ex(M_c)) and the spatial
    gate sigma(M_s) each multiply U, and the two refined maps are combined by ``parallel_gate``.
    Fig. 2(c) and 2(d) differ, in our reading, in ``merge`` (summation vs concatenation of U and
    X_l in the spatial branch): section 4.2 says the two parallel options "compared two different
    fusing methods: element-wise summation and concatenation", the same pair as Fig. 2(a)/(b).
``parallel_gate``
    ``"sum"`` (default): U * a_c + U * a_s. ``"product"`` (the other reading): U * a_c * a_s.
``kernel_size``
    k of the spatial k x k convolution (odd; Tables 3 and 4 try 1, 3, 5; the paper picks 3).
``reduction``
    d, the bottleneck ratio of F_ex: C -> C/d -> C (16 on ImageNet, 4 on CIFAR-100).
``fex_norm``
    Whether each 1x1 convolution of F_ex is a "convolution block" with batch norm (and no bias).
    True reproduces the paper's parameter counts (Tables 1, 3, 6: +2(C + C/d) per block);
    False gives plain convolutions with bias, as in SE.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from . import checks

CHANNEL_INPUTS = ("residual", "residual+skip")
SPATIAL_INPUTS = ("residual+skip", "residual", "none")
MERGES = ("concat", "sum")
FUSIONS = ("fex", "parallel")
PARALLEL_GATES = ("sum", "product")


@dataclass(frozen=True)
class AFF3DDesign:
    """One point in the paper's design space. Defaults are the final design (Fig. 1)."""

    channel_input: str = "residual"
    spatial_input: str = "residual+skip"
    merge: str = "concat"
    fusion: str = "fex"
    parallel_gate: str = "sum"
    kernel_size: int = 3
    reduction: int = 16
    fex_norm: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (
            ("channel_input", CHANNEL_INPUTS),
            ("spatial_input", SPATIAL_INPUTS),
            ("merge", MERGES),
            ("fusion", FUSIONS),
            ("parallel_gate", PARALLEL_GATES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"3D-AFF {name}: expected one of {list(allowed)}, got {value!r}")
        k = self.kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"3D-AFF kernel_size: expected a positive odd integer (1, 3, 5, ...), got {k!r}")
        d = self.reduction
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"3D-AFF reduction: expected a positive integer d, got {d!r}")
        if self.fusion == "parallel" and self.spatial_input == "none":
            raise ValueError("3D-AFF fusion='parallel' needs a spatial branch, got spatial_input='none'")

    @property
    def has_spatial(self) -> bool:
        return self.spatial_input != "none"

    def spatial_in_channels(self, channels: int) -> int:
        """Channels entering F_conv: 2C for the concatenation [U, X_l], else C."""
        checks.integer("spatial_in_channels", "channels", channels, 1)
        if self.spatial_input == "residual+skip" and self.merge == "concat":
            return 2 * channels
        return channels

    def hidden_channels(self, channels: int) -> int:
        """C/d, the width of F_ex's bottleneck; d may not exceed C."""
        checks.integer("hidden_channels", "channels", channels, 1)
        if self.reduction > channels:
            raise ValueError(
                f"3D-AFF reduction d={self.reduction} is larger than the channel count C={channels}: "
                f"expected d <= C so that F_ex keeps at least one channel"
            )
        return channels // self.reduction


# Named designs: the rows of Tables 1, 2 and 5.
DESIGNS: dict[str, dict] = {
    # Fig. 1 / Fig. 2(a): the final 3D-AFF module, ResNet + M_c^r + M_s^{r+s}.
    "aff3d": {},
    # Fig. 2(b): U and X_l summed, not concatenated, before F_conv (eq. 5 as printed).
    "aff3d_sum": {"merge": "sum"},
    # Table 1/2 rows, in the paper's notation.
    "mc_r": {"spatial_input": "none"},
    "mc_r+ms_r": {"spatial_input": "residual"},
    "mc_r+ms_rs": {},
    "mc_rs+ms_rs": {"channel_input": "residual+skip"},
    # Fig. 2(c)/(d): parallel fusion with summation / concatenation of U and X_l.
    "parallel_sum": {"fusion": "parallel", "merge": "sum"},
    "parallel_concat": {"fusion": "parallel", "merge": "concat"},
}


def resolve_design(design: str | AFF3DDesign = "aff3d", **overrides) -> AFF3DDesign:
    """A design by name (see ``DESIGNS``), with any switch overridden by keyword.

    >>> resolve_design("aff3d_sum", kernel_size=5).merge
    'sum'
    """
    if isinstance(design, AFF3DDesign):
        base = design
    elif isinstance(design, str) and design in DESIGNS:
        base = AFF3DDesign(**DESIGNS[design])
    else:
        raise ValueError(f"unknown 3D-AFF design {design!r}: expected one of {sorted(DESIGNS)}")
    known = {f.name for f in fields(AFF3DDesign)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown 3D-AFF switch(es) {unknown}: expected some of {sorted(known)}")
    return replace(base, **overrides)


def as_design(where: str, value) -> AFF3DDesign:
    """A design by name or as an ``AFF3DDesign``; anything else is a ValueError naming ``where``."""
    if isinstance(value, AFF3DDesign):
        return value
    if isinstance(value, str):
        return resolve_design(value)
    raise ValueError(f"{where}: design: expected a design name or an AFF3DDesign, got {type(value).__name__}")
