"""timm's model interface, shared by the ImageNet ResNet and the CIFAR pre-activation ResNet.

timm's training, feature-extraction and fine-tuning code calls these on any model; the networks here
provide them without importing timm (a dev extra), under the same names and meanings as timm's
own ``ResNet``:

    forward_features(x) / forward_head(x, pre_logits)    unpooled map / pooled (dropout) -> fc
    get_classifier(), reset_classifier(n, global_pool)     n = 0: no classifier (embeddings)
    num_features, head_hidden_size, num_classes, drop_rate
    feature_info                                           stem + stage outputs: num_chs, reduction, module
    forward_intermediates(x, indices, ...)                 those maps in one pass, and the final features
    prune_intermediate_layers(indices)                     drop what a feature extractor never uses
    set_grad_checkpointing(enable)                         recompute each block in backward (less memory)
    group_matcher(coarse)                                  parameter groups (layer-wise lr decay)

A network using the mixin defines ``stage_names`` (its residual stages, in order), ``forward_stem``
(returning the stem feature and the stem output), ``forward_norm`` (after the last stage) and
``prune_stem`` / ``prune_norm``, and calls ``init_contract`` in ``__init__``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..attention.validation import symbolic_tracing
from .head import create_head


def feature_take_indices(num_features: int, indices: int | list[int] | tuple[int, ...] | None = None):
    """timm's rule: None -> all, an int n -> the last n, a sequence -> those (negative from the end).

    Returns (absolute indices, largest index).
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"feature indices: last-n ({indices}) is out of range (1 to {num_features})")
        take = [num_features - indices + i for i in range(indices)]
    else:
        take = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} is out of range (0 to {num_features - 1})")
            take.append(idx)
        if not take:
            raise ValueError("feature indices: expected at least one index")
    return take, max(take)


def set_batch_norm(model: nn.Module, momentum: float | None = None, eps: float | None = None) -> None:
    """Every batch norm's ``momentum`` / ``eps`` (timm's ``bn_momentum`` / ``bn_eps``), None: unchanged."""
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            if momentum is not None:
                m.momentum = momentum
            if eps is not None:
                m.eps = eps


def _device_dtype(model: nn.Module) -> dict:
    p = next(model.parameters(), None)
    return {} if p is None else {"device": p.device, "dtype": p.dtype}


class TimmContract:
    """Mixin for an ``nn.Module`` with residual stages ``stage_names`` and a pooled linear head."""

    stage_names: tuple[str, ...] = ()

    def init_contract(
        self, num_features: int, num_classes: int, global_pool: str, drop_rate: float, feature_info: list[dict]
    ) -> None:
        """Head (``global_pool``, ``fc``) and the attributes timm reads; call where torchvision built
        ``avgpool`` and ``fc`` (module order decides the seeded initialisation)."""
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate: expected 0 <= rate < 1, got {drop_rate!r}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.feature_info = feature_info
        self.global_pool, self.fc = create_head(num_features, num_classes, global_pool)
        self.head_hidden_size = num_features * self.global_pool.feat_mult()

    # -- head ---------------------------------------------------------------------------------------
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``fc`` (and pooling, when given) on the same device and dtype; 0: no classifier."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        pool, fc = create_head(self.num_features, num_classes, global_pool)
        self.global_pool, self.fc = pool.train(self.training), fc.to(**_device_dtype(self)).train(self.training)
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * pool.feat_mult()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- body ---------------------------------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def prune_stem(self) -> None:
        """Drop what follows the stem feature inside the stem (only the stem feature is wanted)."""

    def prune_norm(self) -> None:
        """Drop the norm after the last stage (it is sized for, and only applied to, the last stage)."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """The stage, block by block under ``torch.utils.checkpoint`` when grad checkpointing is on
        (activations inside a block are recomputed in backward instead of stored)."""
        if not self.grad_checkpointing or symbolic_tracing() or torch.jit.is_scripting():
            return stage(x)
        for block in stage:
            x = checkpoint(block, x, use_reentrant=False)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, every stage, the final norm: the unpooled map the head pools."""
        _, x = self.forward_stem(x)
        for name in self.stage_names:
            x = self.run_stage(getattr(self, name), x)
        return self.forward_norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """The maps of ``feature_info`` (``indices``: None all, n the last n, or a list) and the final
        features, as timm's ``forward_intermediates``. ``norm`` applies the final norm to the last
        stage's map; ``stop_early`` stops after the last map wanted."""
        if output_fmt != "NCHW":
            raise ValueError(f"forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        stem_feature, x = self.forward_stem(x)
        intermediates = [stem_feature] if 0 in take else []
        last = len(self.stage_names)
        names = self.stage_names[:max_index] if stop_early else self.stage_names
        for idx, name in enumerate(names, start=1):
            x = self.run_stage(getattr(self, name), x)
            if idx in take:
                intermediates.append(self.forward_norm(x) if norm and idx == last else x)
        if intermediates_only:
            return intermediates
        if len(names) == last:
            x = self.forward_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Empty the stages after the last wanted map (and the head): returns the absolute indices."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        for name in self.stage_names[max_index:]:
            setattr(self, name, nn.Sequential())  # empty, so every stage is still a Sequential
        if max_index == 0:
            self.prune_stem()
        prune_end = max_index < len(self.stage_names)
        if prune_norm or prune_end:
            self.prune_norm()
        if prune_end:  # the features now end at the last map kept; the head was sized for the last stage
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take
