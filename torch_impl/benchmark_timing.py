"""Where ``torch_impl.benchmark_routes`` finds the benchmark's timing; the timing itself lives in
``torch_impl.benchmark.timing`` (this name goes once the routes module imports that directly)."""

from __future__ import annotations

from .benchmark.timing import interleaved_calls, interleaved_runs, load_average, ratios, rotations

__all__ = ["interleaved_calls", "interleaved_runs", "load_average", "ratios", "rotations"]
