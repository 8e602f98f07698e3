"""`moladapt multitask` on a tiny typer app and a 400-molecule Tox21 slice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from moladapt.cli.multitask import multitask_command

torch.set_num_threads(1)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command("multitask")(multitask_command)
app.command("noop", hidden=True)(lambda: None)  # keep "multitask" a named subcommand

TINY = ["--hidden-dim", 32, "--num-layers", 2, "--epochs", 1, "--batch-size", 64,
        "--dense", 15, "--split-frac", "0.6,0.2,0.2", "--graph-threshold", 0.1,
        "--graph-min-common", 5, "--threads", 1]


def invoke(*args, code=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != code:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
                             f"\n{result.exception!r}")
    return result


@pytest.fixture
def tox21_slice(tmp_path, monkeypatch):
    src = Path(os.environ["MOLADAPT_DATA_DIR"]) / "tox21.csv"
    if not src.exists():
        pytest.skip("tox21.csv not found (set MOLADAPT_DATA_DIR)")
    data = tmp_path / "data"
    data.mkdir()
    pd.read_csv(src).head(400).to_csv(data / "tox21.csv", index=False)
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(data))
    return data


def test_multitask_sgnn_ebm_with_an_edge_list(tox21_slice, tmp_path):
    graph = tmp_path / "graph.tsv"
    graph.write_text("task_a\ttask_b\nNR-AhR\tSR-ARE\nSR-MMP\tSR-p53\n")
    out = tmp_path / "run"
    result = invoke("multitask", "--method", "sgnn-ebm", "--dataset", "tox21", "--task-graph",
                    graph, *TINY, "--param", "n_noise=2", "--seed", 1, "--output", out)
    assert "task graph" in result.output and "2 edges" in result.output
    assert "sgnn-ebm: test ROC-AUC" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["graph"]["edges"] == 2 and 0 <= metrics["test_roc_auc"] <= 1
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["params"] == {"n_noise": 2} and config["seed"] == 1


def test_multitask_errors_are_one_line(tox21_slice, tmp_path):
    result = invoke("multitask", "--method", "ebm", *TINY, "--output", tmp_path / "x", code=2)
    assert "unknown multi-task method 'ebm'" in result.output
    result = invoke("multitask", "--task-graph", tmp_path / "missing.csv", *TINY,
                    "--output", tmp_path / "y", code=2)
    assert "neither" in result.output
    result = invoke("multitask", "--split-frac", "0.8,0.2", *TINY[:10], "--output", tmp_path / "z",
                    code=2)
    assert "--split-frac" in result.output
