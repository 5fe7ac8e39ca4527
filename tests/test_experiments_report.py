"""A grid's results page reports the main contrasts with the seeds they need and the power they have, and counts
its intervals that exclude 0 against chance (torch_impl.experiments.report; the statistics in .stats)."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats as scipy_stats

from torch_impl.experiments.grids import GRIDS, MAIN_CONTRASTS
from torch_impl.experiments.report import grid_comparisons, main_contrasts, render_markdown, summary_table
from torch_impl.experiments.stats import (
    SEED_CAP,
    comparisons_words,
    interval_plan,
    multiple_comparisons,
    paired_difference,
    power,
    seeds_for_half_width,
    summarize,
)

NETWORKS = {"resnet": ("resnet20_cifar", {}), "se": ("se_resnet20_cifar", {}), "aff3d": ("aff3d_resnet20_cifar", {}),
            "cbam": ("cbam_resnet20_cifar", {}), "eca": ("eca_resnet20_cifar", {}),
            "aff3d_sum": ("aff3d_resnet20_cifar", {"merge": "sum"})}  # fmt: skip


def grid_data(errors: dict[str, list[float]]) -> dict:
    """A grid's results.json with one record per (row, seed): what the report reads of it."""
    records = []
    for row, errs in errors.items():
        model, kwargs = NETWORKS[row]
        for seed, e in enumerate(errs):
            history = [{"epoch": 1, "val_top1_err": e + 1.0}, {"epoch": 2, "val_top1_err": e}]
            records.append({"row_key": row, "seed": seed, "model": model, "model_kwargs": kwargs, "epochs": 2,
                            "final_val_top1_err": e, "final_val_top5_err": 0.0, "best_val_top1_err": e,
                            "wall_time_s": 1.0, "history": history})  # fmt: skip
    return {"budget_id": "test", "budget": {"epochs": 2}, "records": records}


PLAIN = [5.0, 6.0, 7.0, 8.0, 6.5]
SE = [4.8, 6.3, 6.1, 8.4, 6.0]
AFF3D = [3.9, 5.2, 6.4, 6.7, 5.1]


def test_interval_plan_is_the_seeds_for_the_margin_the_half_width_at_the_cap_and_the_power():
    d = paired_difference(dict(enumerate(AFF3D)), dict(enumerate(PLAIN)))
    plan = interval_plan(d)
    assert plan["seeds_for_margin"] == seeds_for_half_width(d.std, 0.5)
    assert plan["half_width_at_cap"] == pytest.approx(scipy_stats.t.ppf(0.975, SEED_CAP - 1) * d.std / math.sqrt(24))
    assert plan["power"] == pytest.approx(power(1.0, d.std, 5))
    one_seed = paired_difference({0: 1.0}, {0: 2.0})
    assert interval_plan(one_seed) == {"seeds_for_margin": None, "half_width_at_cap": None, "power": None}
    no_spread = paired_difference({0: 1.0, 1: 2.0}, {0: 2.0, 1: 3.0})  # the same difference twice
    assert interval_plan(no_spread) == {"seeds_for_margin": 2, "half_width_at_cap": 0.0, "power": None}


def test_multiple_comparisons_count_the_intervals_excluding_zero_and_apply_holm():
    far = summarize([-3.0, -3.1, -2.9, -3.05])  # excludes 0 with a tiny p-value
    near = summarize([-1.0, 0.2, -0.4, -0.6])  # spans 0
    just = summarize([-1.0, -0.2, -0.9, -0.4, -0.7])  # excludes 0, p about 0.006
    mc = multiple_comparisons({"far": far, "near": near, "just": just, "one seed": summarize([1.0]), "none": None})
    assert mc["intervals"] == 3 and mc["exclude_zero"] == 2 and mc["expected_by_chance"] == pytest.approx(0.15)
    assert mc["holm"] == ["far", "just"]
    assert comparisons_words(mc).startswith("of the 3 intervals, 2 exclude 0, where about 0.2 would by chance")
    assert comparisons_words(multiple_comparisons({"far": far}), "tests") == (
        "of the 1 tests, 1 excludes 0, where about 0.1 would by chance alone if no row differed; after Holm's "
        "correction (family-wise 5 %): far.")


def test_the_results_page_reports_the_three_main_contrasts_with_their_seeds_and_power():
    grid = GRIDS["table1"]
    data = grid_data({"resnet": PLAIN, "se": SE, "aff3d": AFF3D})
    contrasts = {c["key"]: c for c in main_contrasts(grid, data)}
    assert list(contrasts) == [f"{a}-{b}" for a, b in MAIN_CONTRASTS]
    d = paired_difference(dict(enumerate(AFF3D)), dict(enumerate(SE)))
    assert contrasts["aff3d-se"]["diff"] == d
    assert contrasts["aff3d-se"]["power"] == pytest.approx(power(1.0, d.std, 5))
    text = render_markdown(grid, data)
    plan = interval_plan(d)
    need = plan["seeds_for_margin"]
    seeds = str(need) if need <= SEED_CAP else f"{need} (±{plan['half_width_at_cap']:.2f} at 24)"
    row = (f"| 3D-AFF − SE | 5 | {d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] | inconclusive | {seeds} | "
           f"{plan['power']:.2f} |")
    assert row in text
    # the intervals: SE and 3D-AFF against the baseline (plain), and 3D-AFF − SE, which is not among those
    mc = grid_comparisons(grid, data)
    assert mc["intervals"] == 3 and "Multiple comparisons: of the 3 intervals, " in text
    # a grid without SE has no contrast with it; with one seed of a row its contrasts have no interval
    assert [c["key"] for c in main_contrasts(grid, grid_data({"resnet": PLAIN, "aff3d": AFF3D}))] == ["aff3d-resnet"]
    lone = render_markdown(grid, grid_data({"resnet": PLAIN[:1], "aff3d": AFF3D[:1]}))
    assert "| 3D-AFF − plain | 1 | -1.10 (1 seed) |  |  |  |" in lone and "Multiple comparisons" not in lone


def test_a_pair_of_networks_counts_once_in_a_grid_and_across_the_summary(tmp_path):
    # Table 5's baseline is 3D-AFF: its SE row against the baseline is the main contrast 3D-AFF − SE already
    table5 = grid_data({"se": SE, "aff3d": AFF3D, "aff3d_sum": [4.0, 5.0, 6.0, 7.0, 5.5]})
    assert grid_comparisons(GRIDS["table5"], table5)["intervals"] == 2
    # Tables 1 and 6 both compare SE and 3D-AFF with plain: the summary counts those pairs once
    (tmp_path / "table1").mkdir()
    (tmp_path / "table1" / "results.json").write_text(json.dumps(grid_data({"resnet": PLAIN, "se": SE, "aff3d": AFF3D})))
    (tmp_path / "table6").mkdir()
    table6 = grid_data({"resnet": PLAIN, "se": SE, "aff3d": AFF3D, "cbam": [6.0, 7.0, 8.0, 9.0, 7.5]})
    (tmp_path / "table6" / "results.json").write_text(json.dumps(table6))
    text = summary_table(tmp_path)
    # table1: SE, 3D-AFF against plain and 3D-AFF − SE; table6 adds CBAM against plain only
    assert "(a pair of networks two grids compare counts once): of the 4 intervals, " in text
