"""Structured multi-task runs (SGNN-EBM and baselines) on a 400-molecule Tox21 slice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from moladapt.data.sources import DataError
from moladapt.multitask import (
    MULTITASK_METHODS,
    MultitaskConfig,
    fsmol_labeled_data,
    load_multitask_data,
    resolve_multitask_config,
    run_multitask,
)
from moladapt.study.executors import RUNNERS

torch.set_num_threads(1)

TINY = {"hidden_dim": 32, "num_layers": 2, "epochs": 1, "batch_size": 64, "dense_n": 15,
        "split_frac": (0.6, 0.2, 0.2), "graph_threshold": 0.1, "graph_min_common": 5,
        "num_threads": 1}


@pytest.fixture(scope="module")
def tox21_slice_dir(tmp_path_factory) -> Path:
    """A data directory whose ``tox21.csv`` is the first 400 molecules of the real one."""
    src = Path(os.environ["MOLADAPT_DATA_DIR"]) / "tox21.csv"
    if not src.exists():
        pytest.skip("tox21.csv not found (set MOLADAPT_DATA_DIR)")
    out = tmp_path_factory.mktemp("tox21-slice")
    pd.read_csv(src).head(400).to_csv(out / "tox21.csv", index=False)
    return out


@pytest.fixture
def tox21_slice(tox21_slice_dir, monkeypatch):
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tox21_slice_dir))
    return tox21_slice_dir


@pytest.mark.parametrize("method", ["multi-task", "sgnn", "sgnn-ebm"])
def test_run_multitask_writes_config_and_metrics(tox21_slice, tmp_path, method):
    out = tmp_path / method
    result = run_multitask("tox21", method, "coactivity", output=out, **TINY)
    assert result.n_tasks == 8 and result.n_molecules == 399  # Dense-15 of the slice
    assert sum(result.split_sizes) == result.n_molecules
    assert 0.0 <= result.test_roc_auc <= 1.0
    assert result.test.n_tasks_scored == 8  # the filtered split keeps both classes everywhere
    assert set(result.per_task_roc_auc) == set(result.test.per_task)
    assert result.graph_stats["nodes"] == 8 and result.graph_stats["edges"] > 0
    assert result.train_seconds > 0 and result.inference_seconds > 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == method and config["dataset"] == "tox21"
    assert config["dense_n"] == 15 and config["split_frac"] == [0.6, 0.2, 0.2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_roc_auc"] == pytest.approx(result.test_roc_auc)
    assert len(metrics["per_task_test_roc_auc"]) == 8 and metrics["graph"]["edges"] > 0
    if method == "sgnn-ebm":
        assert metrics["ebm_epochs"] == 1 and 0 <= metrics["final_nce_accuracy"] <= 1
        assert set(metrics["stage_seconds"]) == {"sgnn", "ebm"}


def test_a_users_assay_panel_csv_is_a_multitask_dataset(tox21_slice, tmp_path, monkeypatch):
    """The same table as a user's CSV (SMILES column in another case, ids dropped) gives the
    same Dense-15 problem as the benchmark; the config names the file by its absolute path."""
    panel = pd.read_csv(tox21_slice / "tox21.csv").drop(columns="mol_id").rename(columns={"smiles": "SMILES"})
    panel.to_csv(tmp_path / "panel.csv", index=False)
    monkeypatch.chdir(tmp_path)
    result = run_multitask("panel.csv", "multi-task", "coactivity", output=tmp_path / "run", **TINY)
    assert result.n_tasks == 8 and result.n_molecules == 399
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["dataset"] == str(tmp_path / "panel.csv")
    panel.assign(note="x").to_csv(tmp_path / "with_text.csv", index=False)
    with pytest.raises(DataError, match="with_text.csv.*A task CSV holds"):
        run_multitask("with_text.csv", "multi-task", "coactivity", **TINY)


def test_same_seed_same_split_and_scores(tox21_slice):
    a = run_multitask("tox21", "multi-task", "none", **TINY)
    b = run_multitask("tox21", "multi-task", "none", **TINY)
    assert a.split_sizes == b.split_sizes
    assert a.test_roc_auc == pytest.approx(b.test_roc_auc, abs=1e-6)
    assert a.graph_stats["edges"] == 0


def test_task_graph_from_an_edge_list_file(tox21_slice, tmp_path):
    # NR-AR and NR-AR-LBD fall out of Dense-15 on this slice: the file may still name them
    edges = tmp_path / "graph.csv"
    edges.write_text("task_a,task_b,weight\nNR-AhR,SR-ARE,0.5\nSR-MMP,SR-p53,1\n"
                     "NR-AR,NR-AR-LBD,1\nNR-AR,SR-MMP,1\n")
    result = run_multitask("tox21", "sgnn", edges, **TINY)
    assert result.graph_stats["edges"] == 2 and result.graph_stats["nodes"] == 8
    assert np.isfinite(result.test_roc_auc)
    bad = tmp_path / "bad.csv"
    bad.write_text("task_a,task_b\nNR-AhR,not-a-task\n")
    with pytest.raises(DataError, match="unknown task 'not-a-task'"):
        run_multitask("tox21", "sgnn", bad, **TINY)
    with pytest.raises(FileNotFoundError, match="neither"):
        run_multitask("tox21", "sgnn", tmp_path / "missing.csv", **TINY)


def test_single_task_and_balancers_with_max_tasks(tox21_slice):
    for method in ("single-task", "gradnorm"):
        result = run_multitask("tox21", method, "coactivity", max_tasks=3, **TINY)
        assert result.n_tasks == 3 and result.test.n_tasks_scored == 3
    assert "task_weights" in result.extra and len(result.extra["task_weights"]) == 3


def test_single_task_on_a_task_sample_scores_only_those_tasks(tox21_slice):
    full = run_multitask("tox21", "single-task", "none", **TINY)
    sample = run_multitask("tox21", "single-task", "none", params={"task_sample": 3}, **TINY)
    trained = sample.extra["tasks_trained"]
    assert len(trained) == 3 and sample.test.n_tasks_scored == 3 and sample.n_tasks == full.n_tasks
    for name, reason in sample.test.skipped.items():
        assert name not in trained and "outside its task sample" in reason
    # the same seed-independent sample for another training seed
    other = run_multitask("tox21", "single-task", "none", params={"task_sample": 3},
                          **{**TINY, "seed": TINY.get("seed", 0) + 1})
    assert other.extra["tasks_trained"] == trained
    # a sampled task's model is the one the full run trains: same split, same seed
    for name in trained:
        assert sample.test.per_task[name]["roc_auc"] == pytest.approx(full.test.per_task[name]["roc_auc"], abs=1e-6)
    with pytest.raises(ValueError, match="unknown single-task param"):
        run_multitask("tox21", "single-task", "none", params={"sample": 3}, **TINY)


def test_bad_options_are_named():
    assert MULTITASK_METHODS == ("single-task", "multi-task", "uncertainty", "gradnorm", "sgnn",
                                 "sgnn-ebm")
    with pytest.raises(ValueError, match="unknown multi-task method"):
        MultitaskConfig(method="ebm")
    with pytest.raises(ValueError, match="unknown multitask option"):
        MultitaskConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="split_frac"):
        MultitaskConfig(split_frac=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"needs dense_n \(--dense"):
        load_multitask_data("fsmol-train")


def test_min_tasks_per_molecule_without_a_dense_table_is_refused(tox21_slice):
    with pytest.raises(ValueError, match=r"--min-tasks-per-molecule\) = 3 applies to a Dense-N table"):
        load_multitask_data("tox21", min_tasks_per_molecule=3)


def test_unknown_method_param_is_refused(tox21_slice):
    with pytest.raises(ValueError, match="unknown sgnn-ebm param"):
        run_multitask("tox21", "sgnn-ebm", "none", params={"couplng": 1.0}, **TINY)
    with pytest.raises(ValueError, match="takes no params"):
        run_multitask("tox21", "multi-task", "none", params={"alpha": 1.0}, **TINY)
    # a wrong type is named before any training (it used to surface in the EBM stage)
    with pytest.raises(ValueError, match=r"sgnn-ebm param coupling must be a number, got 'abc'"):
        run_multitask("tox21", "sgnn-ebm", "none", params={"coupling": "abc"}, **TINY)
    with pytest.raises(ValueError, match=r"sgnn-ebm param mf_iters must be an integer, got 2.5"):
        run_multitask("tox21", "sgnn-ebm", "none", params={"mf_iters": 2.5}, **TINY)
    with pytest.raises(ValueError, match=r"gradnorm param alpha must be a number, got 'abc'"):
        run_multitask("tox21", "gradnorm", "none", params={"alpha": "abc"}, **TINY)


def test_a_refused_rerun_keeps_the_finished_runs_config(tox21_slice, tmp_path):
    run_multitask("tox21", "multi-task", "none", output=tmp_path, **TINY)
    finished = (tmp_path / "config.yaml").read_text()
    with pytest.raises(ValueError):
        run_multitask("tox21", "sgnn-ebm", "none", params={"coupling": "abc"}, output=tmp_path, **TINY)
    assert (tmp_path / "config.yaml").read_text() == finished


def test_fsmol_pivot_is_a_dense_table(data_dir):
    if not (data_dir / "fsmol.csv.gz").exists():
        pytest.skip("fsmol.csv.gz not found")
    data = fsmol_labeled_data("valid", min_per_class=40)
    y = data.labels
    assert y.shape == (len(data.smiles), len(data.task_names)) and len(data.smiles) == len(set(data.smiles))
    assert set(np.unique(y[~np.isnan(y)])) <= {0.0, 1.0}
    assert ((y == 1).sum(0) >= 40).all() and ((y == 0).sum(0) >= 40).all()
    assert len(data.metadata["all_task_names"]) >= len(data.task_names)


def test_study_runner_resolves_and_runs(tox21_slice, tmp_path):
    runner = RUNNERS.get("multitask")
    config = {"dataset": "tox21", "method": "sgnn-ebm", "hidden_dim": 32, "num_layers": 2,
              "epochs": 1, "batch_size": 64, "dense_n": 15, "split_frac": [0.6, 0.2, 0.2],
              "graph_threshold": "0.1", "graph_min_common": 5, "lr": "1e-3", "num_threads": 1}
    resolved = runner.resolve(dict(config))
    assert resolved["graph_threshold"] == 0.1 and resolved["lr"] == 0.001
    assert resolved["task_graph"] == "coactivity" and resolved["params"] == {}
    assert resolved == resolve_multitask_config(resolved)  # idempotent
    metrics = runner.run(resolved, tmp_path / "run")
    assert 0 <= metrics["test.roc_auc"] <= 1 and metrics["n_tasks"] == 8
    assert metrics["graph.edges"] > 0 and metrics["train_seconds"] > 0
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "metrics.json").exists()
    for bad, match in (({"methd": "sgnn"}, "unknown key 'methd'"),
                       ({"dataset": "esol"}, "not a multi-task classification"),
                       ({"dataset": "nope"}, "unknown dataset"),
                       ({"task_graph": str(tmp_path / "none.csv")}, "neither"),
                       ({"lr": "fast"}, "lr must be a number")):
        with pytest.raises((ValueError, KeyError, FileNotFoundError), match=match):
            runner.resolve({**config, **bad})
