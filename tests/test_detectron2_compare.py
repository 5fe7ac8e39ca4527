"""The detection comparison (``python -m detectron2_ext.compare``): configs, records, report, command line.

Everything but the last test runs without detectron2: the runner, the report and the metrics parser
read files. The last one trains a few iterations of every backbone with detectron2.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detectron2_ext.compare import BACKBONES, DETECTORS, budget_of_config, config_path
from detectron2_ext.compare import __main__ as cli
from detectron2_ext.compare.child import WALL_TIME, AttemptClock, measured
from detectron2_ext.compare.report import (PAGE_END, contrasts, paper_ap, render_markdown, statistics, summary_table,
                                          update_readme, update_results_page)
from detectron2_ext.config import attention_choices
from torch_impl.zoo.paper import TABLE8, TABLE9


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_a_detectors_configs_differ_in_the_attention_only(detector):
    budgets = {b: budget_of_config(detector, b) for b in BACKBONES}
    assert all(budget == budgets["R_50"] for budget in budgets.values())
    for backbone, (_, attention) in BACKBONES.items():
        text = config_path(detector, backbone).read_text()
        assert f'ATTENTION: "{attention}"' in text and attention in attention_choices()
    # the budget does change with what a run learns from
    assert budget_of_config(detector, "R_50", ["SOLVER.MAX_ITER", "10"]) != budgets["R_50"]
    assert budget_of_config(detector, "R_50", ["SOLVER.MAX_ITER", "10"])["SOLVER"]["MAX_ITER"] == 10
    assert budget_of_config(detector, "R_50", ["SOLVER.CHECKPOINT_PERIOD", "7"]) == budgets["R_50"]  # saving only


def test_paper_numbers_are_the_printed_ones():
    assert paper_ap(TABLE8, "Mask R-CNN", "3D-AFF-ResNet-50")["AP50"] == 61.4
    assert paper_ap(TABLE8, "Faster R-CNN", "ResNet-50")["APl"] == 48.6
    assert paper_ap(TABLE9, "Mask R-CNN", "SE-ResNet-50") == {"AP": 35.6, "AP50": 57.6, "AP75": 37.8}


def _metrics_lines(max_iter: int, final: bool) -> list[dict]:
    lines = [{"iteration": i, "total_loss": 2.0 - i / max_iter, "loss_cls": 0.5, "loss_mask": 0.4, "lr": 0.02}
             for i in range(19, max_iter, 20)]  # fmt: skip
    evals = [max_iter // 2 - 1] + ([max_iter] if final else [])  # as detectron2 logs them
    for it in evals:
        box = {f"bbox/{k}": v for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), (40, 60.0, 45, 30, 50, math.nan))}
        segm = {f"segm/{k}": v for k, v in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), (41, 62, 46, 31, 51, math.nan))}
        lines.append({"iteration": it, **box, **segm})
    return lines


def _write_run(run_dir: Path, max_iter: int = 100, final: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = _metrics_lines(max_iter, final)
    (run_dir / "metrics.json").write_text("\n".join(json.dumps(m) for m in lines) + "\n")


def test_measured_reads_detectron2s_metrics(tmp_path):
    _write_run(tmp_path, max_iter=100)
    m = measured(tmp_path, 100, mask_on=True)
    assert m["iterations"] == 100
    assert m["box"] == {"AP": 40, "AP50": 60.0, "AP75": 45, "APs": 30, "APm": 50, "APl": None}  # NaN: no large object
    assert m["mask"]["AP50"] == 62
    assert [e["iteration"] for e in m["evaluations"]] == [50, 100]
    assert m["losses"][0] == {"iteration": 20, "total_loss": 2.0 - 19 / 100, "loss_cls": 0.5, "loss_mask": 0.4, "lr": 0.02}
    assert "mask" not in measured(tmp_path, 100, mask_on=False)


def test_a_resumed_runs_repeated_iterations_count_once_from_the_attempt_that_went_on(tmp_path):
    """Killed at iteration 60 after a checkpoint at 40, resumed: detectron2 appends iterations 40-60 again."""
    lines = _metrics_lines(100, final=True)
    killed = [{**m, "total_loss": 9.0} for m in lines if "total_loss" in m and 39 <= m["iteration"] <= 59]
    cut = next(i for i, m in enumerate(lines) if m["iteration"] == 39)
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(m) for m in lines[:cut] + killed + lines[cut:]) + "\n")
    m = measured(tmp_path, 100, mask_on=True)
    its = [p["iteration"] for p in m["losses"]]
    assert its == sorted(set(its)) == list(range(20, 101, 20))
    assert 9.0 not in [p["total_loss"] for p in m["losses"]]  # the resumed attempt's values
    assert [e["iteration"] for e in m["evaluations"]] == [50, 100]


def test_a_run_without_its_final_evaluation_has_no_record(tmp_path):
    _write_run(tmp_path, max_iter=100, final=False)
    assert measured(tmp_path, 100, mask_on=True) is None
    assert measured(tmp_path / "missing", 100, mask_on=True) is None


def test_a_resumed_runs_wall_time_sums_its_attempts(tmp_path):
    with AttemptClock(tmp_path) as first:
        time.sleep(0.05)
    with AttemptClock(tmp_path) as second:
        time.sleep(0.05)
    assert len(first.attempts) == 1 and len(second.attempts) == 2
    assert second.attempts[0] == first.attempts[0] and min(second.attempts) >= 0.05
    assert json.loads((tmp_path / WALL_TIME).read_text()) == second.attempts


def test_an_attempt_ended_by_sigkill_keeps_its_time(tmp_path):
    # the runner stops its children with SIGTERM, a session's end may SIGKILL them: no `finally` runs then
    code = ("import sys, time; from pathlib import Path; from detectron2_ext.compare.child import AttemptClock\n"
            "with AttemptClock(Path(sys.argv[1]), every=0.05):\n    print('started', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (kept,) = json.loads((tmp_path / WALL_TIME).read_text())
    assert 0.1 <= kept < 60  # written by the beat after the start (0.5 s in), not only at the start (0 s)
    with AttemptClock(tmp_path) as resumed:
        pass
    assert resumed.attempts[0] == kept and len(resumed.attempts) == 2


def _record(backbone: str, seed: int, ap50: float) -> dict:
    label, attention = BACKBONES[backbone]
    return {
        "detector": "Mask R-CNN", "detector_key": "mask_rcnn", "backbone": label, "backbone_key": backbone,
        "attention": attention, "seed": seed, "run_key": f"mask_rcnn_{backbone}.seed{seed}", "budget_id": "x",
        "iterations": 100, "box": {"AP": 30.0, "AP50": ap50, "AP75": 31.0, "APs": 20.0, "APm": 40.0, "APl": None},
        "mask": {"AP": 32.0, "AP50": ap50 + 1, "AP75": 33.0, "APs": 21.0, "APm": 41.0, "APl": None},
        "wall_time_s": 600.0, "machine": {"cpu": "test CPU", "cores": 2}, "threads": 1, "versions": {"torch": "x"},
    }  # fmt: skip


def test_report_pairs_each_backbone_with_resnet50_over_the_same_seeds():
    data = {"budget_id": "x", "records": [
        _record("R_50", 0, 50.0), _record("R_50", 1, 54.0),
        _record("AFF3D_R_50", 0, 53.0), _record("AFF3D_R_50", 1, 55.0), _record("AFF3D_R_50", 2, 90.0),
    ]}  # fmt: skip
    rows = {s["backbone"]: s for s in statistics(data, "box", "AP50")}
    assert rows["R_50"]["summary"].mean == 52.0 and rows["R_50"]["difference"] is None
    aff = rows["AFF3D_R_50"]
    assert aff["summary"].n == 3 and aff["summary"].mean == pytest.approx(66.0)
    assert aff["difference"].n == 2 and aff["difference"].mean == pytest.approx(2.0)  # seed 2 has no partner
    # differences 3 and 1: std sqrt(2), 95 % t (1 dof) 12.706 * sqrt(2) / sqrt(2)
    assert aff["difference"].half_width == pytest.approx(12.7062, abs=1e-3)
    text = render_markdown(data)
    assert "| Mask R-CNN | 3D-AFF-ResNet-50 | 3 | 30.0 ± 0.0 [30.0, 30.0] | 66.0 ± 20.8 [53.0, 90.0] |" in text
    # 2 seeds: the interval is marked as resting on 1 degree of freedom; no SE run, so no pairing with SE
    assert "+2.0 [-10.7, +14.7]† | – | 40.3, 61.4, 43.9, 24.0, 43.7, 52.4 |" in text  # Table 8's COCO row beside
    assert "## Mask AP (Table 9's columns)" in text and "36.3, 58.1, 38.5" in text
    assert "| Mask R-CNN | ResNet-50 | 2 |" in text and "baseline" in text
    # a backbone whose ResNet-50 has not run: no pairing, and not the baseline either
    only_se = render_markdown({"budget_id": "x", "records": [_record("SE_R_50", 0, 50.0)]})
    assert "| Mask R-CNN | SE-ResNet-50 | 1 | 30.0 | 50.0 | 31.0 | 20.0 | 40.0 | – | – | baseline |" in only_se
    # runs from several sessions' machines: each machine named, with its count of runs
    data["records"][0]["machine"] = {"cpu": "other CPU", "cores": 2}
    assert "machines: other CPU (2 cores), torch x: 1 run; test CPU (2 cores), torch x: 4 runs." in render_markdown(data)
    # a run resumed once: its wall time is summed over the two attempts, and the report says so
    data["records"][1].update(wall_time_s=1500.0, attempts=2)
    text = render_markdown(data)
    assert "| mask_rcnn_R_50.seed1 | 30.0 | 54.0 | 32.0 | 55.0 | 100 | 25.0 min (2 attempts) | none |" in text
    assert "| mask_rcnn_R_50.seed0 | 30.0 | 50.0 | 32.0 | 51.0 | 100 | 10.0 min | none |" in text


def test_report_pairs_3d_aff_with_se_too():
    data = {"budget_id": "x", "records": [
        _record(b, seed, ap) for b, aps in (("R_50", (50, 52, 51)), ("SE_R_50", (55, 56, 58)), ("AFF3D_R_50", (57, 57, 60)))
        for seed, ap in enumerate(aps)
    ]}  # fmt: skip
    rows = {s["backbone"]: s for s in statistics(data, "box", "AP50")}
    aff = rows["AFF3D_R_50"]
    assert aff["difference_se"].n == 3 and aff["difference_se"].mean == pytest.approx(5 / 3)  # 2, 1, 2
    assert rows["SE_R_50"]["difference_se"] is None and rows["R_50"]["difference_se"].mean == pytest.approx(-16 / 3)
    text = render_markdown(data)
    # 3 seeds each: 3D-AFF - ResNet-50 is 7, 5, 9 and 3D-AFF - SE 2, 1, 2 (both intervals above 0)
    verdicts = {(c["row"], c["baseline"]): c["verdict"] for c in contrasts(data, "box")}
    assert verdicts == {("AFF3D_R_50", "R_50"): "higher", ("AFF3D_R_50", "SE_R_50"): "higher",
                        ("SE_R_50", "R_50"): "higher"}  # fmt: skip
    assert "| Mask R-CNN | 3D-AFF-ResNet-50 − SE-ResNet-50 | 3 | +1.7 [+0.2, +3.1] | higher |" in text
    spans = {"budget_id": "x", "records": [_record("R_50", s, 50 + v) for s, v in enumerate((0, 2, 1))]
             + [_record("AFF3D_R_50", s, 50 + v) for s, v in enumerate((1, 0, 3))]}  # 1, -2, 2: spans 0 and the margin
    assert [c["verdict"] for c in contrasts(spans, "box")] == ["inconclusive"]
    same = {"budget_id": "x", "records": [_record(b, s, 50 + 0.1 * s + (b == "SE_R_50") * 0.2 * (s % 2))
                                          for b in ("R_50", "SE_R_50") for s in range(4)]}  # fmt: skip
    assert contrasts(same, "box")[0]["verdict"] == "equivalent within ±1"  # SE - R-50: 0, .2, 0, .2
    one = {"budget_id": "x", "records": [_record("R_50", 0, 50), _record("AFF3D_R_50", 0, 52), _record("AFF3D_R_50", 1, 52)]}
    assert [c["verdict"] for c in contrasts(one, "box")] == ["one seed: no interval"]
    se_cell = f"+1.7 [{aff['difference_se'].low:+.1f}, {aff['difference_se'].high:+.1f}] |"
    assert se_cell in text and "†" not in se_cell  # 3 seeds: 2 degrees of freedom, no mark
    assert "| Mask R-CNN | SE-ResNet-50 | 3 |" in text and "| baseline | 39.5," in text


def test_contrasts_are_given_for_ap_as_well_as_ap50():
    # AP50 equal to the second decimal, AP (IoU 0.5-0.95) 2-4 points apart: only the AP contrast is "higher"
    records = [_record(b, s, 99.0 + 0.1 * (s % 2)) for b in ("R_50", "AFF3D_R_50") for s in range(3)]
    data = {"budget_id": "x", "records": records}
    for r, extra in zip(data["records"][3:], (2.0, 3.0, 4.0)):
        r["box"]["AP"] += extra
    (ap50,) = contrasts(data, "box", "AP50")
    (ap,) = contrasts(data, "box", "AP")
    assert ap50["verdict"] == "equivalent within ±1" and ap50["difference"].mean == pytest.approx(0.0)
    assert ap["verdict"] == "higher" and ap["difference"].mean == pytest.approx(3.0)
    text = render_markdown(data)
    assert "## What the intervals support (AP50 and AP, paired by seed)" in text
    box_ap = text[text.index("Box AP:"):text.index("Mask AP50:")]
    assert "| Mask R-CNN | 3D-AFF-ResNet-50 − ResNet-50 | 3 | +3.0 [+0.5, +5.5] | higher |" in box_ap
    assert "Mask AP:" in text and text.index("Mask AP50:") < text.index("Mask AP:") < text.index("## Runs")


def test_readmes_summary_puts_faster_rcnn_first_and_pairs_box_ap():
    records = [_record(b, s, 90.0) for b in ("R_50", "AFF3D_R_50") for s in range(2)]
    faster = json.loads(json.dumps(records[0]))
    faster.update(detector="Faster R-CNN", detector_key="faster_rcnn", run_key="faster_rcnn_R_50.seed0")
    del faster["mask"]
    records[2]["box"]["AP"], records[3]["box"]["AP"] = 31.0, 33.0  # 3D-AFF - ResNet-50 box AP: +1, +3
    lines = summary_table({"budget_id": "x", "records": [*records, faster]}).splitlines()
    assert lines[2] == "| Faster R-CNN | ResNet-50 | 1 | 30.0 | 90.0 | – | – | baseline | – |"
    assert lines[3] == "| Mask R-CNN | ResNet-50 | 2 | 30.0 | 90.0 | 32.0 | 91.0 | baseline | – |"
    aff = "| Mask R-CNN | 3D-AFF-ResNet-50 | 2 | 32.0 | 90.0 | 32.0 | 91.0 | +2.0 [-10.7, +14.7]† | – |"
    assert lines[4] == aff


def test_schedule_scale_scales_iterations_steps_evaluations_and_keeps_the_warmup():
    from detectron2_ext.compare.configs import load_config_chain, schedule_opts

    base = budget_of_config("mask_rcnn", "R_50")
    half = budget_of_config("mask_rcnn", "R_50", schedule_opts("mask_rcnn", 0.5))
    assert base["SOLVER"]["MAX_ITER"] == 2 * half["SOLVER"]["MAX_ITER"]
    steps = lambda b: [int(x) for x in b["SOLVER"]["STEPS"].strip("()").split(",") if x.strip()]  # noqa: E731
    assert steps(base) == [2 * s for s in steps(half)]
    assert base["TEST"]["EVAL_PERIOD"] == 2 * half["TEST"]["EVAL_PERIOD"]
    assert half["SOLVER"]["WARMUP_ITERS"] == base["SOLVER"]["WARMUP_ITERS"]
    assert budget_of_config("mask_rcnn", "R_50", schedule_opts("mask_rcnn", 1.0)) == base
    # a longer run checkpoints no less often than the config says
    double = dict(zip(*[iter(schedule_opts("mask_rcnn", 2.0))] * 2))
    assert int(double["SOLVER.CHECKPOINT_PERIOD"]) == load_config_chain(config_path("mask_rcnn", "R_50"))["SOLVER"]["CHECKPOINT_PERIOD"]


def test_results_go_to_a_folder_named_by_the_schedule_unless_told_otherwise():
    from detectron2_ext.compare.configs import COMPARISON, default_out, load_config_chain, schedule_opts

    full = load_config_chain(config_path("faster_rcnn", "R_50"))["SOLVER"]["MAX_ITER"]
    assert default_out("faster_rcnn", []) == Path(COMPARISON) / f"i{full}"
    assert default_out("mask_rcnn", schedule_opts("mask_rcnn", 0.5)) == Path(COMPARISON) / f"i{full // 2}"
    assert default_out("faster_rcnn", ["SOLVER.MAX_ITER", "10"]).name == "i10"


def test_a_bad_schedule_scale_is_an_error(tmp_path, capsys):
    rc, out = _run(["--out", str(tmp_path), "--dry-run", "--schedule-scale", "0"], capsys)
    assert rc == 2 and out.startswith("error: --schedule-scale must be positive, got 0.0")


def _schedule_records(ap50_by_backbone: dict[str, list[float]], iterations: int) -> dict:
    records = []
    for backbone, aps in ap50_by_backbone.items():
        for seed, ap in enumerate(aps):
            r = _record(backbone, seed, ap)
            r.update(iterations=iterations, detector_key="faster_rcnn", detector="Faster R-CNN",
                     evaluations=[{"iteration": iterations // 2, "bbox/AP50": ap - 5}, {"iteration": iterations, "bbox/AP50": ap}])  # fmt: skip
            records.append(r)
    return {"budget_id": str(iterations), "records": records}


def test_schedules_report_says_whether_halving_moves_the_means_by_less_than_a_point(tmp_path):
    from detectron2_ext.compare import schedules

    for iterations, aps in ((300, {"R_50": [30], "SE_R_50": [31], "AFF3D_R_50": [32]}),
                            (600, {"R_50": [40, 42], "SE_R_50": [41, 43], "AFF3D_R_50": [44, 45]}),
                            (1200, {"R_50": [41.5, 41.8], "SE_R_50": [42.5, 42], "AFF3D_R_50": [45, 45.5]}),  # moves < 1
                            (2400, {"R_50": [45, 47]})):  # moves R-50 by 3.85  # fmt: skip
        (tmp_path / f"i{iterations}").mkdir()
        (tmp_path / f"i{iterations}" / "results.json").write_text(json.dumps(_schedule_records(aps, iterations)))
    (tmp_path / "i4800").mkdir()  # a schedule not run yet: left out
    loaded = schedules.load_schedules(tmp_path)
    assert list(loaded) == [300, 600, 1200, 2400]
    rows = schedules.analyse(loaded)
    assert schedules.converged(rows, 1200, "faster_rcnn") == "yes"
    assert schedules.converged(rows, 2400, "faster_rcnn") == "no"
    assert schedules.converged(rows, 300, "faster_rcnn") is None  # nothing at 150
    assert schedules.converged(rows, 600, "faster_rcnn") == "no"  # R-50 moved 11 points from 1 seed at 300
    # every move under a point, but 1 seed at half and SE missing: not shown yet
    few = schedules.analyse({600: _schedule_records({"R_50": [40]}, 600)["records"],
                             1200: _schedule_records({"R_50": [40.5, 41], "AFF3D_R_50": [45]}, 1200)["records"]})
    assert schedules.converged(few, 1200, "faster_rcnn") == "so far"
    assert schedules.missing_coverage(schedules.measured_at_half(few, 1200, "faster_rcnn")) == [
        "ResNet-50", "SE-ResNet-50", "3D-AFF-ResNet-50"]  # fmt: skip
    r = next(r for r in rows if r["iterations"] == 1200 and r["backbone"] == "R_50")
    assert r["half_mean"] == 41.0 and r["paired_change"].n == 2 and r["paired_change"].mean == pytest.approx(0.65)
    assert schedules.main([str(tmp_path)]) == 0
    text = (tmp_path / "schedules.md").read_text()
    assert "| Faster R-CNN | 1200 | ResNet-50 | 2 | 41.6 ± 0.2 | +0.6 (half: 2 seeds) |" in text
    assert "+0.6 [-10.2, +11.5]† | yes |" in text  # 2 seeds: marked as 1 degree of freedom
    assert ("- Faster R-CNN, 1200 iterations: halving moves every backbone's mean box AP50 by less than 1 point, "
            "with at least 2 seeds of each of the paper's three: long enough.") in text
    assert "- Faster R-CNN, 2400 iterations: halving moves at least one backbone's mean box AP50 by 1 point or more: not long enough." in text
    assert (tmp_path / "schedules.png").stat().st_size > 0


def test_schedules_report_of_a_folder_without_comparisons_is_an_error(tmp_path, capsys):
    from detectron2_ext.compare import schedules

    assert schedules.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: no i<iterations>/results.json with finished runs in")
    assert schedules.main([str(tmp_path / "missing")]) == 2
    assert "(not a folder)" in capsys.readouterr().err


def _run(args: list[str], capsys) -> tuple[int, str]:
    rc = cli.main(args)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_bad_names_and_overrides_are_errors(tmp_path, capsys):
    rc, out = _run(["--backbones", "R_50,VGG", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "error: unknown backbone ['VGG']: expected some of ['R_50', 'SE_R_50', 'CBAM_R_50', 'ECA_R_50', 'AFF3D_R_50']" in out
    rc, out = _run(["--detectors", "retinanet", "--out", str(tmp_path)], capsys)
    assert rc == 2 and "error: unknown detector ['retinanet']" in out
    rc, out = _run(["--out", str(tmp_path), "SOLVER.MAX_ITER"], capsys)
    assert rc == 2 and "KEY VALUE pairs" in out
    rc, out = _run(["--out", str(tmp_path / "empty"), "--report-only"], capsys)
    assert rc == 2 and "error: no finished runs in" in out and "nothing to report" in out


def test_training_without_detectron2_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    rc, out = _run(["--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")], capsys)
    assert rc == 2 and "error: training needs detectron2, which is not installed" in out
    assert not (tmp_path / "runs").exists()


def test_finished_runs_are_merged_and_another_budget_is_refused(tmp_path, capsys):
    out, runs = tmp_path / "out", tmp_path / "runs"
    rc, text = _run(["--out", str(out), "--runs", str(runs), "--dry-run", "--seeds", "2"], capsys)
    commands = [line for line in text.splitlines() if "detectron2_ext.compare.child" in line]
    assert rc == 0 and len(commands) == 10  # 5 backbones x 2 seeds, nothing trained yet
    spec_path = Path(commands[0].split()[-1])
    spec = json.loads(spec_path.read_text())
    assert spec["config_file"].endswith("configs/shapes/mask_rcnn_R_50_FPN_shapes.yaml") and spec["seed"] == 0
    # without --seeds, each backbone gets its planned seeds: 3 for ResNet-50, SE and 3D-AFF, 2 for CBAM and ECA
    rc, text = _run(["--out", str(tmp_path / "plan"), "--runs", str(runs), "--dry-run", "--detectors",
                     "faster_rcnn,mask_rcnn"], capsys)  # fmt: skip
    planned = [line.split("/")[-1] for line in text.splitlines() if "compare.child" in line]
    assert rc == 0 and len(planned) == 2 * 13 and "faster_rcnn_AFF3D_R_50.seed2.spec.json" in planned
    assert not any("CBAM_R_50.seed2" in p or "ECA_R_50.seed2" in p for p in planned)
    # --first-seed leaves the lower seeds out: one seed of one backbone, for both detectors
    rc, text = _run(["--out", str(tmp_path / "plan"), "--runs", str(runs), "--dry-run", "--detectors",
                     "faster_rcnn,mask_rcnn", "--backbones", "SE_R_50", "--seeds", "3", "--first-seed", "2"], capsys)
    planned = [line.split("/")[-1] for line in text.splitlines() if "compare.child" in line]
    assert rc == 0 and planned == ["faster_rcnn_SE_R_50.seed2.spec.json", "mask_rcnn_SE_R_50.seed2.spec.json"]
    rc, text = _run(["--out", str(tmp_path / "plan"), "--runs", str(runs), "--dry-run", "--first-seed", "-1"], capsys)
    assert rc == 2 and "error: --first-seed must be at least 0, got -1" in text
    rc, text = _run(["--out", str(tmp_path / "plan"), "--runs", str(runs), "--dry-run", "--seeds", "2",
                     "--first-seed", "2"], capsys)  # fmt: skip
    assert rc == 2 and "error: --first-seed 2 leaves no seed to run: the backbones have seeds 0 to 1" in text
    # a run that finished before (its record.json) is merged without training it again
    run_dir = Path(spec["run_dir"])
    measured_part = {k: v for k, v in _record("R_50", 0, 51.0).items() if k in ("iterations", "box", "mask", "wall_time_s",
                                                                            "machine", "threads", "versions")}  # fmt: skip
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps(measured_part))
    rc, text = _run(["--out", str(out), "--runs", str(runs), "--dry-run", "--seeds", "2"], capsys)
    assert rc == 0 and len([line for line in text.splitlines() if "compare.child" in line]) == 9
    results = json.loads((out / "results.json").read_text())
    assert [r["run_key"] for r in results["records"]] == ["mask_rcnn_R_50.seed0"]
    assert results["records"][0]["box"]["AP50"] == 51.0 and (out / "results.md").exists()
    # the same folder with another budget: refused, the results file untouched
    before = (out / "results.json").read_bytes()
    rc, text = _run(["--out", str(out), "--runs", str(runs), "--dry-run", "SOLVER.MAX_ITER", "10"], capsys)
    assert rc == 2 and text.startswith("error: ") and "another budget" in text
    assert (out / "results.json").read_bytes() == before
    # its report is rewritten from its own records, whatever budget today's configs give
    (out / "results.md").unlink()
    rc, text = _run(["--out", str(out), "--report-only", "SOLVER.MAX_ITER", "10"], capsys)
    assert rc == 0 and "| mask_rcnn_R_50.seed0 | " in (out / "results.md").read_text()


def test_two_runners_on_one_folder_keep_each_others_runs(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    budget = {d: budget_of_config(d, "R_50") for d in DETECTORS}
    bid = cli.budget_id(budget)
    measured_part = {k: v for k, v in _record("R_50", 1, 51.0).items() if k in ("iterations", "box", "mask")}
    # both runners load the (empty) folder when they start
    first, second = (cli.load_results(out / "results.json", cli.GRID, budget) for _ in range(2))
    cli.on_done(first, cli.DetectionRun("mask_rcnn", "SE_R_50", 1, runs), measured_part, bid, out)
    # the second finishes later, with the in-memory records it loaded before the first's run was added
    cli.on_done(second, cli.DetectionRun("faster_rcnn", "R_50", 1, runs), measured_part, bid, out)
    keys = [r["run_key"] for r in json.loads((out / "results.json").read_text())["records"]]
    assert keys == ["mask_rcnn_SE_R_50.seed1", "faster_rcnn_R_50.seed1"]  # sorted: detector, backbone, seed
    assert [r["run_key"] for r in second["records"]] == keys  # and its report shows both
    # a run finished again replaces its record instead of adding a second one
    cli.on_done(first, cli.DetectionRun("mask_rcnn", "SE_R_50", 1, runs), {**measured_part, "iterations": 7}, bid, out)
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["iterations"] for r in records] == [7, 100]


TINY_PRETRAINING = ["PRETRAIN.EPOCHS", "1", "PRETRAIN.IMAGES", "8", "PRETRAIN.VAL_IMAGES", "4", "PRETRAIN.IMAGE_SIZE", "32",
                    "PRETRAIN.BATCH_SIZE", "4"]  # fmt: skip


@pytest.mark.detectron2
@pytest.mark.slow
def test_a_tiny_comparison_trains_every_backbone(tmp_path, capsys):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
    out, runs = tmp_path / "out", tmp_path / "runs"
    tiny = ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "0",
            "DATASETS.SHAPES.NUM_TRAIN", "8", "DATASETS.SHAPES.NUM_VAL", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
            *TINY_PRETRAINING]  # fmt: skip
    rc, text = _run(["--out", str(out), "--runs", str(runs), "--seeds", "1", *tiny], capsys)
    assert rc == 0, text
    results = json.loads((out / "results.json").read_text())
    assert [r["backbone_key"] for r in results["records"]] == list(BACKBONES)
    for r in results["records"]:
        assert r["iterations"] == 4 and set(r["box"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert r["losses"] and r["wall_time_s"] > 0 and r["threads"] == 1
    assert set(json.loads((out / "predictions.json").read_text())) == {f"mask_rcnn_{b}.seed0" for b in BACKBONES}
    assert "| Mask R-CNN | 3D-AFF-ResNet-50 | 1 |" in (out / "results.md").read_text()


@pytest.mark.detectron2
def test_both_detectors_of_a_backbone_and_seed_share_one_pretraining(tmp_path, capsys):
    pytest.importorskip("detectron2", reason="detectron2 is not installed (see detectron2_ext/README.md)")
    out, runs = tmp_path / "out", tmp_path / "runs"
    tiny = ["SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "0",
            "DATASETS.SHAPES.NUM_TRAIN", "4", "DATASETS.SHAPES.NUM_VAL", "2", *TINY_PRETRAINING]  # fmt: skip
    argv = ["--detectors", "faster_rcnn,mask_rcnn", "--backbones", "R_50", "--seeds", "1", "--jobs", "2"]
    rc, text = _run(["--out", str(out), "--runs", str(runs), *argv, *tiny], capsys)
    assert rc == 0, text
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["detector_key"] for r in records] == ["mask_rcnn", "faster_rcnn"]
    pretraining = [r["pretrain"] for r in records]
    assert pretraining[0]["folder"] == pretraining[1]["folder"] and sorted(p["trained_here"] for p in pretraining) == [False, True]
    assert [p.name for p in (runs / "pretrain").iterdir()] == [pretraining[0]["folder"]]
    budget = json.loads((out / "results.json").read_text())["budget"]  # where it is kept is not what runs learn
    assert budget["faster_rcnn"]["PRETRAIN"]["EPOCHS"] == 1 and "CACHE_DIR" not in json.dumps(budget)


REPO = Path(__file__).resolve().parents[1]


def _committed() -> Path:
    """The comparison at the adopted config's full schedule (where ``compare`` writes by default)."""
    from detectron2_ext.compare.configs import default_out

    return REPO / default_out("faster_rcnn", [])


def _section_tables(text: str) -> list[str]:
    """The table rows of results.md's "Box AP" and "Mask AP" sections."""
    rows, keep = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            keep = line.startswith(("## Box AP", "## Mask AP"))
        elif keep and line.startswith("|"):
            rows.append(line)
    return rows


def test_committed_report_is_the_report_of_the_committed_records():
    committed = _committed()
    data = json.loads((committed / "results.json").read_text())
    assert (committed / "results.md").read_text() == render_markdown(data)
    assert {r["backbone_key"] for r in data["records"]} <= set(BACKBONES)
    assert all(r["iterations"] == int(committed.name[1:]) for r in data["records"])
    # detections kept only of seed-0 runs this comparison trained (records carried over from trials have none)
    predictions = json.loads((committed / "predictions.json").read_text())
    assert predictions and set(predictions) <= {r["run_key"] for r in data["records"] if r["seed"] == 0}


def test_the_results_page_shows_the_committed_detection_tables(tmp_path):
    data = json.loads((_committed() / "results.json").read_text())
    page = (REPO / "docs" / "results.md").read_text()
    rows = _section_tables((_committed() / "results.md").read_text())
    assert len(rows) >= 2 + 1 and all(row in page for row in rows), [r for r in rows if r not in page][:2]
    # the page's block is the report's, as the runner writes it (update_results_page leaves it unchanged)
    copy = tmp_path / "results.md"
    copy.write_text(page)
    assert not update_results_page(data, copy), "docs/results.md: rerun python -m detectron2_ext.compare --report-only"
    # and a page whose block lost its markers is an error, not a silent skip
    copy.write_text(page.replace(PAGE_END, ""))
    with pytest.raises(ValueError, match="markers"):
        update_results_page(data, copy)


def test_readme_shows_the_committed_detection_summary(tmp_path):
    data = json.loads((_committed() / "results.json").read_text())
    copy = tmp_path / "README.md"
    copy.write_text((REPO / "README.md").read_text())
    assert not update_readme(data, copy), "README.md: rerun python -m detectron2_ext.compare --report-only"
    assert summary_table(data) in copy.read_text()
