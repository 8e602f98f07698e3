"""The CLI end to end, through the installed `moladapt` entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from moladapt.cli.main import app

MOLADAPT = str(Path(sys.executable).parent / "moladapt")
TINY = ["--hidden-dim", "32", "--num-layers", "2", "--epochs", "2", "--batch-size", "64",
        "--no-progress", "--threads", "1"]


def run(*args, check=True):
    proc = subprocess.run([MOLADAPT, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"moladapt {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_train_evaluate_predict_on_a_user_csv(tmp_path, data_dir):
    frame = pd.read_csv(data_dir / "BBBP.csv").iloc[:400][["smiles", "p_np"]]
    frame.loc[5, "smiles"] = "this is not smiles"
    csv = tmp_path / "mine.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    proc = run("train", "--data", str(csv), "--target-columns", "p_np", "--split", "random",
               "--output", str(out), *TINY)
    assert "test:" in proc.stdout
    # BBBP's first 400 rows hold 3 SMILES RDKit rejects, plus the one broken here (file line 7)
    assert "skipped 4 invalid SMILES (line 7: 'this is not smiles'" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["invalid_smiles"][0] == {"line": 7, "smiles": "this is not smiles"}
    assert [r["line"] for r in metrics["invalid_smiles"]] == [7, 61, 63, 393]
    assert 0.0 <= metrics["test"]["mean"]["roc_auc"] <= 1.0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["data"]["csv"] == str(csv) and cfg["model"]["hidden_dim"] == 32

    ev = tmp_path / "eval"
    run("evaluate", str(out / "model.pt"), "--part", "test", "--output", str(ev))
    ev_metrics = json.loads((ev / "metrics.json").read_text())
    assert ev_metrics["metrics"]["mean"]["roc_auc"] == pytest.approx(metrics["test"]["mean"]["roc_auc"], abs=1e-6)
    assert (ev / "config.yaml").exists()

    pred = tmp_path / "pred.csv"
    run("predict", str(out / "model.pt"), "-i", str(csv), "-o", str(pred))
    scored = pd.read_csv(pred)
    assert len(scored) == 400 and not scored.loc[5, "valid_smiles"]
    assert scored["p_np_probability"].isna().sum() == 4

    gappy = tmp_path / "gappy.csv"  # blank lines are rows too: the output lines up with the input
    gappy.write_text("id,smiles\n1,CCO\n\n3,c1ccccc1\n\n5,CCN\n")
    run("predict", str(out / "model.pt"), "-i", str(gappy), "-o", str(pred))
    assert pd.read_csv(pred, skip_blank_lines=False)["valid_smiles"].tolist() == [True, False, True, False, True]
    assert pred.read_text().splitlines()[1].startswith("1,CCO,True,")  # ids pass through as written
    clash = tmp_path / "clash.csv"
    clash.write_text("smiles,valid_smiles\nCCO,checked\n")
    proc = run("predict", str(out / "model.pt"), "-i", str(clash), "-o", str(pred), check=False)
    assert proc.returncode == 2 and "already has column(s) ['valid_smiles']" in proc.stderr


def test_train_by_dataset_name_regression(tmp_path, data_dir):
    out = tmp_path / "esol"
    run("train", "--dataset", "esol", "--featurizer", "rich", "--encoder", "sage",
        "--split", "random", "--output", str(out), *TINY)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["mean"]["rmse"] > 0


def test_datasets_lists_benchmarks(data_dir):
    proc = run("datasets")
    for name in ("bbbp", "tox21", "toxcast", "muv", "hiv", "tdc_herg", "lipophilicity"):
        assert name in proc.stdout


def test_datasets_sizes_counts_fsmol_tasks_per_split(tmp_path, monkeypatch):
    frame = pd.DataFrame({"split": ["train", "train", "test"], "task_id": ["A", "A", "B"],
                          "smiles": ["CCO", "CC", "CCO"], "label": [1, 0, 1]})
    frame.to_csv(tmp_path / "fsmol.csv.gz", index=False)
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path))
    line = next(ln for ln in run("datasets", "--sizes").stdout.splitlines() if ln.startswith("fsmol "))
    assert "[3 rows, 2 distinct SMILES; tasks 1 train, 0 valid, 1 test]" in line


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("", [], "empty"),
        ("smi,y\nCCO,1\n", [], "no SMILES column 'smiles'"),
        ("smiles,y\nCCO,1\nCC,0\n", ["--target-columns", "nope"], "unknown target column"),
        ("smiles,y\nxx,1\nyy,0\n", [], "none of the 2 SMILES could be parsed"),
        ("smiles,y\nCCO,1\nCC,1\n", ["--task-type", "classification"], "only one class"),
        ("smiles,y\nCCO,1\nCC,high\n", [], "non-numeric label 'high'"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, content, extra, message):
    # in-process (CliRunner): the entry point itself is exercised by the tests above
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    result = CliRunner().invoke(app, ["train", "--data", str(csv), "--output", str(tmp_path / "o"), *extra, *TINY])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "bad.csv" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option, value, listed", [("--encoder", "transformer", "sage"),
                                                    ("--featurizer", "fancy", "rich"),
                                                    ("--split", "temporal", "balanced_scaffold"),
                                                    ("--dataset", "pcba", "toxcast")])
def test_unknown_choice_lists_the_options(tmp_path, option, value, listed):
    args = ["train", "--dataset", "bbbp", option, value, "--output", str(tmp_path), *TINY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and value in result.stderr and listed in result.stderr


@pytest.mark.slow
def test_demo_runs(tmp_path):
    proc = run("demo", "--output", str(tmp_path / "demo"), "--epochs", "3")
    assert "test ROC-AUC" in proc.stdout and "caffeine" in proc.stdout


def _tiny_csv(tmp_path, labels=None):
    smiles = ["CCO", "CCN", "c1ccccc1", "CCCC", "CC(=O)O", "c1ccncc1", "CCOC", "CCCl",
              "CC(C)O", "c1ccc(O)cc1", "CN", "CCC(=O)N", "OCCO", "c1ccsc1", "CC#N", "CCBr"]
    labels = labels or [i % 2 for i in range(len(smiles))]
    csv = tmp_path / "tiny.csv"
    csv.write_text("smiles,y\n" + "".join(f"{s},{y}\n" for s, y in zip(smiles, labels, strict=True)))
    return csv


def test_train_config_values_are_not_overridden_by_option_defaults(tmp_path):
    csv = _tiny_csv(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"dataset": None, "csv": str(csv), "split": "random", "target_columns": ["y"]},
        "model": {"hidden_dim": 16, "num_layers": 2, "dropout": 0.1},
        "train": {"epochs": 1, "batch_size": 8, "seed": 3}}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--epochs", "2",
                                      "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["split"] == "random" and saved["data"]["csv"] == str(csv)
    assert saved["model"]["hidden_dim"] == 16 and saved["model"]["num_layers"] == 2
    assert saved["train"]["batch_size"] == 8 and saved["train"]["seed"] == 3
    assert saved["train"]["epochs"] == 2  # an option given on the command line still wins


def test_evaluate_on_a_csv_skips_a_one_class_task_instead_of_refusing(tmp_path):
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import build_model, save_checkpoint

    small = ModelConfig(hidden_dim=16, num_layers=2)
    feat = get_featurizer("basic")
    ckpt = tmp_path / "m" / "model.pt"
    save_checkpoint(ckpt, build_model(small, feat, 1), feat, small, ["y"], "classification")
    csv = _tiny_csv(tmp_path, labels=[0] * 16)  # an external test set with no active
    result = CliRunner().invoke(app, ["evaluate", str(ckpt), "--data", str(csv),
                                      "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "one class" in metrics["metrics"]["skipped"]["y"]
    bad = CliRunner().invoke(app, ["evaluate", str(ckpt), "--data", str(csv), "--part", "tset"])
    assert bad.exit_code == 2 and "--part must be" in bad.stderr


def test_csv_options_are_applied_or_refused_never_ignored(tmp_path, data_dir):
    """--target-columns picks tasks of a benchmark or of a --config file's CSV; --smiles-column
    and --task-type without a CSV are refused; evaluate's CSV options need --data."""
    runner = CliRunner()
    bench = tmp_path / "tox"
    result = runner.invoke(app, ["train", "--dataset", "tox21", "--target-columns", "NR-AR,SR-MMP",
                                 "--split", "random", "--epochs", "1", "--output", str(bench), *TINY[:4], *TINY[6:]])
    assert result.exit_code == 0, result.output
    metrics = json.loads((bench / "metrics.json").read_text())
    assert set(metrics["test"]["per_task"]) | set(metrics["test"].get("skipped", {})) == {"NR-AR", "SR-MMP"}
    # its test part again, from the benchmark named: the molecules with one of its two tasks
    ev = runner.invoke(app, ["evaluate", str(bench / "model.pt"), "--dataset", "tox21", "--part", "test",
                             "--output", str(tmp_path / "ev_bench")])
    assert ev.exit_code == 0, ev.output
    scored = json.loads((tmp_path / "ev_bench" / "metrics.json").read_text())["metrics"]["mean"]
    assert scored["roc_auc"] == pytest.approx(metrics["test"]["mean"]["roc_auc"], abs=1e-9)
    refused = runner.invoke(app, ["train", "--dataset", "bbbp", "--smiles-column", "SMILES",
                                  "--output", str(tmp_path / "x"), *TINY])
    assert refused.exit_code == 2 and "--smiles-column describe" in refused.output

    csv = tmp_path / "mine.csv"
    pd.read_csv(data_dir / "tox21.csv").iloc[:300].to_csv(csv, index=False)
    first = tmp_path / "first"
    assert runner.invoke(app, ["train", "--data", str(csv), "--target-columns", "NR-AR", "--split", "random",
                               "--output", str(first), *TINY]).exit_code == 0
    second = tmp_path / "second"
    result = runner.invoke(app, ["train", "--config", str(first / "config.yaml"), "--target-columns", "SR-MMP",
                                 "--output", str(second), *TINY])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((second / "config.yaml").read_text())["data"]["target_columns"] == ["SR-MMP"]
    ev = runner.invoke(app, ["evaluate", str(first / "model.pt"), "--target-columns", "nope",
                             "--output", str(tmp_path / "ev")])
    assert ev.exit_code == 2 and "--target-columns describe a CSV given with --data" in ev.output


def test_bad_files_and_configs_get_one_line_errors(tmp_path, data_dir):
    """A directory or a non-database where a file belongs, a bad YAML config, a config naming
    only a CSV, an empty study and a pretrained encoder used for prediction: each one clear
    line and exit 2."""
    from moladapt.pretrain.trainer import save_pretrained_encoder

    runner = CliRunner()

    def error(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "Traceback" not in result.output
        return result.output

    csv = tmp_path / "mine.csv"
    pd.read_csv(data_dir / "BBBP.csv").iloc[:120][["smiles", "p_np"]].to_csv(csv, index=False)
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    assert "taken.txt" in error("train", "--data", csv, "--output", taken, *TINY)
    notdb = tmp_path / "results.db"
    notdb.write_text("smiles,y\n")
    assert "not a study database" in error("report", notdb, "--output", tmp_path / "rep")
    assert notdb.read_text() == "smiles,y\n"  # a reader never writes into the file
    assert "is a directory" in error("study", "status", tmp_path)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data: {dataset: bbbp\nmodel: [")
    assert "bad.yaml: not valid YAML at line" in error("train", "--config", bad_yaml, *TINY)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("model: {hidden_dim: abc}\n")
    assert "model.hidden_dim must be an integer, got 'abc'" in error("train", "--config", wrong, *TINY)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "the study file is empty" in error("study", "plan", empty)

    only_csv = tmp_path / "only_csv.yaml"
    only_csv.write_text(f"data: {{csv: {csv}, target_columns: [p_np], split: random}}\n")
    out = tmp_path / "csv_run"
    result = runner.invoke(app, ["train", "--config", str(only_csv), "--output", str(out), *TINY])
    assert result.exit_code == 0, result.output

    from moladapt.data.featurize import get_featurizer
    from moladapt.training import load_checkpoint

    encoder_ckpt = tmp_path / "encoder.pt"
    save_pretrained_encoder(encoder_ckpt, load_checkpoint(out / "model.pt").model.encoder, get_featurizer("basic"))
    assert "pretrained encoder with no trained prediction head" in error(
        "predict", encoder_ckpt, "-i", csv, "-o", tmp_path / "p.csv")


def test_evaluate_lists_the_invalid_smiles_of_its_data(tmp_path, data_dir):
    frame = pd.read_csv(data_dir / "BBBP.csv").iloc[:120][["smiles", "p_np"]]
    csv = tmp_path / "mine.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["train", "--data", str(csv), "--split", "random", "--output", str(out),
                                    *TINY]).exit_code == 0
    frame.loc[4, "smiles"] = "not a molecule"
    frame.to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["evaluate", str(out / "model.pt"), "--data", str(csv),
                                      "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "line 6: 'not a molecule'" in result.output
    listed = json.loads((tmp_path / "ev" / "metrics.json").read_text())["invalid_smiles"]
    assert {"line": 6, "smiles": "not a molecule"} in listed


def test_evaluate_scores_held_out_molecules_of_unchanged_data_only(tmp_path, data_dir):
    """No part given: the run's test part; a changed file: its parts refused; the evaluation's
    own config.yaml; a training run's folder is not overwritten; the run's config names the
    columns and task type it read off the file."""
    frame = pd.read_csv(data_dir / "BBBP.csv").iloc[:150][["smiles", "p_np"]]
    csv = tmp_path / "mine.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--data", str(csv), "--split", "random", "--output", str(out),
                               *TINY]).exit_code == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert resolved["target_columns"] == ["p_np"] and resolved["task_type"] == "classification"
    trained = json.loads((out / "metrics.json").read_text())

    ev = tmp_path / "ev"
    result = runner.invoke(app, ["evaluate", str(out / "model.pt"), "--output", str(ev)])
    assert result.exit_code == 0, result.output
    scored = json.loads((ev / "metrics.json").read_text())
    assert scored["part"] == "test"
    assert scored["metrics"]["mean"]["roc_auc"] == pytest.approx(trained["test"]["mean"]["roc_auc"], abs=1e-6)
    described = yaml.safe_load((ev / "config.yaml").read_text())
    assert described["part"] == "test" and described["checkpoint"] == str((out / "model.pt").resolve())
    assert described["model_run_config"]["data"]["csv"] == str(csv.resolve())

    whole = runner.invoke(app, ["evaluate", str(out / "model.pt"), "--data", str(csv), "--output", str(ev)])
    assert whole.exit_code == 0 and "training molecules included" in whole.output
    assert yaml.safe_load((ev / "config.yaml").read_text())["data"]["csv"] == str(csv.resolve())

    refused = runner.invoke(app, ["evaluate", str(out / "model.pt"), "--output", str(out)])
    assert refused.exit_code == 2 and "holds a trained model" in refused.output
    both = runner.invoke(app, ["evaluate", str(out / "model.pt"), "--data", str(csv), "--dataset", "bbbp"])
    assert both.exit_code == 2 and "not both" in both.output
    both = runner.invoke(app, ["train", "--data", str(csv), "--dataset", "bbbp", "--output", str(ev), *TINY])
    assert both.exit_code == 2 and "not both" in both.output

    pd.concat([pd.read_csv(data_dir / "BBBP.csv").iloc[200:260][["smiles", "p_np"]], frame]).to_csv(csv, index=False)
    changed = runner.invoke(app, ["evaluate", str(out / "model.pt"), "--part", "test", "--output", str(ev)])
    assert changed.exit_code == 2 and "has changed since the model was trained" in changed.output


def test_predict_refuses_to_overwrite_its_input_and_names_a_directory_output(tmp_path):
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import build_model, save_checkpoint

    small = ModelConfig(hidden_dim=16, num_layers=2)
    feat = get_featurizer("basic")
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, build_model(small, feat, 1), feat, small, ["y"], "classification")
    csv = tmp_path / "in.csv"
    csv.write_text("smiles\nCCO\nc1ccccc1\n")
    same = CliRunner().invoke(app, ["predict", str(ckpt), "-i", str(csv), "-o", str(csv)])
    assert same.exit_code == 2 and "is the input file" in same.output
    assert csv.read_text() == "smiles\nCCO\nc1ccccc1\n"
    folder = tmp_path / "adir"
    folder.mkdir()
    into_dir = CliRunner().invoke(app, ["predict", str(ckpt), "-i", str(csv), "-o", str(folder)])
    assert into_dir.exit_code == 2 and f"{folder}: is a directory" in into_dir.output


def test_training_warns_when_a_random_split_puts_copies_of_a_molecule_in_train_and_test(tmp_path, data_dir):
    frame = pd.read_csv(data_dir / "BBBP.csv").iloc[:80][["smiles", "p_np"]]
    csv = tmp_path / "twice.csv"
    pd.concat([frame, frame]).to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["train", "--data", str(csv), "--split", "random",
                                      "--output", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output
    assert "molecules also occur in the training part (duplicated molecules, e.g. line" in result.output
    # scaffold splits are not checked (they keep copies together): even a split that shares
    # molecules gets no warning under that name
    from moladapt.data.sources import load_csv
    from moladapt.data.splits import Split
    from moladapt.experiment import duplicate_warning
    from moladapt.training import prepare

    prepared = prepare(load_csv(csv), "basic")
    n = len(prepared.graphs)
    sharing = Split(train=np.arange(0, n // 2), valid=np.arange(n // 2, n // 2 + 5), test=np.arange(n // 2 + 5, n))
    assert duplicate_warning(prepared, sharing, "random") is not None
    assert duplicate_warning(prepared, sharing, "scaffold") is None


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "bbbp", "--init", "no_such.pt"], "--init no_such.pt: no such checkpoint file"),
    (["few-shot", "--method", "protonet", "--checkpoint", "no_such.pt"], "no_such.pt: no such checkpoint file"),
    (["few-shot", "--method", "rf-ecfp", "--support", "1,16"], "support sizes must be integers >= 2"),
    (["few-shot", "--method", "rf-ecfp", "--draws", "0"], "draws must be >= 1"),
    (["pretrain", "--precision", "fp16"], "unknown precision 'fp16'"),
    (["pretrain", "--init", "no_such.pt"], "--init no_such.pt: no such checkpoint file"),
    (["transfer", "--target", "caco2_wang", "--hypergradient", "foo"], "unknown hypergradient 'foo'"),
])
def test_bad_options_are_refused_before_any_data_is_read(tmp_path, monkeypatch, args, message):
    # no data directory at all: a check that came after loading would fail on the data instead
    monkeypatch.setenv("MOLADAPT_DATA_DIR", str(tmp_path / "no_data"))
    monkeypatch.setenv("MOLADAPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output, result.output


def test_predict_on_a_semicolon_file_says_so(tmp_path):
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import build_model, save_checkpoint

    small = ModelConfig(hidden_dim=16, num_layers=2)
    feat = get_featurizer("basic")
    save_checkpoint(tmp_path / "model.pt", build_model(small, feat, 1), feat, small, ["y"], "classification")
    csv = tmp_path / "semi.csv"
    csv.write_text("smiles;p_np\nCCO;1\nCC;0\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "model.pt"), "-i", str(csv), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "separated by ';'" in result.output, result.output


def test_predict_and_evaluate_find_the_smiles_column_the_model_was_trained_with(tmp_path):
    """Without --smiles-column: the training CSV's SMILES column, else 'smiles' in any case; none
    or two candidates in other cases: an error naming the file, its columns and the option."""
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.data.sources import find_smiles_column
    from moladapt.experiment import smiles_column_candidates
    from moladapt.training import build_model, save_checkpoint

    trained_on = {"run_config": {"data": {"csv": "assay.csv", "smiles_column": "Canonical_Smiles"}}}
    preferred = smiles_column_candidates(trained_on)
    assert preferred == ["Canonical_Smiles", "smiles"] and smiles_column_candidates({}) == ["smiles"]
    assert find_smiles_column("f.csv", ["id", "Canonical_Smiles", "smiles"], None, preferred) == "Canonical_Smiles"
    assert find_smiles_column("f.csv", ["id", "smiles"], None, preferred) == "smiles"
    assert find_smiles_column("f.csv", ["id", "SMILES"]) == "SMILES"
    assert find_smiles_column("f.csv", ["id", "canonical_smiles"], None, preferred) == "canonical_smiles"
    with pytest.raises(Exception, match=r"f.csv: no SMILES column 'smiles' in any case \(\['Smiles', 'SMILES'\] all match\)"):
        find_smiles_column("f.csv", ["Smiles", "SMILES"])
    with pytest.raises(Exception, match="no SMILES column 'smiles'"):  # as given: no guessing
        find_smiles_column("f.csv", ["SMILES"], "smiles")

    small = ModelConfig(hidden_dim=16, num_layers=2)
    feat = get_featurizer("basic")
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, build_model(small, feat, 1), feat, small, ["y"], "classification",
                    extra=trained_on)
    csv = tmp_path / "in.csv"
    csv.write_text("Canonical_Smiles,y\nCCO,1\nc1ccccc1,0\nCCN,1\nCC(=O)O,0\n")
    out = tmp_path / "o.csv"
    result = CliRunner().invoke(app, ["predict", str(ckpt), "-i", str(csv), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["valid_smiles"].all()
    result = CliRunner().invoke(app, ["evaluate", str(ckpt), "--data", str(csv), "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "ev" / "config.yaml").read_text())["data"]["smiles_column"] == "Canonical_Smiles"
    tiny = _tiny_csv(tmp_path)  # trained on 'SMILES' without --smiles-column: the config says which
    tiny.write_text(tiny.read_text().replace("smiles,y", "SMILES,y", 1))
    result = CliRunner().invoke(app, ["train", "--data", str(tiny), "--split", "random", "--output",
                                      str(tmp_path / "run"), "--hidden-dim", "16", "--num-layers", "2",
                                      "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["smiles_column"] == "SMILES"
    bare = tmp_path / "bare.csv"
    bare.write_text("id,y\n1,1\n")
    result = CliRunner().invoke(app, ["predict", str(ckpt), "-i", str(bare), "-o", str(out)])
    assert result.exit_code == 2 and "name it with --smiles-column" in result.output, result.output


def test_evaluate_reads_label_columns_by_task_name_or_in_task_order(tmp_path):
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.experiment import label_columns_for
    from moladapt.training import build_model, save_checkpoint

    assert label_columns_for(["a", "b"], None) == (["a", "b"], ["a", "b"])
    assert label_columns_for(["a", "b"], ("b", "a")) == (["a", "b"], ["a", "b"])  # by name, model order
    assert label_columns_for(["a", "b"], ("x", "y")) == (["x", "y"], ["a", "b"])
    for given, message in ((("a", "y"), "mix the model's task names"), (("x",), "1 label column")):
        with pytest.raises(Exception, match=message):
            label_columns_for(["a", "b"], given)

    small = ModelConfig(hidden_dim=16, num_layers=2)
    feat = get_featurizer("basic")
    save_checkpoint(tmp_path / "model.pt", build_model(small, feat, 1), feat, small, ["p_np"], "classification")
    csv = tmp_path / "renamed.csv"
    csv.write_text("smiles,label\nCCO,1\nCC,0\nCCN,1\nc1ccccc1,0\n")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "model.pt"), "--data", str(csv),
                                      "--target-columns", "label", "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert "p_np" in json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["per_task"]
    assert yaml.safe_load((tmp_path / "ev" / "config.yaml").read_text())["data"]["label_columns"] == {"p_np": "label"}


def test_evaluate_scores_the_tasks_a_file_holds_and_reports_the_others_as_not_scored(tmp_path):
    from moladapt.config import ModelConfig
    from moladapt.data.featurize import get_featurizer
    from moladapt.training import build_model, save_checkpoint

    small = ModelConfig(hidden_dim=16, num_layers=2)
    feat = get_featurizer("basic")
    save_checkpoint(tmp_path / "model.pt", build_model(small, feat, 2), feat, small, ["logS", "logP"],
                    "regression", target_mean=np.zeros(2), target_std=np.ones(2))
    csv = tmp_path / "only_logp.csv"
    csv.write_text("smiles,logP\nCCO,-0.3\nCC,1.1\nCCN,-0.1\nc1ccccc1,2.1\n")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "model.pt"), "--data", str(csv),
                                      "--target-columns", "logP", "--output", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert metrics["n_tasks_scored"] == 1 and metrics["per_task"]["logP"]["n"] == 4
    assert "not in" in metrics["skipped"]["logS"]
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "model.pt"), "--data", str(csv),
                                      "--target-columns", "logD", "--output", str(tmp_path / "ev2")])
    assert result.exit_code != 0 and "logD" in result.output, result.output


def test_encoder_and_pooling_help_list_every_choice():
    from moladapt.cli.common import ENCODER_CHOICES, POOLING_CHOICES
    from moladapt.models.encoders import ENCODERS, POOLINGS

    assert sorted(ENCODER_CHOICES) == ENCODERS.names()
    assert POOLING_CHOICES == POOLINGS
