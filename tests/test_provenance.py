"""A checkpoint says what it is and what it was trained on, back through every --init."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from moladapt.bundled_models import bundled_dir, sha256_file
from moladapt.cli.main import app
from moladapt.provenance import describe_checkpoint, format_description

TINY = ["--hidden-dim", "16", "--num-layers", "2", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def bbbp_csv(tmp_path_factory):
    """The first 48 molecules of the BBBP file bundled with the package (SMILES + p_np)."""
    path = tmp_path_factory.mktemp("data") / "bbbp48.csv"
    pd.read_csv(bundled_dir() / "BBBP.csv").iloc[:48][["smiles", "p_np"]].to_csv(path, index=False)
    return path


def test_lineage_of_a_fine_tuned_model_goes_back_to_the_corpus(bbbp_csv, tmp_path):
    from moladapt.config import RunConfig
    from moladapt.experiment import run_training

    runner = CliRunner()
    ssl, sup = tmp_path / "ssl", tmp_path / "sup"
    res = runner.invoke(app, ["pretrain", "--objective", "attribute_masking", "--epochs", "1",
                              "--corpus", str(bbbp_csv), "--output", str(ssl), *TINY])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pretrain", "--objective", "supervised", "--epochs", "1", "--labels-dataset",
                              str(bbbp_csv), "--init", str(ssl / "encoder.pt"), "--output", str(sup), *TINY])
    assert res.exit_code == 0, res.output
    cfg = RunConfig().replace(
        data={"dataset": None, "csv": str(bbbp_csv), "smiles_column": "smiles", "split": "random"},
        model={"hidden_dim": 16, "num_layers": 2},
        train={"epochs": 1, "batch_size": 16, "init": str(sup / "encoder.pt")})
    run_training(cfg, tmp_path / "ft", progress=False, log=lambda m: None)

    info = describe_checkpoint(tmp_path / "ft" / "model.pt")
    assert info["tasks"] == ["p_np"] and info["model"]["hidden_dim"] == 16
    assert [step["path"] for step in info["lineage"]] == [str(sup / "encoder.pt"), str(ssl / "encoder.pt")]
    assert info["lineage"][0]["sha256"] == sha256_file(sup / "encoder.pt")
    labels = info["lineage"][0]["extra"]["pretrain"]["data"]["labels"]
    assert labels["source"] == str(bbbp_csv) and labels["tasks"] == 1
    corpus = info["lineage"][1]["extra"]["pretrain"]["data"]["corpus"]
    assert corpus["num_molecules"] + corpus["num_invalid"] == 48
    text = format_description(info)
    assert text.count("↳ started from") == 2 and "supervised × 1 epochs" in text
    assert f"on corpus {bbbp_csv}" in text

    res = runner.invoke(app, ["inspect", str(tmp_path / "ft" / "model.pt"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["lineage"][1]["path"] == str(ssl / "encoder.pt")
    res = runner.invoke(app, ["inspect", str(sup / "last.pt")])  # a pretraining state names its start too
    assert res.exit_code == 0 and "1 of 1 epoch(s): supervised" in res.output
    assert f"started from {ssl / 'encoder.pt'}" in res.output


def test_the_bundled_encoder_names_its_corpus_and_model_card(bbbp_csv):
    res = CliRunner().invoke(app, ["inspect", "bundled"])
    assert res.exit_code == 0, res.output
    assert "corpus moses_train (first 50000 molecules)" in res.output
    assert "encoder_attribute_masking.md" in res.output and "gin 5×300" in res.output
    res = CliRunner().invoke(app, ["inspect", str(bbbp_csv)])
    assert res.exit_code == 2 and "not a checkpoint (a checkpoint is a zip archive" in res.output


def test_fine_tuning_from_another_architecture_names_what_differs(bbbp_csv, tmp_path):
    from moladapt.config import RunConfig
    from moladapt.experiment import run_training

    res = CliRunner().invoke(app, ["pretrain", "--objective", "attribute_masking", "--epochs", "1",
                                   "--corpus", str(bbbp_csv), "--output", str(tmp_path / "ssl"), *TINY])
    assert res.exit_code == 0, res.output
    cfg = RunConfig().replace(
        data={"dataset": None, "csv": str(bbbp_csv), "smiles_column": "smiles", "split": "random"},
        model={"hidden_dim": 32, "num_layers": 2},
        train={"epochs": 1, "batch_size": 16, "init": str(tmp_path / "ssl" / "encoder.pt")})
    with pytest.raises(ValueError, match=r"hidden_dim 16 \(asked 32\)"):
        run_training(cfg, tmp_path / "ft", progress=False, log=lambda m: None)


def test_the_fine_tune_command_pretrain_prints_runs(bbbp_csv, tmp_path):
    import shlex

    res = CliRunner().invoke(app, ["pretrain", "--objective", "attribute_masking", "--epochs", "1",
                                   "--featurizer", "rich", "--jk", "concat", "--corpus", str(bbbp_csv),
                                   "--output", str(tmp_path / "ssl"), *TINY])
    assert res.exit_code == 0, res.output
    printed = res.output.split("fine-tune with: moladapt ", 1)[1].strip()
    assert "--featurizer rich" in printed and "--jk concat" in printed
    res = CliRunner().invoke(app, [*shlex.split(printed), "--data", str(bbbp_csv), "--split", "random",
                                   "--epochs", "1", "--output", str(tmp_path / "ft"), "--no-progress"])
    assert res.exit_code == 0, res.output
    state = str(tmp_path / "ssl" / "last.pt")
    res = CliRunner().invoke(app, [*shlex.split(printed.replace(str(tmp_path / "ssl" / "encoder.pt"), state)),
                                   "--data", str(bbbp_csv), "--output", str(tmp_path / "ft2"), "--no-progress"])
    assert res.exit_code == 2 and "use " + str(tmp_path / "ssl" / "encoder.pt") in res.output, res.output
