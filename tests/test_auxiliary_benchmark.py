"""benchmarks/auxiliary.py: how its report summarises runs that do not cover every method."""

from __future__ import annotations

import json
import sys

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("auxiliary.py")


def _records(scores: dict[tuple[str, str], list[float]]) -> list[dict]:
    return [{"dataset": d, "method": m, "seed": s, "test_roc_auc": v}
            for (d, m), values in scores.items() for s, v in enumerate(values)]


def test_means_cover_only_datasets_every_method_ran_on(bench):
    # gns also ran on tox21, where it scores far above its small-set scores: a mean over all of
    # each method's datasets would credit gns with tox21 and compare unlike averages.
    records = _records({("bace", "finetune"): [0.60, 0.62], ("bace", "gns"): [0.66, 0.64],
                        ("bbbp", "finetune"): [0.70, 0.70], ("bbbp", "gns"): [0.70, 0.72],
                        ("tox21", "finetune"): [0.70, 0.72], ("tox21", "gns"): [0.90, 0.92],
                        ("bace", "sum"): [0.50, 0.52], ("bbbp", "sum"): [0.60, 0.60]})
    text = bench.table(records, "test_roc_auc", ["finetune", "sum", "gns"])
    mean_row = next(line for line in text.splitlines() if line.startswith("| **mean over"))
    assert mean_row == "| **mean over bace, bbbp** | 65.5 | 55.5 | 68.0 |"
    rel_row = next(line for line in text.splitlines() if line.startswith("| relative change"))
    assert "(mean of the per-dataset changes over bace, bbbp)" in rel_row
    # the per-dataset rows and the paired tests still use every run
    assert "| tox21 | 71.0 ± 1.4 | – | 91.0 ± 1.4 |" in text
    gns_row = next(line for line in text.splitlines() if line.startswith("| gns |"))
    assert gns_row.split("|")[2].strip() == "6"


def test_full_coverage_keeps_the_plain_label(bench):
    records = _records({("bace", "finetune"): [0.60, 0.62], ("bace", "gns"): [0.66, 0.64]})
    text = bench.table(records, "test_roc_auc", ["finetune", "gns"])
    assert "| **mean over datasets** | 61.0 | 65.0 |" in text
    assert "| relative change vs finetune (mean of the per-dataset changes over datasets) | +0.0% | +6.6% |" in text


def test_learning_table_divides_the_final_training_loss_by_the_base_rate_loss(bench, tmp_path, data_dir):
    import json
    import math

    import numpy as np
    import pandas as pd

    rate = pd.read_csv(data_dir / "BBBP.csv")["p_np"].mean()
    base = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert bench.constant_predictor_loss("bbbp") == pytest.approx(base, rel=1e-6)
    records = []
    for method, losses, spread in (("finetune", [0.5, 0.3], None), ("sum", [0.6, base], [1.7, 0.3])):
        run = tmp_path / method
        run.mkdir()
        metrics = {"history": {"epochs": [{"train_loss": v} for v in losses]}}
        if spread:
            metrics["embedding_spread"] = spread
        (run / "metrics.json").write_text(json.dumps(metrics))
        records.append({"dataset": "bbbp", "method": method, "seed": 0, "_dir": str(run)})
    records.append({"dataset": "bbbp", "method": "blo", "seed": 0, "_dir": str(tmp_path / "gone")})
    text = bench.learning_table(records, ["finetune", "sum", "blo"])
    assert f"| bbbp | {base:.3f} | {0.3 / base:.2f} | 1.00 |" in text  # blo: no history, no column
    assert "| sum | 1.70 → 0.30 | 1 |" in text
    assert np.isfinite(base)


def test_runs_from_a_rebuilt_checkpoint_of_the_same_name_are_refused(bench, tmp_path, monkeypatch):
    encoder = tmp_path / "encoder_attribute_masking.pt"
    encoder.write_bytes(b"first build")
    settings = {"featurizer": "basic", "encoder": "gin", "hidden_dim": 8, "num_layers": 2,
                "dropout": 0.5, "epochs": 1, "batch_size": 32, "lr": 1e-3, "patience": None,
                "init": str(encoder), "encoder_lr_scale": 1.0, "inner_steps": 10,
                "aux": ["attribute_masking"]}
    out = tmp_path / "out"
    run_dir = out / "raw" / "bace" / bench.run_name("finetune", 0, settings)
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "dataset": "bace", "method": "finetune", "seed": 0, "test_roc_auc": 0.7,
        "settings": settings, "init_sha256": bench.init_sha256(settings)}))
    argv = ["auxiliary.py", "--datasets", "bace", "--methods", "finetune", "--seeds", "0",
            "--aux", "attribute_masking", "--init", str(encoder), "--hidden-dim", "8",
            "--num-layers", "2", "--epochs", "1", "--report-only", "--output", str(out)]
    encoder.write_bytes(b"rebuilt")  # the same name, another encoder
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="1 stored run\\(s\\) started from another checkpoint"):
        bench.main()
    assert not bench.other_encoder({"init_sha256": None}, bench.init_sha256(settings))  # older runs
    encoder.unlink()  # a report where the checkpoint is not: nothing to compare, no crash
    assert bench.init_sha256(settings) is None
    assert not bench.other_encoder({"init_sha256": "ab"}, None)
