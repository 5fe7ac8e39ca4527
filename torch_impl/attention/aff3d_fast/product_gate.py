"""The product form's gate: F_ex's second convolution, the sigmoid, eq. 7 and the block's ReLU, one pass.

    out = act( U * sigma(W_2' h + b_2') [+ X_l] ),     U = R * scale + shift (or U = R)

where ``h`` (N, C/d, H, W) is F_ex's hidden map after ReLU, ``W_2'`` (C, C/d) and ``b_2'`` (C) are
F_ex's second convolution with its batch norm folded in (``algebra.fold_bn``), ``act`` is the
block's ReLU or nothing, and ``scale``/``shift`` (C) optionally apply the block's last batch norm on
the fly (``algebra.affine``). Used by the route ``folded`` (inference).
"""

from __future__ import annotations

import torch

from .algebra import affine


def _logits(hid: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor | None) -> torch.Tensor:
    """z = W_2' h + b_2', one 1x1 convolution as a batched matrix product: (N, C, H*W).

    ``b2=None``: the bias is already inside the product (a row of ones appended to h and b_2' appended
    to W_2' as a column); that saves a full-size copy of the broadcast bias, which on CPU cost as much
    as the product itself at ResNet-50's first stage.
    """
    N, Cd = hid.shape[:2]
    if b2 is None:
        return torch.matmul(W2, hid.reshape(N, Cd, -1))
    return torch.baddbmm(b2[None, :, None], W2.expand(N, -1, -1), hid.reshape(N, Cd, -1))


def _logits_owned(hid: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor | None, H: int, W: int) -> torch.Tensor:
    """``_logits`` (no autograd) written into a fresh (N, C, H, W) tensor that owns its memory: the
    output built in it is then no view, so a caller may add to it in place (``out += identity``, as
    torchvision's and detectron2's blocks do), also when an autograd Function returns it."""
    N, Cd = hid.shape[:2]
    z = torch.empty((N, W2.shape[0], H, W), dtype=W2.dtype, device=hid.device)
    flat = z.view(N, W2.shape[0], H * W)
    if b2 is None:
        torch.matmul(W2, hid.reshape(N, Cd, -1), out=flat)
    else:
        torch.baddbmm(b2[None, :, None], W2.expand(N, -1, -1), hid.reshape(N, Cd, -1), out=flat)
    return z


def gate_forward(R, X, hid, W2, b2, scale=None, shift=None, add=True, relu=True) -> torch.Tensor:
    """out = act(U * sigma(W_2' h + b_2') [+ X_l]) (see the module docstring), no full-size copy without autograd."""
    N, C, H, W = R.shape
    U = affine(R, scale, shift)
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (hid, W2, b2, U, X) if t is not None)
    z = _logits(hid, W2, b2) if tracked else _logits_owned(hid, W2, b2, H, W)
    if tracked or U.dtype != z.dtype or X.dtype != z.dtype:
        G = torch.sigmoid(z).view(N, C, H, W)
        out = torch.addcmul(X, U, G) if add else U * G
    else:  # no autograd: every step in the logits' own buffer, no further full-size allocation
        G = z.sigmoid_()
        out = torch.addcmul(X, U, G, out=G) if add else G.mul_(U)
    if relu:
        out = out.relu_()
    return out.to(R.dtype)
