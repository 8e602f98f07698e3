"""benchmarks/pretraining.py and moleculenet.py: how their reports read the stored fine-tuning runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("pretraining.py")


def _write_run(folder: Path, valid: list[float], test: list[float], patience=None) -> None:
    folder.mkdir(parents=True)
    history = [{"epoch": e, "train_loss": 0.5, "valid_metric": v, "seconds": 2.0,
                "monitored": {"test": t}} for e, (v, t) in enumerate(zip(valid, test, strict=True))]
    (folder / "metrics.json").write_text(json.dumps({"history": {"epochs": history}}))
    best = max(range(len(valid)), key=lambda e: (valid[e], -e))
    (folder / "summary.json").write_text(json.dumps({
        "dataset": "bbbp", "seed": 0, "featurizer": "basic", "epochs": len(valid),
        "patience": patience, "test_roc_auc": test[best], "test_roc_auc_last_epoch": test[-1],
        "valid_roc_auc": valid[best], "best_epoch": best, "epochs_run": len(valid)}))


def _args(tmp_path: Path, epochs: int, patience=None) -> argparse.Namespace:
    return argparse.Namespace(hidden_dim=300, num_layers=5, baseline_dir=tmp_path, epochs=epochs,
                              patience=patience, featurizer="basic")


def test_shorter_budget_is_read_off_the_first_epochs_of_a_longer_run(bench, tmp_path):
    valid = [0.60, 0.70, 0.70, 0.65, 0.90, 0.95]
    test = [0.50, 0.61, 0.62, 0.63, 0.64, 0.65]
    _write_run(tmp_path / "bbbp_seed0_e6", valid, test)
    r = bench.baseline_record(_args(tmp_path, epochs=4), "bbbp", 0)
    assert r["method"] == "none" and r["epochs"] == 4 and r["epochs_run"] == 4
    assert r["test_roc_auc_last_epoch"] == 0.63  # epoch 4 of 6, not the run's last
    # best validation within the first 4 epochs: the first of the tied 0.70s, as the Trainer keeps it
    assert r["best_epoch"] == 1 and r["test_roc_auc"] == 0.61 and r["valid_roc_auc"] == 0.70
    assert r["train_seconds"] == pytest.approx(8.0)
    assert r["truncated_from"].endswith("bbbp_seed0_e6")


def test_exact_budget_wins_and_nothing_is_invented(bench, tmp_path):
    _write_run(tmp_path / "bbbp_seed0_e3", [0.6, 0.8, 0.7], [0.5, 0.55, 0.6])
    _write_run(tmp_path / "bbbp_seed0_e6", [0.6] * 6, [0.1] * 6)
    r = bench.baseline_record(_args(tmp_path, epochs=3), "bbbp", 0)
    assert "truncated_from" not in r and r["test_roc_auc_last_epoch"] == 0.6
    assert bench.baseline_record(_args(tmp_path, epochs=7), "bbbp", 0) is None  # no longer run
    assert bench.baseline_record(_args(tmp_path, epochs=2), "bbbp", 1) is None  # no such seed
    # early stopping makes the epochs depend on the budget: never truncated
    assert bench.baseline_record(_args(tmp_path, epochs=2, patience=5), "bbbp", 0) is None


def test_early_stopped_runs_are_not_truncated(bench, tmp_path):
    _write_run(tmp_path / "bbbp_seed0_e6", [0.6] * 6, [0.5] * 6, patience=2)
    assert bench.baseline_record(_args(tmp_path, epochs=3), "bbbp", 0) is None


def test_moleculenet_report_pairs_rich_with_basic_on_shared_runs_only(load_benchmark):
    bench = load_benchmark("moleculenet.py")

    def run(featurizer, dataset, seed, last, patience=None, epochs=100):
        return {"featurizer": featurizer, "dataset": dataset, "seed": seed, "epochs": epochs,
                "patience": patience, "test_roc_auc": last - 0.01, "test_roc_auc_last_epoch": last}

    basic = [run("basic", d, s, 0.60 + 0.01 * s) for d in ("bbbp", "bace", "sider") for s in range(3)]
    basic.append(run("basic", "tox21", 0, 0.7))  # no rich partner: not paired
    basic.append(run("basic", "bbbp", 0, 0.1, patience=15))  # another budget: not paired
    rich = [run("rich", d, s, 0.62 + 0.01 * s) for d in ("bbbp", "bace", "sider") for s in range(3)]
    text = bench.featurizer_comparison(basic, rich)
    assert "Paired over the 9 (dataset, seed) runs" in text and "(bace, bbbp, sider)" in text
    assert "| last epoch | 9 | +2.00 |" in text and "| best-valid epoch | 9 | +2.00 |" in text
    assert "bbbp +2.0" in text
    assert bench.featurizer_comparison(basic, []) == ""


def _curve_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        featurizer="basic", hidden_dim=300, num_layers=5, corpus="moses_train", labels_dataset="toxcast",
        pretrain_epochs=10, pretrain_batch_size=256, pretrain_precision="bf16", corpus_size=50_000,
        curve_objective="attribute_masking", epochs=30, patience=None, datasets=["bbbp", "bace"],
        seeds=[0, 1], results_dir=tmp_path)


def _finetune_summary(folder: Path, dataset: str, seed: int, init: str, method: str, size=None) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "method": method, "dataset": dataset, "seed": seed, "epochs": 30, "patience": None,
        "init": init, "corpus_size": size, "test_roc_auc": 0.7, "test_roc_auc_last_epoch": 0.71}))


def test_curve_reuses_the_tables_runs_of_the_same_encoder_only(bench, tmp_path):
    from moladapt.study.pretrain_runner import pretrain_hash

    args = _curve_args(tmp_path)
    key = pretrain_hash(bench.pretrain_config(args, "attribute_masking", 50_000))
    assert key != pretrain_hash(bench.pretrain_config(args, "attribute_masking", 10_000))
    table = tmp_path / "table"
    for d, s in [("bbbp", 0), ("bbbp", 1), ("bace", 0)]:
        _finetune_summary(table / "attribute_masking" / f"{d}_seed{s}_e30", d, s,
                          f"/elsewhere/pretrained/{key}/encoder.pt", "attribute_masking")
    # an encoder pretrained otherwise (another hash) is not the curve's 50k point
    _finetune_summary(table / "attribute_masking" / "bace_seed1_e30", "bace", 1,
                      "/elsewhere/pretrained/0123456789abcdef/encoder.pt", "attribute_masking")
    _finetune_summary(table / "graphcl" / "bbbp_seed0_e30", "bbbp", 0,
                      f"/elsewhere/pretrained/{key}/encoder.pt", "graphcl")
    shared = bench.table_curve_records(args, table)
    assert sorted((r["dataset"], r["seed"]) for r in shared) == [("bace", 0), ("bbbp", 0), ("bbbp", 1)]
    assert {r["method"] for r in shared} == {"attribute_masking@50000"}
    assert all(r["corpus_size"] == 50_000 and r["shared_with_table"] for r in shared)

    own = tmp_path / "curve"
    _finetune_summary(own / "attribute_masking@50000" / "bbbp_seed0_e30", "bbbp", 0, "x", "attribute_masking@50000", 50_000)
    _finetune_summary(own / "attribute_masking@10000" / "bbbp_seed0_e30", "bbbp", 0, "y", "attribute_masking@10000", 10_000)
    curve = bench.curve_records(args, table, own)
    points = sorted((r["corpus_size"], r["dataset"], r["seed"], bool(r.get("shared_with_table"))) for r in curve)
    # the curve's own 50k run of (bbbp, 0) wins over the table's; no point is counted twice
    assert points == [(10_000, "bbbp", 0, False), (50_000, "bace", 0, True),
                      (50_000, "bbbp", 0, False), (50_000, "bbbp", 1, True)]


def test_rows_missing_a_dataset_average_over_the_shared_ground(bench):
    recs = [{"method": m, "dataset": d, "seed": s, "k": v + s / 100}
            for m, sets in {"none": {"bbbp": 0.6, "tox21": 0.7}, "graphcl": {"bbbp": 0.7}}.items()
            for d, v in sets.items() for s in (0, 1)]
    datasets = ["bbbp", "tox21"]
    common = bench.common_datasets(recs, ["none", "graphcl"], datasets)
    assert common == ["bbbp"]
    head, averages = bench._average_columns(datasets, common)
    assert head == ["average (bbbp)", "average (all 2)"]
    none = [r for r in recs if r["method"] == "none"]
    graphcl = [r for r in recs if r["method"] == "graphcl"]
    assert bench._dataset_cells(none, datasets, "k", averages=averages)[2:] == ["60.5", "65.5"]
    assert bench._dataset_cells(graphcl, datasets, "k", averages=averages)[1:] == ["—", "70.5", "—"]
    assert bench._average_columns(datasets, datasets) == (["average"], (datasets,))


def test_objectives_run_beyond_the_shared_ground_are_paired_on_all_their_datasets(bench):
    runs = {"none": ["bbbp", "tox21", "toxcast"], "attribute_masking": ["bbbp", "tox21", "toxcast"],
            "graphcl": ["bbbp", "tox21"], "infomax": ["bbbp"], "supervised": ["bbbp", "tox21", "toxcast"]}
    recs = [{"method": m, "dataset": d, "seed": 0} for m, sets in runs.items() for d in sets]
    datasets = ["bbbp", "tox21", "toxcast"]
    common = bench.common_datasets(recs, list(runs), datasets)
    assert common == ["bbbp"]
    # supervised pretraining saw the Tox21/ToxCast labels: never paired there
    assert bench.beyond_ground(recs, list(runs), datasets, common) == {
        "attribute_masking": datasets, "graphcl": ["bbbp", "tox21"]}


def test_auxiliary_runs_take_the_recipe_their_settings_name(load_benchmark):
    aux = load_benchmark("auxiliary.py")
    objectives = ("attribute_masking", "edge_prediction")
    # settings without aux_recipes are recipe-1 runs (they predate recipe 2): completed as such
    old = aux.aux_section("gns", objectives, 10, {})
    assert old["objective_options"] == {"edge_prediction": {"scale_by_sqrt_dim": False}}
    assert aux.aux_section("blo", objectives, 10, {"edge_prediction": 2})["objective_options"] is None
    assert aux.aux_section("rcgrad-w0", objectives, 10, {})["task_weights"] == [0.0, 0.0]
    assert aux.aux_section("finetune", objectives, 10, {})["aux_objectives"] == []


def test_runs_of_another_pretraining_configuration_are_refused_not_pooled(bench, tmp_path):
    from moladapt.study.pretrain_runner import pretrain_hash

    args = _curve_args(tmp_path)
    raw, curve_raw = tmp_path / "raw", tmp_path / "curve"
    for folder, spec, size in [(raw / "attribute_masking", "attribute_masking", 50_000),
                               (curve_raw / "attribute_masking@10000", "attribute_masking", 10_000)]:
        folder.mkdir(parents=True)
        key = pretrain_hash(bench.pretrain_config(args, spec, size))
        (folder / "pretrain.json").write_text(json.dumps({"hash": key, "seconds": 1.0}))
    assert bench.stored_encoder_mismatches(args, raw, curve_raw) == []
    args.pretrain_precision = "fp32"  # another encoder: its report must not relabel these runs
    found = bench.stored_encoder_mismatches(args, raw, curve_raw)
    assert [line.split(":")[0] for line in found] == [str(raw / "attribute_masking"),
                                                       str(curve_raw / "attribute_masking@10000")]


def test_the_tables_command_leaves_out_the_curve_mode_and_report_only(bench):
    argv = ["--objectives", "graphcl", "--corpus-sizes", "10000,50000", "--seeds", "0,1",
            "--curve-objective=attribute_masking", "--report-only", "--epochs", "30"]
    assert bench.table_command(argv) == ["--objectives", "graphcl", "--seeds", "0,1", "--epochs", "30"]


def test_the_table_shows_only_the_named_objectives_beside_the_baseline(bench):
    records = [{"method": m, "dataset": d, "seed": s} for m in ("none", "graphcl", "infomax")
               for d in ("bbbp", "bace") for s in (0, 1)]
    kept = bench.table_records(records, ["bbbp"], [0], ["graphcl"])
    assert sorted(r["method"] for r in kept) == ["graphcl", "none"]
    assert {(r["dataset"], r["seed"]) for r in kept} == {("bbbp", 0)}
