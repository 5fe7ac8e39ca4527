"""The small-map rule of the fast path's dispatch against the committed measurements it was chosen from
(``python -m torch_impl.benchmark --sections routes`` -> ``docs/results/benchmark_routes.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torch_impl import benchmark_routes
from torch_impl.attention import aff3d_fast
from torch_impl.kernels import gate_cpu

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "benchmark_routes.json"


@pytest.fixture(scope="module")
def measured() -> dict:
    return json.loads(RESULTS.read_text())


@pytest.mark.size_rule
def test_the_committed_figures_measured_this_rule(measured):
    """A changed SMALL_MAP needs the section measured again: the file records the rule it measured."""
    assert measured["small_map"] == aff3d_fast.SMALL_MAP
    assert measured["batch"] == 32 and measured["mode"] == "train"
    shapes = {(r["C"], r["H"], r["K"]) for r in measured["shapes"]}
    assert shapes == set(benchmark_routes.SHAPES)


@pytest.mark.size_rule
def test_the_dispatch_takes_a_route_near_the_faster_at_every_measured_shape(measured):
    """At each measured shape and layout, the route the dispatch takes now is the one the file recorded,
    and it measured within TOLERANCE of the faster of the two routes the rule chooses between."""
    if not gate_cpu.enabled(torch.zeros(2, 2, 2, 2).contiguous(memory_format=torch.channels_last)):
        pytest.skip("the compiled CPU pass is unavailable here: channels_last training keeps the product form")
    slower = []
    for row in measured["shapes"]:
        now = benchmark_routes.dispatch(row["C"], row["H"], row["K"], row["layout"])
        assert now == row["dispatch"], row
        chosen, best = benchmark_routes.chosen_and_best(row)
        if row["ms"][chosen] > (1 + measured["tolerance"]) * row["ms"][best]:
            slower.append((row["C"], row["H"], row["K"], row["layout"], chosen, row["ms"][chosen], best, row["ms"][best]))
    assert not slower, slower


def test_chosen_and_best_reads_a_row():
    row = {"dispatch": "small_map", "forms": ["straightforward", "small_map", "product", "table"],
           "ms": {"straightforward": 1.0, "small_map": 9.0, "product": 5.0, "table": 12.0}}
    assert benchmark_routes.chosen_and_best(row) == ("small_map", "small_map")  # against the table, not the product
    row["forms"] = ["straightforward", "small_map", "product"]
    assert benchmark_routes.chosen_and_best(row) == ("small_map", "product")
    row["dispatch"] = "fused_tail"
    assert benchmark_routes.chosen_and_best(row) == ("product", "product")
