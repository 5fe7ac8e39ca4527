"""Block diagrams of the 3D-AFF module (the paper's Fig. 1 and Fig. 2(a)-(d)), drawn from a design.

The paper's figures are missing from its text extraction, so notebook 1 redraws them with matplotlib
from the same ``AFF3DDesign`` switches that ``reference_numpy`` computes with: the boxes, the merge
operator (concatenation or summation of U and X_l) and the tensor shapes on the arrows all follow
from the design, and ``symbolic_shapes`` gives the shapes as formulas in C, H, W (and d) so that the
notebook can check them against the arrays the reference actually produces.

Layout, left to right: X_l, the residual branch F_tr, U; the channel branch on top (F_sq -> M_c),
the spatial branch below (U (+) X_l -> F_conv -> M_s); the fusion; the gate on U; the shortcut
(grey, the identity mapping, as in the paper's Fig. 2) along the bottom to the final addition.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch

from reference_numpy import AFF3DDesign, resolve_design

GREY = "0.55"
COLOURS = {"op": "white", "conv": "#cfe2f3", "pool": "#d9ead3", "map": "#fff2cc", "tensor": "#eeeeee", "act": "#f4cccc"}


def symbolic_shapes(design: AFF3DDesign) -> dict[str, tuple[str, str, str]]:
    """The shape of every tensor in the module as (channels, height, width) formulas in C, H, W, d.

    Keys are the reference's trace names (``M_c``, ``M_s``, ``M_3D``, ``X_3D``, ``a_c``, ``a_s``) plus
    ``U``, ``X_l``, ``F_conv in`` (what enters the k x k convolution) and ``F_ex hidden``.
    """
    full = ("C", "H", "W")
    shapes = {"X_l": full, "U": full, "M_c": ("C", "1", "1")}
    if design.has_spatial:
        c_in = "2C" if design.spatial_in_channels(2) == 4 else "C"  # [U, X_l] doubles the channels
        shapes["F_conv in"] = (c_in, "H", "W")
        shapes["M_s"] = ("1", "H", "W")
    if design.fusion == "parallel":
        shapes |= {"F_ex hidden": ("C/d", "1", "1"), "a_c": ("C", "1", "1"), "a_s": ("1", "H", "W")}
    else:
        if design.has_spatial:  # the broadcast sum of eq. 1 is a full map; without M_s it stays C x 1 x 1
            shapes |= {"M_3D": full, "F_ex hidden": ("C/d", "H", "W"), "X_3D": full}
        else:
            shapes |= {"M_3D": ("C", "1", "1"), "F_ex hidden": ("C/d", "1", "1"), "X_3D": ("C", "1", "1")}
    return shapes


def evaluate_shape(shape: tuple[str, ...], C: int, H: int, W: int, d: int) -> tuple[int, ...]:
    """A symbolic shape at numbers, e.g. ("2C", "H", "W") at C = 8 -> (16, H, W)."""
    values = {"C": C, "2C": 2 * C, "C/d": C // d, "H": H, "W": W, "1": 1}
    return tuple(values[s] for s in shape)


def shape_text(shape: tuple[str, ...]) -> str:
    return " x ".join(shape)


@dataclass
class _Node:
    x: float
    y: float
    w: float  # half width (or radius for operators)
    h: float  # half height
    round: bool = False


class _Canvas:
    """Boxes, operator circles and right-angled arrows on one matplotlib axis."""

    def __init__(self, ax, fontsize: float):
        self.ax, self.fs, self.nodes = ax, fontsize, {}

    def box(self, key, x, y, text, kind="conv", w=1.0, h=0.55):
        self.ax.add_patch(FancyBboxPatch((x - w, y - h), 2 * w, 2 * h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                         fc=COLOURS[kind], ec="0.2", lw=1.0, zorder=3))
        self.ax.text(x, y, text, ha="center", va="center", fontsize=self.fs, zorder=4)
        self.nodes[key] = _Node(x, y, w, h)

    def op(self, key, x, y, symbol, r=0.32):
        self.ax.add_patch(Circle((x, y), r, fc=COLOURS["op"], ec="0.2", lw=1.0, zorder=3))
        self.ax.text(x, y, symbol, ha="center", va="center", fontsize=self.fs * 1.25, zorder=4)
        self.nodes[key] = _Node(x, y, r, r, round=True)

    def _clip(self, node: _Node, toward):
        """Where the segment from the node's centre toward a point leaves the node."""
        dx, dy = toward[0] - node.x, toward[1] - node.y
        if node.round:
            n = (dx * dx + dy * dy) ** 0.5 or 1.0
            return node.x + node.w * dx / n, node.y + node.h * dy / n
        t = min(node.w / abs(dx) if dx else float("inf"), node.h / abs(dy) if dy else float("inf"))
        return node.x + t * dx, node.y + t * dy

    def arrow(self, a, b, via=(), label=None, label_at=0, colour="0.15", label_side="above"):
        """An arrow from node a to node b through the corner points ``via``; ``label`` on segment ``label_at``."""
        na, nb = self.nodes[a], self.nodes[b]
        pts = [(na.x, na.y), *via, (nb.x, nb.y)]
        pts[0] = self._clip(na, pts[1])
        pts[-1] = self._clip(nb, pts[-2])
        xs, ys = zip(*pts)
        self.ax.plot(xs[:-1], ys[:-1], color=colour, lw=1.2, zorder=2, solid_capstyle="butt")
        self.ax.annotate("", xy=pts[-1], xytext=pts[-2], zorder=2,
                         arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.2, shrinkA=0, shrinkB=0))
        if label:
            (x0, y0), (x1, y1) = pts[label_at], pts[label_at + 1]
            off = {"above": (0, 0.22), "below": (0, -0.22), "left": (-0.12, 0), "right": (0.12, 0)}[label_side]
            ha = {"left": "right", "right": "left"}.get(label_side, "center")
            va = {"above": "bottom", "below": "top"}.get(label_side, "center")
            self.ax.text((x0 + x1) / 2 + off[0], (y0 + y1) / 2 + off[1], label, ha=ha, va=va,
                         fontsize=self.fs * 0.85, color="0.25" if colour != GREY else GREY, style="italic", zorder=4)


def draw_module(ax, design: str | AFF3DDesign = "aff3d", title: str | None = None, detailed: bool = True,
                fontsize: float = 8.0) -> dict[str, tuple[str, str, str]]:
    """Draw the residual block with the 3D-AFF module of ``design`` on ``ax``; returns its symbolic shapes.

    Every tensor is a grey or yellow box holding its symbol and its shape; operators are circles
    (c = concatenation along channels, + = element-wise sum with broadcasting, x = element-wise
    product). ``detailed`` writes out the layers inside F_conv and F_ex with the actual k (Fig. 1);
    otherwise k and d stay symbols (the panels of Fig. 2).
    """
    d = resolve_design(design) if isinstance(design, str) else design
    s = symbolic_shapes(d)
    c = _Canvas(ax, fontsize)
    main, top, bottom, bypass, skip = 5.4, 8.2, 2.6, 9.9, 0.6

    def tensor(key, x, y, symbol, shape_key, kind="tensor"):
        c.box(key, x, y, f"{symbol}\n{shape_text(s[shape_key])}", kind, w=0.78, h=0.5)

    k = f"{d.kernel_size}x{d.kernel_size}" if detailed else "k x k"
    # input, residual branch (eq. 3), U
    tensor("X_l", 1.0, main, "$X_l$", "X_l")
    c.box("F_tr", 3.0, main, "$F_{tr}$\nresidual\nconvs", "conv", w=0.75, h=0.6)
    tensor("U", 5.0, main, "$U$", "U")
    c.arrow("X_l", "F_tr")
    c.arrow("F_tr", "U")

    # channel branch (eq. 4): M_c = F_sq(U), or F_sq(U + X_l) for M_c^{r+s}
    if d.channel_input == "residual+skip":
        c.op("c_merge", 6.3, top, "+")
        c.arrow("U", "c_merge", via=[(5.0, top)])
        c.arrow("X_l", "c_merge", via=[(1.0, top + 1.0), (6.3, top + 1.0)], colour=GREY)
        c.box("F_sq", 7.9, top, "$F_{sq}$\navg pool", "pool", w=0.8)
        c.arrow("c_merge", "F_sq")
        m_c = "$M_c^{r+s}$"
    else:
        c.box("F_sq", 7.4, top, "$F_{sq}$\nglobal\navg pool", "pool", w=0.9, h=0.6)
        c.arrow("U", "F_sq", via=[(5.0, top)])
        m_c = "$M_c^r$"
    tensor("M_c", 9.9, top, m_c, "M_c", "map")
    c.arrow("F_sq", "M_c")

    # spatial branch (eq. 5): M_s = F_conv(U (+) X_l), or F_conv(U) for M_s^r
    if d.has_spatial:
        c_in = s["F_conv in"][0]
        c.box("F_conv", 9.6, bottom, f"$F_{{conv}}$\n{k} conv\n{c_in} -> 1, BN", "conv", w=0.95, h=0.62)
        if d.spatial_input == "residual+skip":
            c.op("merge", 7.0, bottom, "c" if d.merge == "concat" else "+")
            c.arrow("U", "merge", via=[(5.0, bottom)])
            c.arrow("X_l", "merge", via=[(1.0, skip), (7.0, skip)], colour=GREY)
            merged = "[$U$, $X_l$]" if d.merge == "concat" else "$U + X_l$"
            ax.text(6.75, bottom - 0.4, f"{merged}\n{shape_text(s['F_conv in'])}", ha="right", va="top",
                    fontsize=fontsize * 0.85, color="0.25")
            c.arrow("merge", "F_conv")
            m_s = "$M_s^{r+s}$"
        else:
            c.arrow("U", "F_conv", via=[(5.0, bottom)])
            m_s = "$M_s^r$"
        tensor("M_s", 12.2, bottom, m_s, "M_s", "map")
        c.arrow("F_conv", "M_s")

    fex = "$F_{ex}$: C -> C/d -> C\n1x1 conv, BN, ReLU\n1x1 conv, BN" if detailed else "$F_{ex}$\nC -> C/d -> C"
    res_x = 21.7
    if d.fusion == "parallel":
        # no fusion: the channel gate sigma(F_ex(M_c)) and the spatial gate sigma(M_s) each multiply U,
        # and the two products are added
        size = dict(w=1.35, h=0.75) if detailed else dict(w=1.0, h=0.5)
        c.box("F_ex", 13.0 if detailed else 12.8, top, fex, "conv", **size)
        c.arrow("M_c", "F_ex")
        c.box("sig_c", 15.3, top, "$\\sigma$", "act", w=0.3, h=0.3)
        c.arrow("F_ex", "sig_c")
        c.box("sig_s", 15.3, bottom, "$\\sigma$", "act", w=0.3, h=0.3)
        c.arrow("M_s", "sig_s")
        tensor("a_c", 16.8, top, "$\\sigma(F_{ex}(M_c))$", "a_c", "map")
        tensor("a_s", 16.8, bottom, "$\\sigma(M_s)$", "a_s", "map")
        c.arrow("sig_c", "a_c")
        c.arrow("sig_s", "a_s")
        c.op("mul_c", 18.5, top, "x")
        c.op("mul_s", 18.5, bottom, "x")
        c.arrow("a_c", "mul_c")
        c.arrow("a_s", "mul_s")
        c.arrow("U", "mul_c", via=[(5.0, bypass), (18.5, bypass)])
        c.arrow("U", "mul_s", via=[(5.0, 4.1), (18.5, 4.1)])
        c.op("add", 19.9, main, "+")
        c.arrow("mul_c", "add", via=[(19.9, top)])
        c.arrow("mul_s", "add", via=[(19.9, bottom)])
        gated = "add"
    else:
        # eq. 1: M_3D = M_c (+) M_s, broadcast; eqs. 6 and 2: X_3D = sigma(F_ex(M_3D)); eq. 7: U * X_3D
        c.op("fuse", 12.2, main, "+")
        c.arrow("M_c", "fuse", via=[(12.2, top)])
        if d.has_spatial:
            c.arrow("M_s", "fuse")
        tensor("M_3D", 13.7, main, "$M_{3D}$", "M_3D")
        c.arrow("fuse", "M_3D")
        c.box("F_ex", 16.45, main, fex, "conv", w=1.35 if detailed else 1.0, h=0.75 if detailed else 0.5)
        c.arrow("M_3D", "F_ex")
        c.box("sig", 18.4, main - 1.5, "$\\sigma$", "act", w=0.3, h=0.3)
        c.arrow("F_ex", "sig", via=[(16.45, main - 1.5)])
        tensor("X_3D", 19.9, main - 1.5, "$X_{3D}$", "X_3D", "map")
        c.arrow("sig", "X_3D")
        c.op("mul", 19.9, main, "x")
        c.arrow("X_3D", "mul")
        c.arrow("U", "mul", via=[(5.0, bypass), (19.9, bypass)])
        gated = "mul"

    # eq. 7: X_{l+1} = (gated U) + X_l along the grey identity mapping, then ReLU
    c.op("res", res_x, main, "+")
    c.arrow(gated, "res")
    c.arrow("X_l", "res", via=[(1.0, skip), (res_x, skip)], colour=GREY)
    ax.text((1.0 + res_x) / 2, skip - 0.15, "identity mapping", ha="center", va="top", fontsize=fontsize * 0.85,
            color=GREY, style="italic")
    tensor("out", res_x + 1.5, main, "$X_{l+1}$", "X_l")
    c.arrow("res", "out")
    ax.text(res_x + 1.5, main - 0.6, "after ReLU", ha="center", va="top", fontsize=fontsize * 0.8, color="0.3")

    ax.set_xlim(0.1, res_x + 2.4)
    ax.set_ylim(-0.2, bypass + (1.0 if title else 0.3))
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.text(0.2, bypass + 0.6, title, ha="left", va="center", fontsize=fontsize * 1.2, weight="bold")
    return s


def draw_figure1(design: str | AFF3DDesign = "aff3d"):
    """The paper's Fig. 1: the 3D-AFF residual block in its final design, with every tensor shape."""
    fig, ax = plt.subplots(figsize=(16, 7.2))
    shapes = draw_module(ax, design, "Fig. 1  3D-AFF residual block (final design)", detailed=True, fontsize=9)
    return fig, shapes


FIG2_PANELS = {
    "(a) concatenation, Table 5 row 1 (= Fig. 1)": "aff3d",
    "(b) summation": "aff3d_sum",
    "(c) parallel fusion, summation": "parallel_sum",
    "(d) parallel fusion, concatenation": "parallel_concat",
}


def draw_figure2():
    """The paper's Fig. 2(a)-(d), the fusion variants of Table 5, one panel each."""
    fig, axes = plt.subplots(2, 2, figsize=(18, 8.6))
    shapes = {}
    for ax, (title, name) in zip(axes.flat, FIG2_PANELS.items()):
        shapes[name] = draw_module(ax, name, title, detailed=False, fontsize=7.5)
    fig.tight_layout()
    return fig, shapes
