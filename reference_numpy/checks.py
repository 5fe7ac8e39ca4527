"""Input checks for every public function of the reference: wrong input fails loudly, by name.

Left to itself, NumPy answers wrong input with something that looks like a result: an integer
array keeps its dtype through ``sigmoid`` (all zeros), a kernel larger than the map slices to an
empty array, a bias of the wrong length broadcasts or fails deep inside an expression. Here each
function checks its arguments first and raises ``ValueError`` in one format:

    "<function>: <argument>: expected <what>, got <what came>"

Every helper takes ``where`` (the calling function's name) and the argument's name first, and
returns nothing: a check line never changes a value, so it cannot change a result.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import numpy as np


def floating(where: str, name: str, x, ndim: int | None = None, layout: str = "") -> None:
    """x is a NumPy array of a floating-point dtype (integers and bools are refused, never cast)."""
    if not isinstance(x, (np.ndarray, np.generic)):
        raise ValueError(f"{where}: {name}: expected a NumPy floating-point array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: {name}: expected a floating-point array, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        layout = f" {layout}" if layout else ""
        raise ValueError(f"{where}: {name}: expected a {ndim}-D array{layout}, got shape {x.shape}")


def nchw(where: str, name: str, x) -> None:
    """A batch of feature maps: floating point, 4-D (N, C, H, W)."""
    floating(where, name, x, 4, "(N, C, H, W)")


def shape(where: str, name: str, x, expected: tuple, layout: str) -> None:
    """x is floating point of shape ``expected``; None there means any size (its symbol in ``layout``)."""
    floating(where, name, x)
    if x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape)):
        return
    symbols = layout.strip("()").split(", ")
    wanted = "(" + ", ".join(sym if e is None else str(e) for e, sym in zip(expected, symbols)) + ")"
    wanted = "" if wanted == layout else f" = {wanted}"
    raise ValueError(f"{where}: {name}: expected shape {layout}{wanted}, got {x.shape}")


def require(where: str, name: str, ok: bool, expected: str, got) -> None:
    """Any other condition, in the same format."""
    if not ok:
        raise ValueError(f"{where}: {name}: expected {expected}, got {got}")


def same_shape(where: str, a_name: str, a, b_name: str, b, hint: str = "") -> None:
    """Two maps that meet element by element (no silent broadcast)."""
    if a.shape != b.shape:
        raise ValueError(f"{where}: {a_name} and {b_name} must have one shape, got {a.shape} and {b.shape}{hint}")


def vector(where: str, name: str, v, n: int, of: str) -> None:
    """A per-channel parameter (bias, BN gamma/beta/mean/var): floating point, 1-D, length n."""
    floating(where, name, v)
    if v.shape != (n,):
        raise ValueError(f"{where}: {name}: expected a 1-D array of length {of}={n}, got shape {v.shape}")


def integer(where: str, name: str, v, minimum: int, maximum: int | None = None, why: str = "") -> None:
    """stride, padding, kernel_size: a Python or NumPy integer (not a bool) in [minimum, maximum]."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{where}: {name}: expected an integer >= {minimum}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{where}: {name}: expected an integer <= {maximum} ({why}), got {v!r}")


def in_channels(where: str, name: str, weight, x) -> None:
    """A convolution weight (C_out, C_in, kh, kw) whose C_in is the input's channel count."""
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"{where}: {name} expects {weight.shape[1]} input channels, input has {x.shape[1]}: "
            f"expected shape (C_out, C_in={x.shape[1]}, kh, kw), got {weight.shape}"
        )


def number(where: str, name: str, v, minimum: float) -> None:
    """eps: a real number >= minimum."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) or not v >= minimum:
        raise ValueError(f"{where}: {name}: expected a number >= {minimum}, got {v!r}")


def kernel_fits(where: str, name: str, kernel: tuple[int, int], x, padding: int) -> None:
    """A window must fit the padded map at least once, or the output would be empty."""
    h, w = x.shape[2] + 2 * padding, x.shape[3] + 2 * padding
    if min(kernel) < 1 or kernel[0] > h or kernel[1] > w:
        raise ValueError(
            f"{where}: {name}: expected a kernel of at least 1x1 and no larger than the padded map {h}x{w} "
            f"(H={x.shape[2]}, W={x.shape[3]}, padding={padding}), got {kernel[0]}x{kernel[1]}"
        )


def mapping(where: str, params) -> None:
    """params is a {name: ndarray} mapping (a state_dict converted by ``torch_impl.numpy_bridge``)."""
    if not isinstance(params, Mapping):
        raise ValueError(f"{where}: params: expected a mapping {{name: ndarray}}, got {type(params).__name__}")


def keys(where: str, params: Mapping, names: Iterable[str]) -> None:
    """Every named parameter is present; all missing names are listed at once."""
    mapping(where, params)
    missing = [n for n in names if n not in params]
    if missing:
        has = f"it has {len(params)} entries, e.g. {sorted(params)[:4]}" if params else "it is empty"
        raise ValueError(f"{where}: params: missing keys {missing} ({has})")


def absent(where: str, params: Mapping, prefix: str, why: str) -> None:
    """No parameter under ``prefix``: such weights would be used (or ignored) against the design."""
    found = sorted(k for k in params if k.startswith(prefix))
    if found:
        raise ValueError(f"{where}: params: expected no '{prefix}*' entries ({why}), got {found[:4]}")


def bn_keys(prefix: str) -> list[str]:
    """The four entries of an inference batch norm (gamma, beta, running mean and variance)."""
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]


@contextmanager
def naming(label: str) -> Iterator[None]:
    """Adds which parameters were at fault to a ValueError raised inside (e.g. by conv2d)."""
    try:
        yield
    except ValueError as e:
        raise ValueError(f"{e} [{label}]") from None
