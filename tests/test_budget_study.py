"""The budget study's analysis (torch_impl.experiments.budget) and the verdict/power statistics it uses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from torch_impl.experiments import budget
from torch_impl.experiments.stats import (
    holm,
    paired_p_value,
    power,
    seeds_for_half_width,
    summarize,
    verdict,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "results" / "experiments" / "budget"


def record(row: str, seed: int, epochs: int, err: float) -> dict:
    return {"row_key": row, "seed": seed, "epochs": epochs, "final_val_top1_err": err, "wall_time_s": 1.0,
            "machine": {"cpu": "test CPU"}}  # fmt: skip


def write_budget(folder: Path, epochs: int, errors: dict[str, list[float]]) -> None:
    records = [record(row, s, epochs, e) for row, errs in errors.items() for s, e in enumerate(errs)]
    path = folder / f"e{epochs}" / "table1" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"records": records}))


def test_a_budget_is_converged_only_when_halving_it_moves_no_row_by_more_than_the_threshold(tmp_path):
    base = {"resnet": [10.0, 11.0, 12.0, 13.0], "se": [9.0, 10.0, 11.0, 12.0], "aff3d": [8.0, 9.0, 10.0, 11.0]}
    write_budget(tmp_path, 12, base)
    write_budget(tmp_path, 24, {k: [e - 2.0 for e in v] for k, v in base.items()})  # every row 2 points lower
    # 48: plain and SE move 0.4, 3D-AFF 0.6 -> not converged; 96: every row 0.1 -> converged
    write_budget(tmp_path, 48, {k: [e - 2.0 - (0.6 if k == "aff3d" else 0.4) for e in v] for k, v in base.items()})
    write_budget(tmp_path, 96, {k: [e - 2.0 - (0.6 if k == "aff3d" else 0.4) - 0.1 for e in v] for k, v in base.items()})
    analysis = budget.write_report(tmp_path)
    halving = {e: b["halving"] for e, b in analysis["budgets"].items()}
    assert halving["12"] is None  # its half was not measured
    assert halving["24"]["converged"] is False and halving["24"]["change"]["resnet"]["mean"] == pytest.approx(-2.0)
    assert halving["48"]["converged"] is False  # one row (3D-AFF) moved by 0.6 > 0.5
    assert halving["96"]["converged"] is True
    assert analysis["converged_budget"] == 96
    assert analysis["budgets"]["12"]["contrasts"]["aff3d-resnet"]["mean"] == pytest.approx(-2.0)
    assert "**96 epochs**" in (tmp_path / "results.md").read_text() and (tmp_path / "budget.png").stat().st_size > 0


FOUR = [5.0, 6.0, 7.0, 8.0]  # a complete cell's seeds (budget.CELL_SEEDS)


def test_a_row_missing_at_the_half_budget_leaves_the_halving_undecided(tmp_path):
    write_budget(tmp_path, 24, {"resnet": FOUR, "se": FOUR})
    write_budget(tmp_path, 48, {"resnet": FOUR, "se": FOUR, "aff3d": FOUR})
    analysis = budget.analyse(budget.load_budgets(tmp_path))
    assert analysis["budgets"]["48"]["halving"]["converged"] is None and analysis["converged_budget"] is None


def test_a_cell_in_progress_decides_no_halving_and_is_not_drawn(tmp_path):
    """A cell whose rows have fewer than CELL_SEEDS seeds would decide convergence from its first seeds."""
    write_budget(tmp_path, 48, {"resnet": FOUR, "se": FOUR, "aff3d": FOUR})
    write_budget(tmp_path, 96, {"resnet": FOUR[:2], "se": FOUR[:1], "aff3d": FOUR[:1]})  # unchanged so far
    analysis = budget.write_report(tmp_path)
    cell = analysis["budgets"]["96"]
    assert cell["complete"] is False and analysis["budgets"]["48"]["complete"] is True
    assert cell["halving"]["converged"] is None and cell["halving"]["change"]["resnet"]["mean"] == 0.0
    assert analysis["converged_budget"] is None
    text = (tmp_path / "results.md").read_text()
    assert "| in progress |" in text and "In progress (fewer than 4 seeds of a row): 96 epochs" in text
    assert "**not measured yet**" in text  # no complete cell has its half
    write_budget(tmp_path, 192, {"resnet": FOUR, "se": FOUR, "aff3d": FOUR})
    assert budget.analyse(budget.load_budgets(tmp_path))["budgets"]["192"]["halving"]["converged"] is None


def test_a_cell_whose_runs_validated_on_different_epochs_says_its_run_times_mix(tmp_path):
    write_budget(tmp_path, 48, {"resnet": FOUR, "se": FOUR, "aff3d": FOUR})
    path = tmp_path / "e48" / "table1" / "results.json"
    data = json.loads(path.read_text())
    for r in data["records"]:  # seed 0 validated every epoch, the others every 8th and the last
        r["history"] = [{"epoch": e} | ({"val_top1_err": 1.0} if r["seed"] == 0 or e % 8 == 0 else {})
                        for e in range(1, 49)]  # fmt: skip
    path.write_text(json.dumps(data))
    analysis = budget.analyse(budget.load_budgets(tmp_path))
    assert analysis["budgets"]["48"]["rows"]["se"]["validated_epochs"] == [6, 48]
    assert "s / run at 48 epochs mixes runs validated on different numbers of epochs" in budget.render_markdown(
        analysis, "test CPU")


def test_a_study_with_no_halving_measured_says_so_rather_than_not_converged(tmp_path):
    write_budget(tmp_path, 48, {"resnet": FOUR, "se": FOUR, "aff3d": FOUR})
    text = budget.render_markdown(budget.analyse(budget.load_budgets(tmp_path)), "test CPU")
    assert "**not measured yet**" in text and "none of the measured budgets" not in text
    write_budget(tmp_path, 96, {k: [e - 2.0 for e in FOUR] for k in ("resnet", "se", "aff3d")})  # 2 points lower
    text = budget.render_markdown(budget.analyse(budget.load_budgets(tmp_path)), "test CPU")
    assert "**none of the measured budgets**" in text and "not measured yet" not in text


def test_a_budget_whose_runner_has_finished_no_run_yet_is_not_in_the_study(tmp_path):
    write_budget(tmp_path, 24, {"resnet": [5.0, 6.0], "se": [5.0, 6.0], "aff3d": [4.0, 5.0]})
    write_budget(tmp_path, 48, {})  # the runner's results file, before its first record
    analysis = budget.analyse(budget.load_budgets(tmp_path))
    assert list(analysis["budgets"]) == ["24"] and analysis["converged_budget"] is None
    assert "**not measured yet**" in budget.render_markdown(analysis, "test CPU")


def test_a_record_in_the_wrong_budget_folder_is_refused(tmp_path):
    write_budget(tmp_path, 24, {"resnet": [5.0]})
    path = tmp_path / "e24" / "table1" / "results.json"
    data = json.loads(path.read_text())
    data["records"][0]["epochs"] = 48
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="a record of 48 epochs in the folder of 24"):
        budget.load_budgets(tmp_path)


def test_a_study_that_mixes_gpu_and_cpu_records_is_refused(tmp_path):
    write_budget(tmp_path, 24, {"resnet": [5.0, 6.0]})
    write_budget(tmp_path, 48, {"resnet": [4.0, 5.0]})
    path = tmp_path / "e48" / "table1" / "results.json"
    data = json.loads(path.read_text())
    data["records"][1]["machine"] = {"cpu": "another CPU", "gpu": "NVIDIA H200"}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="records from CPU and NVIDIA H200"):
        budget.load_budgets(tmp_path)
    data["records"][1]["machine"] = {"cpu": "another CPU"}  # two CPU models: one kind of device
    path.write_text(json.dumps(data))
    assert budget.machine_of(budget.load_budgets(tmp_path)) == "trained on another CPU and test CPU"


def test_cells_may_differ_in_layout_and_compilation_and_in_nothing_else_but_the_epochs(tmp_path, capsys):
    rows = {"resnet": FOUR, "se": FOUR, "aff3d": FOUR}
    for epochs, layout, compiled in ((48, False, False), (96, True, False), (192, False, True)):
        write_budget(tmp_path, epochs, rows)
        path = tmp_path / f"e{epochs}" / "table1" / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "budget": {
            "epochs": epochs, "lr": 0.01, "channels_last": layout, "compile": compiled}}))  # fmt: skip
    analysis = budget.write_report(tmp_path)
    assert analysis["differences"] == {"channels_last": {"48": False, "96": True, "192": False},
                                       "compile": {"48": False, "96": False, "192": True}}  # fmt: skip
    assert analysis["budgets"]["96"]["halving"]["converged"] is True  # paired across the two layouts
    text = (tmp_path / "results.md").read_text()
    assert "The cells differ in `channels_last`, the memory layout (48 epochs: False; 96 epochs: True; 192" in text
    assert "The cells differ in `compile`, torch.compile" in text
    path.write_text(json.dumps({**json.loads(path.read_text()), "budget": {"epochs": 192, "lr": 0.02}}))
    assert budget.main(["--out", str(tmp_path)]) == 2
    assert "error: cells that differ in lr besides the epochs: lr: 48 epochs 0.01, 96 epochs 0.01, 192 epochs 0.02" in (
        capsys.readouterr().err)


def test_the_command_says_error_when_there_is_no_study(tmp_path, capsys):
    assert budget.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no budget results in")


def test_the_seeds_a_half_point_interval_needs_come_from_the_spread_of_the_paired_differences(tmp_path):
    write_budget(tmp_path, 24, {"resnet": [5.0, 6.0, 7.0, 8.0], "se": [5.0, 6.5, 6.0, 8.5], "aff3d": [4.0, 5.0]})
    contrasts = budget.analyse(budget.load_budgets(tmp_path))["budgets"]["24"]["contrasts"]
    spread = summarize([0.0, 0.5, -1.0, 0.5]).std  # SE minus plain, seed by seed
    assert contrasts["se-resnet"]["seeds_for_margin"] == seeds_for_half_width(spread, 0.5) > 4
    assert contrasts["aff3d-resnet"]["seeds_for_margin"] == 2  # the same difference twice: no spread
    # past the cap of seeds, the interval the cap reaches: t(0.975, 23) * spread / sqrt(24)
    reached = scipy_stats.t.ppf(0.975, budget.SEED_CAP - 1) * spread / math.sqrt(budget.SEED_CAP)
    assert contrasts["se-resnet"]["half_width_at_cap"] == pytest.approx(reached)
    wide = {"resnet": [5.0, 6.0, 7.0, 8.0], "se": [8.0, 4.0, 9.0, 5.0], "aff3d": [5.0, 6.0, 7.0, 8.0]}
    write_budget(tmp_path, 48, wide)  # SE minus plain: +3, -2, +2, -3 -> far more seeds than the cap
    plan = budget.analyse(budget.load_budgets(tmp_path))["budgets"]["48"]["contrasts"]["se-resnet"]
    assert plan["seeds_for_margin"] > budget.SEED_CAP
    text = budget.render_markdown(budget.analyse(budget.load_budgets(tmp_path)), "test CPU")
    assert f"| 48 | 2 | {plan['seeds_for_margin']} (±{plan['half_width_at_cap']:.2f} at 24) |" in text


def test_the_report_counts_intervals_that_exclude_zero_against_chance_and_applies_holm(tmp_path):
    plain = [5.0, 6.0, 7.0, 8.0]
    rows = {"resnet": plain, "se": [e - 2.0 + d for e, d in zip(plain, (0.1, -0.1, 0.05, -0.05))],  # clearly lower
            "aff3d": [e + d for e, d in zip(plain, (1.0, -1.2, 0.9, -0.8))]}  # fmt: skip
    write_budget(tmp_path, 48, rows)
    write_budget(tmp_path, 96, {"resnet": plain[:2], "se": plain[:2], "aff3d": plain[:2]})  # in progress: not counted
    analysis = budget.analyse(budget.load_budgets(tmp_path))
    mc = analysis["multiple_comparisons"]
    p = {k: analysis["budgets"]["48"]["contrasts"][k]["p"] for k in ("aff3d-resnet", "aff3d-se", "se-resnet")}
    assert (mc["intervals"], mc["expected_by_chance"]) == (3, pytest.approx(0.15))
    assert mc["exclude_zero"] == sum(v < 0.05 for v in p.values()) >= 1
    assert mc["holm"] == [f"48 epochs {k}" for k, keep in zip(p, holm(list(p.values()))) if keep]
    assert "48 epochs se-resnet" in mc["holm"]
    text = budget.render_markdown(analysis, "test CPU")
    assert f"Multiple comparisons: of the 3 intervals of complete cells, {mc['exclude_zero']} exclude 0" in text


def test_two_studies_are_twins_only_where_every_row_agrees_within_the_margin(tmp_path):
    here, there = tmp_path / "cpu", tmp_path / "gpu"
    write_budget(here, 24, {"resnet": [5.1, 6.0, 7.1, 8.0], "se": [5.0, 6.1, 7.0, 8.1], "aff3d": [4.0, 5.1, 6.0, 7.1]})
    write_budget(here, 48, {"resnet": [4.0, 5.0, 6.0, 7.0], "se": [4.0, 5.0, 6.0, 7.0], "aff3d": [3.0, 4.0, 5.0, 6.0]})
    write_budget(there, 24, {"resnet": [5.0, 6.0, 7.0, 8.0], "se": [5.0, 6.0, 7.0, 8.0], "aff3d": [4.0, 5.0, 6.0, 7.0]})
    write_budget(there, 48, {"resnet": [3.0, 4.0, 4.0, 6.0], "se": [4.0, 5.0, 6.0, 7.0], "aff3d": [3.0, 4.0, 5.0, 6.0]})
    write_budget(there, 96, {"resnet": [3.0, 4.0, 5.0, 6.0], "se": [3.0, 4.0, 5.0, 6.0], "aff3d": [2.0, 3.0, 4.0, 5.0]})
    analysis = budget.write_report(here, twin_of=there)
    t = analysis["twin"]["budgets"]
    assert sorted(t) == ["24", "48"]  # the budgets both measured
    assert t["24"]["agree"] is True and t["24"]["rows"]["resnet"]["mean"] == pytest.approx(0.05)
    assert t["48"]["agree"] is False  # plain differs by +1, +1, +2, +1 points: the interval leaves ±0.5
    assert t["48"]["rows"]["resnet"]["verdict"] == "higher error" and t["48"]["rows"]["se"]["n"] == 4
    assert "| 48 | +1.25 [" in (here / "results.md").read_text() and "| not shown |" in (here / "results.md").read_text()
    assert budget.main(["--out", str(here), "--twin-of", str(tmp_path / "none")]) == 2


@pytest.mark.parametrize(("folder", "finished"), [(COMMITTED, (12, 24, 48)),
                                                 (COMMITTED.parent / "budget_cpu", (48, 96, 192, 384)),
                                                 (COMMITTED.parent / "trials" / "budget_train24k", (6, 12))],
                         ids=["gpu", "cpu", "cpu-24k-images"])  # fmt: skip
def test_the_committed_study_is_what_its_records_give(folder, finished):
    """results.json and results.md under docs/ are the analysis of the committed records, rewritten."""
    committed = json.loads((folder / "results.json").read_text())
    budgets = budget.load_budgets(folder)
    twin_of = committed.get("twin", {}).get("of")
    again = budget.study(folder, None if twin_of is None else ROOT / twin_of)
    assert json.loads(json.dumps(again)) == committed
    assert budget.render_markdown(again, again["machine"]) == (folder / "results.md").read_text()
    assert set(finished) <= set(budgets)
    for rows in (budgets[e] for e in finished):  # the finished cells have at least 4 paired seeds of each row
        assert {k: len(v) >= 4 for k, v in rows.items()} == {"resnet": True, "se": True, "aff3d": True}


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([-1.0, -1.2, -0.8, -1.1], "lower error"),
        ([1.0, 1.2, 0.8, 1.1], "higher error"),
        ([0.1, -0.1, 0.05, -0.05, 0.0, 0.02], "equivalent within ±0.5"),
        ([2.0, -2.0, 1.0, -1.5], "inconclusive"),
        ([0.4, -0.3, 0.45, -0.2], "inconclusive"),  # spans 0 and reaches past the margin
    ],
)
def test_the_verdict_says_only_what_the_interval_supports(values, expected):
    assert verdict(summarize(values)) == expected


def test_no_interval_no_verdict():
    assert verdict(None) == "" and verdict(summarize([1.0])) == ""


def test_the_interval_and_p_value_are_scipy_s_paired_t_test():
    diffs = [0.3, -1.2, -0.4, -2.0, 0.1, -0.9, -1.5, -0.2]
    s = summarize(diffs)
    test = scipy_stats.ttest_1samp(diffs, 0.0)
    ci = test.confidence_interval(0.95)
    assert (s.low, s.high) == pytest.approx((ci.low, ci.high))
    assert paired_p_value(s) == pytest.approx(test.pvalue)


def test_power_matches_a_simulation_and_the_seeds_give_the_half_width():
    # Noncentral t against a direct count: 20,000 simulated 8-seed experiments with effect 1, sd 1.25.
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.25, size=(20_000, 8))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(8))
    simulated = float((abs(t) > scipy_stats.t.ppf(0.975, 7)).mean())
    assert power(1.0, 1.25, 8) == pytest.approx(simulated, abs=0.015)
    n = seeds_for_half_width(1.25, 0.5)
    assert scipy_stats.t.ppf(0.975, n - 1) * 1.25 / math.sqrt(n) <= 0.5
    assert scipy_stats.t.ppf(0.975, n - 2) * 1.25 / math.sqrt(n - 1) > 0.5  # the fewest


def test_holm_steps_down_and_stops_at_the_first_failure():
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.01 <= 0.05/3; 0.03 > 0.05/2 stops
    assert holm([0.001, 0.02, 0.04]) == [True, True, True]  # 0.001 <= 0.05/3, 0.02 <= 0.05/2, 0.04 <= 0.05
    assert holm([0.5, 0.2]) == [False, False]


def test_a_halving_that_fails_says_whether_the_error_still_falls_or_the_seeds_cannot_tell(tmp_path):
    base = {"resnet": [5.0, 6.0, 7.0, 8.0], "se": [5.0, 6.0, 7.0, 8.0], "aff3d": [5.0, 6.0, 7.0, 8.0]}
    write_budget(tmp_path, 24, base)
    # plain's mean moves by -1.0, but its seeds disagree (-3, +1, -3, +1): the interval spans 0; SE falls by 0.2 in
    # every seed, an interval below 0 but within the threshold, so no reason for the failure
    write_budget(tmp_path, 48, {**base, "resnet": [2.0, 7.0, 4.0, 9.0], "se": [4.8, 5.8, 6.8, 7.8]})
    # 96: plain falls by 1 point in every seed, a fall the interval shows; 192: SE rises in every seed
    write_budget(tmp_path, 96, {**base, "resnet": [1.0, 6.0, 3.0, 8.0]})
    write_budget(tmp_path, 192, {**base, "resnet": [1.0, 6.0, 3.0, 8.0], "se": [6.0, 7.0, 8.0, 9.0]})
    analysis = budget.write_report(tmp_path)
    words = {e: budget.halving_words(b["halving"]) for e, b in analysis["budgets"].items() if b["halving"]}
    assert words == {"48": "no: by the means alone", "96": "no: still falling", "192": "no: rising"}
    assert "| 48 | 24 | -1.00 [" in (tmp_path / "results.md").read_text()
    assert " | no: by the means alone |" in (tmp_path / "results.md").read_text()


def test_the_report_states_the_design_its_cells_were_trained_with():
    cell = {"image_size": 16, "train_samples": 24000, "val_samples": 10000, "data_seed": None, "batch_size": 32,
            "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "lr_schedule": "cosine"}  # fmt: skip
    words = budget.design_words(cell)
    assert words.startswith("16 px, 24,000 training / 10,000 validation images (each seed its own), batch 32, AdamW")
    assert "cosine schedule to zero" in words
    assert "each seed its own" not in budget.design_words({**cell, "data_seed": 0})
    assert budget.design_words({"epochs": 48}) == ""  # a results file without its budget states none
