"""`moladapt auxiliary` through typer's CliRunner (a tiny app wrapping the command)."""

from __future__ import annotations

import json

import pandas as pd
import torch
import typer
from typer.testing import CliRunner

from moladapt.cli.auxiliary import auxiliary_command

torch.set_num_threads(1)

app = typer.Typer()
app.command("auxiliary")(auxiliary_command)
app.command("noop")(lambda: None)  # two commands: the name "auxiliary" is needed on the line

TINY = ["--hidden-dim", "32", "--num-layers", "2", "--epochs", "1", "--batch-size", "128",
        "--threads", "1", "--split", "random"]


def test_auxiliary_cli_on_a_csv(tmp_path, data_dir):
    csv = tmp_path / "mine.csv"
    pd.read_csv(data_dir / "BBBP.csv").iloc[:300][["smiles", "p_np"]].to_csv(csv, index=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["auxiliary", "--data", str(csv), "--aux",
                                      "attrmask,edge_prediction", "--combiner", "gcs",
                                      "-O", "attrmask.mask_rate=0.3",
                                      "--output", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "attribute_masking: mean cosine to the target" in result.output
    assert "test:" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == "gcs" and set(metrics["gradient_log"]["tasks"]) == {
        "attribute_masking", "edge_prediction"}
    assert (out / "model.pt").exists()
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["aux"]["objective_options"] == {"attribute_masking": {"mask_rate": 0.3}}


def test_auxiliary_cli_reports_bad_input(tmp_path, data_dir):
    runner = CliRunner()
    bad = runner.invoke(app, ["auxiliary", "--dataset", "bbbp", "--combiner", "magic",
                              "--output", str(tmp_path / "x"), *TINY])
    assert bad.exit_code == 2 and "unknown gradient combiner 'magic'" in bad.output
    sources = runner.invoke(app, ["auxiliary", "--dataset", "bbbp", "--sources", "all",
                                  "--output", str(tmp_path / "y"), *TINY])
    assert sources.exit_code == 2 and "--bilevel" in sources.output
    option = runner.invoke(app, ["auxiliary", "--dataset", "bbbp", "--aux", "attrmask",
                                 "-O", "graphcl.temperature=0.2", "--output", str(tmp_path / "z"), *TINY])
    assert option.exit_code == 2 and "'graphcl' is not among the objectives in use" in option.output
    loop = runner.invoke(app, ["auxiliary", "--dataset", "bbbp", "--outer-lr", "0.5",
                               "--output", str(tmp_path / "w"), *TINY])
    assert loop.exit_code == 2 and "--outer-lr set the bi-level loop; add --bilevel" in loop.output


def test_auxiliary_cli_starts_from_the_bundled_encoder(tmp_path):
    """The README's `--init bundled` resolves to the shipped encoder, and model.pt records it."""
    from moladapt.bundled_models import bundled_dir, encoder_path, sha256_file
    from moladapt.provenance import describe_checkpoint

    csv = tmp_path / "mine.csv"
    pd.read_csv(bundled_dir() / "BBBP.csv").iloc[:64][["smiles", "p_np"]].to_csv(csv, index=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["auxiliary", "--data", str(csv), "--aux", "attrmask", "--init", "bundled",
                                      "--combiner", "sum", "--output", str(out), "--epochs", "1",
                                      "--batch-size", "64", "--threads", "1", "--split", "random"])
    assert result.exit_code == 0, result.output
    (start,) = describe_checkpoint(out / "model.pt")["lineage"]
    assert start["sha256"] == sha256_file(encoder_path()) and start["bundled"]["name"] == "attribute_masking"


def test_auxiliary_cli_warns_when_the_encoder_collapses(tmp_path, monkeypatch):
    import moladapt.pretrain.trainer as aux
    from moladapt.bundled_models import bundled_dir

    monkeypatch.setattr(aux, "COLLAPSE_SPREAD", float("inf"))  # every spread counts as collapsed
    csv = tmp_path / "mine.csv"
    pd.read_csv(bundled_dir() / "BBBP.csv").iloc[:64][["smiles", "p_np"]].to_csv(csv, index=False)
    result = CliRunner().invoke(app, ["auxiliary", "--data", str(csv), "--aux", "attrmask", "--combiner", "sum",
                                      "--output", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output
    assert "atom-embedding spread" in result.output
    assert "WARNING: the encoder collapsed at epoch 0" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["collapsed_epoch"] == 0 and len(metrics["embedding_spread"]) == 2


def test_adapt_method_sets_the_strategy(tmp_path, data_dir):
    """`moladapt adapt --method blo+rcgrad` is bi-level weights with RCGrad in the inner loop;
    `--method finetune` has no auxiliary task; a contradicting flag is refused."""
    from moladapt.cli.main import app as main_app

    csv = tmp_path / "mine.csv"
    pd.read_csv(data_dir / "BBBP.csv").iloc[:200][["smiles", "p_np"]].to_csv(csv, index=False)
    runner = CliRunner()
    out = tmp_path / "blo"
    result = runner.invoke(main_app, ["adapt", "--method", "blo+rcgrad", "--data", str(csv), "--aux", "attrmask",
                                      "--inner-steps", "2", "--output", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "learned weight attribute_masking" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == "blo+rcgrad"
    result = runner.invoke(main_app, ["adapt", "--method", "finetune", "--data", str(csv),
                                      "--output", str(tmp_path / "ft"), *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["label"] == "finetune"
    clash = runner.invoke(main_app, ["adapt", "--method", "finetune", "--aux", "attrmask", "--data", str(csv),
                                     "--output", str(tmp_path / "x"), *TINY])
    assert clash.exit_code == 2 and "--method finetune sets aux_objectives" in clash.output
    idle = runner.invoke(main_app, ["adapt", "--method", "finetune", "--combiner", "pcgrad", "--data", str(csv),
                                    "--output", str(tmp_path / "z"), *TINY])
    assert idle.exit_code == 2 and "this run has none" in idle.output, idle.output
    shown = runner.invoke(main_app, ["inspect", str(tmp_path / "ft" / "model.pt")])
    assert "fine-tuning on the target alone" in shown.output and "combiner" not in shown.output, shown.output
    unknown = runner.invoke(main_app, ["adapt", "--method", "magic", "--data", str(csv),
                                       "--output", str(tmp_path / "y"), *TINY])
    assert unknown.exit_code == 2 and "unknown adaptation method 'magic'" in unknown.output


def test_bilevel_combiner_none_is_plain_blo(tmp_path, data_dir):
    """`--bilevel --combiner none` is BLO with the plain weighted sum, not the default RCGrad."""
    csv = tmp_path / "mine.csv"
    pd.read_csv(data_dir / "BBBP.csv").iloc[:200][["smiles", "p_np"]].to_csv(csv, index=False)
    out = tmp_path / "blo"
    result = CliRunner().invoke(app, ["auxiliary", "--bilevel", "--combiner", "none", "--data", str(csv),
                                      "--aux", "attrmask", "--inner-steps", "2", "--output", str(out), *TINY])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == "blo"
