"""benchmarks/transfer_user_target.py: the stand-in assay file and the report (no training)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("transfer_user_target.py")


def test_the_stand_in_assay_is_a_seeded_sample_with_one_label_column(bench, data_dir, tmp_path):
    label = bench.write_target("esol", 50, 0, tmp_path / "a.csv")
    frame = pd.read_csv(tmp_path / "a.csv")
    assert list(frame.columns) == ["smiles", label] and len(frame) == 50 and frame[label].notna().all()
    bench.write_target("esol", 50, 0, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()  # same seed, same sample


def test_report_pairs_each_multitask_method_with_single_task_over_seeds(bench):
    settings = {"num_layers": 3, "hidden_dim": 128, "epochs": 50, "extra_ratio": 4.0}
    records = []
    for seed in range(6):
        for method, mae in (("single_task", 1.5), ("uniform_mt", 1.3), ("bilevel", 1.2)):
            records.append({"method": method, "seed": seed, "test_value": mae + 0.01 * seed,
                            "metric": "mae", "n_train": 160, "n_valid": 20, "n_test": 20,
                            "sources": [] if method == "single_task" else ["tdc_solubility_aqsoldb", "tdc_ppbr_az"],
                            "settings": settings, "train_seconds": 1.0, "n_dropped_source_labels": 38,
                            **({"weights": {"tdc_solubility_aqsoldb": 0.9, "tdc_ppbr_az": 0.2}}
                               if method == "bilevel" else {})})
    args = argparse.Namespace(dataset="esol", n=200, sample_seed=0, seeds="0,1,2,3,4,5")
    text = bench.report(records, args, Path("esol_200.csv"))
    assert "(2: solubility_aqsoldb, ppbr_az)" in text and "lower is better" in text
    assert "seeds 0,1,2,3,4,5`\n\n| method |" in text
    assert "| single-task | 1.525 ± 0.019 | 6 |" in text
    assert "| bi-level ratios | 6 | -0.300 |" in text and "| better |" in text
    assert "solubility_aqsoldb 0.90, ppbr_az 0.20" in text and "test score): 38." in text
