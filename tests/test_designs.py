"""Benchmark designs compared by the cost of a powered comparison (torch_impl.experiments.designs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torch_impl.experiments import designs
from torch_impl.experiments.stats import seeds_for_half_width, summarize

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {"image_size": 16, "train_samples": 3000, "val_samples": 10000, "data_seed": None, "batch_size": 32,
          "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "lr_schedule": "cosine", "compile": False}  # fmt: skip


def write_cell(folder: Path, epochs: int, errors: dict[str, list[float]], seconds: float, **budget) -> None:
    records = [{"row_key": row, "seed": s, "epochs": epochs, "final_val_top1_err": e, "wall_time_s": seconds,
                "machine": {"cpu": "test CPU"}} for row, errs in errors.items() for s, e in enumerate(errs)]  # fmt: skip
    path = folder / f"e{epochs}" / "table1" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"budget": {**BUDGET, **budget, "epochs": epochs}, "records": records}))


PLAIN = [5.0, 6.0, 7.0, 8.0]


def test_each_complete_cell_costs_the_seeds_its_widest_contrast_needs_times_one_run_of_each_row(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    write_cell(small, 24, {"resnet": PLAIN, "se": PLAIN, "aff3d": [4.0, 7.0, 6.0, 9.0]}, 100.0)
    write_cell(small, 48, {"resnet": PLAIN, "se": PLAIN, "aff3d": PLAIN[:2]}, 200.0)  # in progress: left out
    write_cell(large, 3, {"resnet": PLAIN, "se": [5.1, 6.0, 7.1, 8.0], "aff3d": [4.5, 5.6, 6.4, 7.5]}, 80.0,
               train_samples=24000, compile=True)  # fmt: skip
    comparison = designs.compare([small, large])
    assert comparison["varies"] == ["train_samples"]  # compile changes only the rounding: not a design
    assert [(c["epochs"], c["images_seen"]) for c in comparison["cells"]] == [(24, 72000), (3, 72000)]
    wide, narrow = comparison["cells"]
    spread = summarize([a - b for a, b in zip([4.0, 7.0, 6.0, 9.0], PLAIN, strict=True)]).std
    assert wide["spread"]["aff3d-resnet"] == pytest.approx(spread)
    assert wide["seeds_for_margin"] == seeds_for_half_width(spread, 0.5)
    assert wide["seconds_per_seed"] == 300.0
    assert wide["hours_for_margin"] == pytest.approx(wide["seeds_for_margin"] * 300.0 / 3600)
    assert narrow["seeds_for_margin"] < wide["seeds_for_margin"]  # the paired differences spread less
    assert wide["halving"] == narrow["halving"] == "half not measured"
    text = designs.render_markdown(comparison)
    assert "| train_samples | epochs |" in text and "| 24,000 | 3 | 72,000 |" in text


def test_a_halving_that_converged_is_named_the_cheapest_converged_cell(tmp_path, capsys):
    study = tmp_path / "study"
    write_cell(study, 6, {"resnet": PLAIN, "se": PLAIN, "aff3d": [4.0, 6.5, 6.5, 8.0]}, 50.0)
    write_cell(study, 12, {"resnet": [e - 0.1 for e in PLAIN], "se": PLAIN, "aff3d": [4.1, 6.4, 6.6, 8.0]}, 90.0)
    assert designs.main([str(study), "--out", str(tmp_path / "out")]) == 0
    assert "cheapest converged: " in (out := capsys.readouterr().out) and out.rstrip().endswith("at 12 epochs")
    data = json.loads((tmp_path / "out" / designs.OUT_JSON).read_text())
    assert [c["halving"] for c in data["cells"]] == ["half not measured", "yes"]
    assert (tmp_path / "out" / designs.OUT_MD).read_text() == designs.render_markdown(data)


def test_a_folder_without_a_study_or_its_budget_says_error(tmp_path, capsys):
    assert designs.main([str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: no budget results")
    bare = tmp_path / "bare" / "e12" / "table1" / "results.json"
    bare.parent.mkdir(parents=True)
    records = [{"row_key": k, "seed": s, "epochs": 12, "final_val_top1_err": 5.0 + s, "wall_time_s": 1.0,
                "machine": {"cpu": "x"}} for k in ("resnet", "se", "aff3d") for s in range(4)]  # fmt: skip
    bare.write_text(json.dumps({"records": records}))
    assert designs.main([str(tmp_path / "bare"), "--out", str(tmp_path / "out")]) == 2
    assert "states no budget" in capsys.readouterr().err


def test_the_committed_comparison_is_what_its_studies_give():
    committed = json.loads((ROOT / "docs" / "results" / "experiments" / "trials" / designs.OUT_JSON).read_text())
    folders = [ROOT / s for s in dict.fromkeys(c["study"] for c in committed["cells"])]
    again = json.loads(json.dumps(designs.compare(folders)))
    assert again == committed
    md = ROOT / "docs" / "results" / "experiments" / "trials" / designs.OUT_MD
    assert designs.render_markdown(again) == md.read_text()


def test_the_recipe_of_the_third_design_trains_the_trial_s_cells(tmp_path, capsys):
    """experiments_shapes_v3 is the trial's design: its runs have the trial cells' budget, so they join them."""
    from torch_impl.experiments.__main__ import main

    trial = ROOT / "docs" / "results" / "experiments" / "trials" / "budget_train24k" / "e6" / "table1" / "results.json"
    argv = ["table1", "--recipe", "experiments_shapes_v3", "--rows", "resnet", "--seeds", "1", "--set", "epochs=6",
            "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    assert f"/{json.loads(trial.read_text())['budget_id']}/" in capsys.readouterr().out


def test_studies_without_a_complete_cell_say_error_and_write_nothing(tmp_path, capsys):
    write_cell(tmp_path / "study", 12, {"resnet": PLAIN, "se": PLAIN[:2], "aff3d": PLAIN[:2]}, 10.0)  # in progress
    assert designs.main([str(tmp_path / "study"), "--out", str(tmp_path / "out")]) == 2
    assert "no complete cell" in capsys.readouterr().err and not (tmp_path / "out").exists()
