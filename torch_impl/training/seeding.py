"""Seeds and deterministic kernels: what makes a CPU run repeat bit for bit, and a resumed run match.

Every epoch re-seeds all generators from ``(seed, epoch, rank)``. The shuffling order, the augmentation
draws (in the main process and in data-loader workers, which are seeded from the loader's generator)
and anything else random in epoch e therefore depend only on e, not on what ran before: a run resumed
after epoch k replays epoch k + 1 exactly as an uninterrupted run does.

Bit-for-bit equality on CPU also needs the same number of threads (``--threads``): the float sums
inside convolutions are split by thread, so their last bits depend on it.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that mixes ``parts`` (e.g. base seed, epoch, rank) through numpy's SeedSequence."""
    return int(
        np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> tuple[bool, bool, bool]:
    """Deterministic kernels (and no cuDNN auto-tuning) when asked; cuDNN auto-tuning otherwise.

    Returns the previous settings, for ``restore_determinism``.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    return previous


def restore_determinism(previous: tuple[bool, bool, bool]) -> None:
    torch.use_deterministic_algorithms(previous[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]


def rng_state() -> dict:
    """Every global generator's state, in types that ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
