"""The speed table of docs/speed.md is what ``report.speed_table`` renders from the committed section files,
and each row says truthfully whether it measured the code checked out here.

The committed figures need not match the current code (the fingerprint changes with every edit of the
measured sources); only their labels must be right."""

from __future__ import annotations

import json
import shutil

from torch_impl.benchmark import provenance, report


def test_the_committed_speed_table_is_the_rendered_one():
    assert report.speed_doc_table() == report.speed_table(), (
        "docs/speed.md's table differs from the committed section files: run "
        "`python -m torch_impl.benchmark --report-only` and commit docs/speed.md")


def test_each_row_is_labelled_by_its_files_fingerprint():
    sections = report.load_sections(report.RESULTS / "benchmark")
    rows = report.speed_rows()
    assert rows
    expected = {provenance.label(s) for s in sections.values() if not s.get("skipped")}
    assert {r[-1] for r in rows} <= expected
    for s in sections.values():
        want = "current code" if provenance.matches_current(s) else "older code (measured "
        assert provenance.label(s).startswith(want)


def test_a_file_of_the_current_code_is_labelled_current_and_an_older_one_with_its_date(tmp_path):
    cpu = json.loads((report.RESULTS / "benchmark_cpu.json").read_text())
    cpu["code"] = provenance.code_fingerprint()
    (tmp_path / "benchmark_cpu.json").write_text(json.dumps(cpu))
    assert {r[-1] for r in report.speed_rows(tmp_path)} == {"current code"}
    cpu["code"]["sources_sha256"] = "0" * 16
    cpu["machine"]["date"] = "2026-01-02T03:04:05+00:00"
    (tmp_path / "benchmark_cpu.json").write_text(json.dumps(cpu))
    assert {r[-1] for r in report.speed_rows(tmp_path)} == {"older code (measured 2026-01-02)"}


def test_the_fingerprint_follows_the_measured_sources(tmp_path):
    for rel in ("torch_impl/attention/a.py", "torch_impl/benchmark/cuda.py", "torch_impl/benchmark/report.py",
                "docs/speed.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    before = provenance.sources_sha256(tmp_path)
    (tmp_path / "torch_impl/benchmark/report.py").write_text("x = 2\n")  # renders files, measures nothing
    (tmp_path / "docs/speed.md").write_text("changed\n")
    assert provenance.sources_sha256(tmp_path) == before
    (tmp_path / "torch_impl/attention/a.py").write_text("x = 2\n")
    assert provenance.sources_sha256(tmp_path) != before
    section = {"code": {"sources_sha256": provenance.sources_sha256(tmp_path)}, "machine": {"date": "2026-12-04T00:00"}}
    assert provenance.matches_current(section, tmp_path) and not provenance.matches_current(section)


def test_update_rewrites_only_the_table(tmp_path):
    doc = tmp_path / "speed.md"
    doc.write_text(f"before\n\n{report.SPEED_BEGIN}\n| old |\n{report.SPEED_END}\n\nafter\n")
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results, ignore=shutil.ignore_patterns("experiments"))
    assert report.update_speed_doc(doc, results)
    assert doc.read_text() == f"before\n\n{report.SPEED_BEGIN}\n{report.speed_table(results)}\n{report.SPEED_END}\n\nafter\n"
    assert not report.update_speed_doc(doc, results)
