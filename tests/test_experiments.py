"""The experiment runner: grids derived from the paper's rows, statistics checked by hand, records,
skipping, sharing and resuming of runs (tiny budget: a few steps on 16 px images), bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tiny_run import tiny_config
from torch_impl.experiments.__main__ import main
from torch_impl.experiments.grids import GRIDS, canonical_kwargs, get_grid, variant_of
from torch_impl.experiments.stats import paired_difference, slope, summarize, t_quantile
from torch_impl.zoo.paper import TABLE2, TABLE6

# ----------------------------------------------------------------------------- statistics, by hand


def test_t_interval_matches_hand_computation():
    # values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3) = 1.290994; t_{0.975, 3} = 3.182446 (printed tables)
    s = summarize([1, 2, 3, 4])
    assert s.n == 4 and s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    assert t_quantile(0.95, 3) == pytest.approx(3.182446, abs=1e-6)
    assert s.half_width == pytest.approx(3.182446 * 1.290994 / 2, abs=1e-5)
    assert (s.low, s.high) == pytest.approx((2.5 - 2.054260, 2.5 + 2.054260), abs=1e-5)
    one = summarize([7.0])
    assert one.mean == 7.0 and math.isnan(one.std) and math.isnan(one.half_width)


def test_paired_difference_uses_common_seeds_only():
    # d = (10-9, 12-10, 11-11) = (1, 2, 0): mean 1, s = 1, t_{0.975, 2} = 4.302653; seed 3 has no partner
    d = paired_difference({0: 10.0, 1: 12.0, 2: 11.0}, {0: 9.0, 1: 10.0, 2: 11.0, 3: 50.0})
    assert d.n == 3 and d.mean == pytest.approx(1.0) and d.std == pytest.approx(1.0)
    assert d.half_width == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    # unpaired, the same numbers would give a much wider interval: pairing removes the shared variation
    assert paired_difference({0: 1.0}, {1: 2.0}) is None


def test_slope_is_least_squares():
    assert slope([3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert slope([1.0, 3.0, 2.0]) == pytest.approx(0.5)  # (x - 2) . y / 2 = (-1 + 0 + 2) / 2
    assert slope([5.0]) == 0.0


# ----------------------------------------------------------------------------- grids from the paper's rows


def test_grid_rows_are_the_paper_rows():
    assert list(GRIDS) == ["table1", "table2", "table3_4", "table5", "table6"]
    t2 = get_grid("table2")
    assert [r.label for r in t2.rows] == [r.label for r in TABLE2.rows]
    assert t2.rows[0].paper_numbers[0]["value"] == TABLE2.rows[0].error
    t6 = get_grid("table6")
    assert [r.label for r in t6.rows] == [r.label for r in TABLE6.rows if r.label.endswith("ResNet-50")]
    assert [r.key for r in t6.rows] == ["resnet", "se", "cbam", "eca", "aff3d"]


def test_shared_networks_are_one_variant():
    # 3D-AFF with k = 3 (Table 3/4), the final design (Tables 1, 2, 5, 6): one network, one run per seed
    keys = {variant_of(get_grid(g).row(k), "resnet20_cifar").key for g, k in
            (("table1", "aff3d"), ("table2", "aff3d"), ("table3_4", "k3"), ("table5", "aff3d"), ("table6", "aff3d"))}  # fmt: skip
    assert keys == {"aff3d_resnet20_cifar"}
    assert canonical_kwargs("aff3d_resnet20_cifar", {"design": "aff3d_sum"}) == {"merge": "sum"}
    assert canonical_kwargs("aff3d_resnet20_cifar", {"merge": "sum", "kernel_size": 3}) == {"merge": "sum"}
    assert variant_of(get_grid("table2").row("se"), "resnet20_cifar").model == "se_resnet20_cifar"
    every = {variant_of(r, "resnet20_cifar").key for g in GRIDS.values() for r in g.rows}
    assert len(every) == 12  # the twelve networks of Tables 1-6 trained on the built-in data


# ----------------------------------------------------------------------------- runs on a tiny budget

TINY = {k: v for k, v in tiny_config().items() if k not in ("model", "output_dir", "progress", "tensorboard")}


def _args(tmp_path, *extra, **settings):
    sets = [a for k, v in {**TINY, **settings}.items() for a in ("--set", f"{k}={v}")]
    return [*extra, *sets, "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--no-progress"]


def _results(tmp_path, grid):
    return json.loads((tmp_path / "out" / grid / "results.json").read_text())


def test_records_shared_runs_and_skip(tmp_path, capsys):
    assert main(_args(tmp_path, "table2", "table6", "--rows", "resnet", "--seeds", "1")) == 0
    t2, t6 = _results(tmp_path, "table2"), _results(tmp_path, "table6")
    (rec,) = t2["records"]
    assert (rec["grid"], rec["paper_tables"], rec["row_key"], rec["seed"]) == ("table2", [2], "resnet", 0)
    assert rec["model"] == "resnet20_cifar" and rec["model_kwargs"] == {}
    assert rec["epochs"] == TINY["epochs"] == len(rec["history"])
    assert rec["images_seen"] == TINY["epochs"] * TINY["steps_per_epoch"] * TINY["batch_size"]
    assert rec["final_val_top1_err"] == rec["history"][-1]["val_top1_err"]
    assert rec["best_val_top1_err"] == min(h["val_top1_err"] for h in rec["history"])
    for key in ("final_val_top5_err", "wall_time_s", "machine", "versions", "paper", "row", "symbol"):
        assert key in rec
    from torch_impl.data.shapes import fingerprint

    assert rec["data_fingerprint"] == {s: fingerprint(s, t2["budget"]["image_size"], t2["budget"]["data_seed"])
                                       for s in ("train", "val")}  # the pixels this machine drew
    # one run, shared: table6's record has the same measurements
    (rec6,) = t6["records"]
    assert rec6["run_key"] == rec["run_key"] and rec6["history"] == rec["history"] and rec6["grid"] == "table6"
    run_dirs = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert len(run_dirs) == 1
    assert (tmp_path / "out" / "table2" / "results.md").read_text().count("| ResNet-164 |") == 1
    assert (tmp_path / "out" / "table2" / "curves.png").stat().st_size > 0
    # the summary over the grids: table6's ResNet row (table2 repeats table1, which is not there)
    summary = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert len(summary) == 3 and summary[2].startswith("| 6 | ResNet | 1 | ") and "baseline of Table 6" in summary[2]
    # a second call trains nothing and keeps the record
    stamp = (run_dirs[0] / "record.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(_args(tmp_path, "table2", "table6", "--rows", "resnet", "--seeds", "1")) == 0
    assert "0 run(s) to train" in capsys.readouterr().out
    assert (run_dirs[0] / "record.json").stat().st_mtime_ns == stamp
    assert _results(tmp_path, "table2")["records"] == t2["records"]


def test_a_grid_validated_every_k_epochs_is_the_same_budget(tmp_path, capsys):
    """eval_every changes no weight, so it is no part of the budget: the records join the same grid,
    measured on fewer epochs; best, slope and curves use the measured epochs."""
    grid = ("table1", "--rows", "resnet", "--seeds", "1")
    sparse = _args(tmp_path, *grid, epochs=5, eval_every=2)
    assert main(sparse) == 0
    (rec,) = _results(tmp_path, "table1")["records"]
    measured = [h for h in rec["history"] if "val_top1_err" in h]
    assert [h["epoch"] for h in measured] == [2, 4, 5] and len(rec["history"]) == rec["epochs"] == 5
    assert rec["best_val_top1_err"] == min(h["val_top1_err"] for h in measured)
    assert rec["final_val_top1_err"] == measured[-1]["val_top1_err"]
    ys, xs = [h["val_top1_err"] for h in measured], [2, 4, 5]
    assert rec["last_epochs_slope"] == pytest.approx(np.polyfit(xs, ys, 1)[0])
    assert (tmp_path / "out" / "table1" / "curves.png").stat().st_size > 0
    capsys.readouterr()
    assert main(_args(tmp_path, *grid, epochs=5)) == 0
    assert "0 run(s) to train" in capsys.readouterr().out  # measured every epoch: the same budget, already done


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    # stop_after_epochs ends the child after epoch 1 (as a job time limit would): no record, a checkpoint
    args = _args(tmp_path, "table2", "--rows", "resnet", "--seeds", "1")
    assert main([*args, "--set", "stop_after_epochs=1"]) == 1
    (run_dir,) = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert (run_dir / "last.pth").exists() and not (run_dir / "record.json").exists()
    assert _results(tmp_path, "table2")["records"] == []
    assert main(args) == 0
    log = (run_dir.parent / f"{run_dir.name}.log").read_text()
    assert "resuming after epoch 1" in log
    (rec,) = _results(tmp_path, "table2")["records"]
    assert [h["epoch"] for h in rec["history"]] == [1, 2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["table9"], "unknown grid 'table9'"),
        (["table2", "--rows", "cbam"], "unknown row(s) ['cbam']"),
        (["table2", "--seeds-for", "nope=3"], "unknown row 'nope'"),
        (["table2", "--recipe", "cifar100_paper"], "needs --data-dir"),
        (["table2", "--set", "epochs=0"], "epochs must be a positive integer"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "runs").exists()


def test_data_folder_without_the_recipes_data(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["table2", "--recipe", "cifar100_paper", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data-dir") and "cifar100" in err


def test_results_of_another_budget_or_grid_are_kept(tmp_path, capsys):
    path = tmp_path / "out" / "table2" / "results.json"
    path.parent.mkdir(parents=True)
    other = {"format": 1, "grid": "table2", "budget": {"epochs": 99}, "budget_id": "0000000000", "records": [{"x": 1}]}
    path.write_text(json.dumps(other))
    assert main(_args(tmp_path, "table2", "--rows", "resnet", "--seeds", "1")) == 2
    assert "another budget" in capsys.readouterr().err and "['epochs'" not in ""
    assert json.loads(path.read_text()) == other  # untouched
    path.write_text(json.dumps(dict(other, grid="table5")))
    assert main(_args(tmp_path, "table2", "--rows", "resnet", "--seeds", "1")) == 2
    assert "holds grid 'table5'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_gradcam_overlap_scores_by_hand():
    from torch_impl.experiments.gradcam import per_image_scores

    cam = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.0, 0.0]]])
    masks = np.array([[[True, False], [False, False]], [[False, True], [False, False]]])
    s = per_image_scores(cam, masks)
    # image 0: all mass inside, peak inside, highlight == mask; image 1: half the mass inside, the
    # (first) peak outside, highlight {0, 1} vs mask {1}: IoU 1/2
    assert s["energy_in_object"] == pytest.approx([1.0, 0.5])
    assert s["pointing_game"] == pytest.approx([1.0, 0.0])
    assert s["iou"] == pytest.approx([1.0, 0.5])
    assert s["highlight_area"] == pytest.approx([0.25, 0.5])  # the paper's claim: the size of the highlight


def test_queue_order_seed_major_with_priority_rows(tmp_path):
    from torch_impl.experiments.runner import plan

    grids = [(g, list(g.rows)) for g in (get_grid("table1"), get_grid("table6"))]
    seeds = {"resnet": 4}.get
    queue = plan(grids, lambda k: seeds(k, 2), "resnet20_cifar", tmp_path)
    keys = [r.key for r in queue]
    assert len(keys) == len(set(keys)) == 7 * 2 + 2  # 7 networks x 2 seeds, shared once; resnet seeds 2, 3
    assert [r.seed for r in queue] == sorted(r.seed for r in queue)  # seed-major: every row's seed 0 first
    assert keys[-2:] == ["resnet20_cifar.seed2", "resnet20_cifar.seed3"]
    first = plan(grids, lambda k: seeds(k, 2), "resnet20_cifar", tmp_path, ({"aff3d"}, 2))
    assert [r.key for r in first][:2] == ["aff3d_resnet20_cifar.seed0", "aff3d_resnet20_cifar.seed1"]
    # an interrupted run (checkpoint, no record) goes before everything
    (tmp_path / "eca_resnet20_cifar.seed1").mkdir()
    (tmp_path / "eca_resnet20_cifar.seed1" / "last.pth").write_bytes(b"")
    assert plan(grids, lambda k: seeds(k, 2), "resnet20_cifar", tmp_path)[0].key == "eca_resnet20_cifar.seed1"


def test_shapes_cache_returns_the_same_pixels_and_is_not_aliased(monkeypatch):
    from torch_impl.data import shapes

    plain = shapes.ShapesClassification("val", size=16, length=4)
    cached = shapes.ShapesClassification("val", size=16, length=4, cache=True)
    calls = []
    render = shapes.render_classification_sample
    monkeypatch.setattr(shapes, "render_classification_sample", lambda *a: calls.append(a) or render(*a))
    first = cached.sample(1)
    first[0][:] = 0  # a caller writing into its copy must not change the cached image
    again = cached.sample(-3)  # index -3 is sample 1
    reference = plain.sample(1)
    assert len(calls) == 2  # rendered once by the cache, once by the uncached data set
    assert np.array_equal(again[0], reference[0]) and again[1] == reference[1]
    assert np.array_equal(again[2], reference[2])
    monkeypatch.setattr(shapes.ShapesClassification, "cache_rendered", True)
    assert shapes.ShapesClassification("train", size=16, length=2)._cache == {}  # the class-wide switch
    assert shapes.ShapesClassification("train", size=16, length=2, cache=False)._cache is None


def test_the_results_page_shows_the_committed_summary_verbatim():
    """docs/results.md's table of trained results is the one the runner writes from the committed results."""
    from pathlib import Path

    from torch_impl.experiments.report import summary_table

    root = Path(__file__).resolve().parents[1]
    table = summary_table(root / "docs" / "results" / "experiments")
    assert table.count("\n") > 10  # every grid row is there
    assert table in (root / "docs" / "results.md").read_text()
    assert (root / "docs" / "results" / "experiments" / "summary.md").read_text() == table


def test_a_record_names_its_gpu_and_a_copy_without_git_its_commit(monkeypatch):
    """A run on a lent GPU machine trains in a copy of the tree without .git: GIT_COMMIT names the code."""
    import subprocess

    import torch

    from torch_impl.experiments import store

    assert "gpu" not in store.machine_info("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Some GPU")
    assert store.machine_info("cuda")["gpu"] == "Some GPU"
    monkeypatch.setattr(store.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no git")))
    monkeypatch.delenv("GIT_COMMIT", raising=False)
    assert "git_commit" not in store.versions()
    monkeypatch.setenv("GIT_COMMIT", "abc1234")
    assert store.versions()["git_commit"] == "abc1234"
    monkeypatch.setattr(store.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "fedcba9\n", ""))
    assert store.versions()["git_commit"] == "fedcba9"  # the checkout's own commit comes first
