"""Top-k error, the paper's metric: the share of images whose label is not among the k highest scores;
and which epochs of a run were measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .distributed import DistContext, all_reduce_sum


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """For each k, how many of the N rows have their target among the top k logits (a tensor, no sync).

    k larger than the number of classes counts every row as correct (top-5 of 3 classes is certain).
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, C) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices  # (N, k_max), best first
    hit = top.eq(targets[:, None])  # at most one True per row
    return torch.stack([hit[:, : min(k, k_max)].any(dim=1).sum() for k in ks])


class ErrorMeter:
    """Sums loss and top-1/top-5 hits over batches on the batches' device (no host sync per step);
    ``result()`` reduces over all processes."""

    def __init__(self):
        self.sums: torch.Tensor | None = None  # loss sum, top-1 hits, top-5 hits, count

    def update(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        n = targets.shape[0]
        hits = topk_hits(logits.detach(), targets, (1, 5)).to(torch.float64)
        row = torch.cat([loss.detach().to(torch.float64).reshape(1) * n, hits, hits.new_tensor([n])])
        self.sums = row if self.sums is None else self.sums + row

    def result(self, ctx: DistContext | None = None) -> dict[str, float]:
        sums = torch.zeros(4, dtype=torch.float64) if self.sums is None else self.sums
        if ctx is not None:
            sums = all_reduce_sum(sums, ctx)
        loss_sum, top1, top5, count = sums.tolist()
        if count == 0:
            raise ValueError("no samples were measured (an empty data set or shard)")
        return {
            "loss": loss_sum / count,
            "top1_err": 100.0 * (1 - top1 / count),
            "top5_err": 100.0 * (1 - top5 / count),
            "count": int(count),
        }


def validated(history: Sequence[Mapping[str, float]]) -> list[Mapping[str, float]]:
    """The rows of a run's per-epoch history that were measured on the validation set (``eval_every``)."""
    return [row for row in history if "val_top1_err" in row]
