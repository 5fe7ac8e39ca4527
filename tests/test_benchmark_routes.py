"""The size rule of the fast path's dispatch against the committed measurements it was chosen from
(``python -m torch_impl.benchmark --sections routes`` -> ``docs/results/benchmark_routes.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torch_impl.benchmark import routes as benchmark_routes
from torch_impl.attention import aff3d_fast
from torch_impl.attention.aff3d_fast import table_gate_cpu_pass

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "benchmark_routes.json"


@pytest.fixture(scope="module")
def measured() -> dict:
    return json.loads(RESULTS.read_text())


@pytest.mark.size_rule
def test_the_committed_figures_cover_the_rule(measured):
    """The file times every form the rule chooses between, straightforward included, at the shapes the
    section measures, in training; its table and product limits are today's."""
    rule = measured.get("size_rule", measured.get("small_map"))  # (the key's name before the routes' rename)
    assert all(rule[k] == aff3d_fast.SIZE_RULE[k] for k in rule)
    assert measured["batch"] == 32 and measured["mode"] == "train"
    measured_cases = [(r["C"], r["H"], r["K"], r["layout"], r["batch"], r["frozen_norm"]) for r in measured["shapes"]]
    assert measured_cases == benchmark_routes.cases(measured["batch"])
    assert all({"straightforward", "small_map"} <= set(r["ms"]) for r in measured["shapes"])


@pytest.mark.size_rule
def test_the_dispatch_takes_the_fastest_measured_form_within_the_noise(measured):
    """At each measured shape and layout the route the dispatch takes today measured within TOLERANCE of
    the fastest form there, and so within it of the straightforward path."""
    if not table_gate_cpu_pass.enabled(torch.zeros(2, 2, 2, 2).contiguous(memory_format=torch.channels_last)):
        pytest.skip("the compiled CPU pass is unavailable here: channels_last training cannot take the table")
    slower = []
    for row in measured["shapes"]:
        now = benchmark_routes.dispatch(row["C"], row["H"], row["K"], row["layout"], row["frozen_norm"])
        chosen, best = benchmark_routes.chosen_and_best(row, now)
        if row["ms"][chosen] > (1 + benchmark_routes.TOLERANCE) * row["ms"][best]:
            slower.append((row["C"], row["H"], row["K"], row["layout"], chosen, row["ms"][chosen], best, row["ms"][best]))
    assert not slower, slower


def test_chosen_and_best_reads_a_row():
    row = {"dispatch": "small_map", "forms": ["straightforward", "small_map", "table"],
           "ms": {"straightforward": 1.0, "small_map": 9.0, "table": 12.0}}
    assert benchmark_routes.chosen_and_best(row) == ("small_map", "straightforward")  # the recorded route
    assert benchmark_routes.chosen_and_best(row, "autograd") == ("small_map", "straightforward")
    row["ms"]["straightforward"] = 20.0
    assert benchmark_routes.chosen_and_best(row, "table") == ("table", "small_map")
