"""What 3D-AFF costs over ResNet-50: ``python -m torch_impl.benchmark``.

One process, all models built up front, repetitions interleaved (each repetition times every model
once, in a rotating order, so that drifting clocks, caches and background load hit all of them
alike: ``timing``), medians over repetitions, ratios against torchvision's ``resnet50``:

    cpu       batch-1 latency at 224 x 224 (the paper's measure, section 4.3: 185 / 188 / 209 ms for
              ResNet-50 / SE / 3D-AFF on an 8-core desktop CPU) and batch-32 throughput, inference,
              on ``--threads`` threads (2 by default) (``cpu``)
    cuda      training images/s (SGD step, bf16 autocast, channels_last, batch 256) and the peak
              memory of a training step, each model measured alone on the GPU, eager (``cuda``)
    compiled  the same training step under torch.compile (``--compile``, ``--compile-mode default,reduce-overhead``)
              for ResNet-50, SE-ResNet-50 and 3D-AFF-ResNet-50, compiled against compiled, with the
              eager figures and each network's compile time beside (``compiled``)

Models: torchvision ``resnet50``, our ``se_resnet50``, and ``aff3d_resnet50`` twice, with the
straightforward (``impl="straightforward"``) and the fast (``impl="fast"``, default) 3D-AFF, same weights
(``models``).

Further sections (``sections``): ``small`` (CPU training step of the notebooks' small networks),
``table`` (the table gate: arithmetic floor and channels_last inference), ``routes`` (the fast path's
routes, ``torch_impl.benchmark.routes``) and ``detection`` (the detectron2 backbone's training step); the
plain command (``--device auto``) runs them too, ``--sections`` chooses any set.

Writes ``<prefix>_<section>.json`` per section run, each with the machine and the fingerprint of the code
it measured (``provenance``), and redraws ``<prefix>.png`` and ``<prefix>.md`` (``report``) from every section
file present (so a CPU run here and a CUDA run on a GPU machine end up in one table, each with its machine);
with the default prefix it also rewrites the speed table of ``docs/speed.md``, which labels each row
"current code" or "older code (measured YYYY-MM-DD)". ``--report-only`` redraws without measuring.
"""

from __future__ import annotations

from .cli import main, parse_args

__all__ = ["main", "parse_args"]
