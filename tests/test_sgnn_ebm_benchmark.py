"""benchmarks/sgnn_ebm.py on a real slice of SIDER: runs, resume and the report's identity check."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("sgnn_ebm.py")


def test_runs_resume_only_with_the_same_settings_and_report_which_seeds_kept_the_ebm(
        bench, data_dir, tmp_path, capsys):
    raw, report = tmp_path / "raw", tmp_path / "sgnn_ebm.md"
    argv = ["--datasets", "sider", "--methods", "multi-task,sgnn,sgnn-ebm", "--seeds", "0",
            "--hidden-dim", "8", "--num-layers", "2", "--max-molecules", "400", "--epochs", "1",
            "--raw-dir", str(raw), "--report", str(report)]
    assert bench.main(argv) == 0
    record = json.loads((raw / "sider" / "sgnn-ebm" / "seed0.json").read_text())
    assert record["threads"] == 1 and record["options"]["epochs"] == 1
    mtimes = {p: p.stat().st_mtime_ns for p in raw.rglob("*.json")}

    # other settings never reuse (or get reported as) the stored runs
    assert bench.main([*argv[:-6], "--epochs", "2", *argv[-4:]]) == 2
    assert "sgnn-ebm/seed0.json: epochs: 1 → 2" in capsys.readouterr().err
    assert bench.main([*argv, "--report-only", "--hidden-dim", "16"]) == 2
    assert "hidden_dim: 8 → 16" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in raw.rglob("*.json")} == mtimes

    assert bench.main([*argv, "--report-only"]) == 0
    text = report.read_text()
    kept = "1/1" if record["ebm_best_epoch"] >= 0 else "0/1"
    row = next(line for line in text.splitlines() if line.startswith("| sider | 1 |"))
    assert f"| {kept} |" in row, row
